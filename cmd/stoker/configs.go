package main

// Service configurations: the one place each service's Config is built from
// its settings, used by the service commands and by `stoker up` alike. The
// defaults are the service packages' own.

import (
	"flag"
	"github.com/stoker/stoker/schemas"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/services/agent"
	"github.com/stoker/stoker/services/heartbeat"
	"github.com/stoker/stoker/services/recovery"
	"github.com/stoker/stoker/services/registration"
	"github.com/stoker/stoker/services/scheduler"
	"github.com/stoker/stoker/services/svc"
)

// newService builds a service on its own connection.
type newService func(nc *nats.Conn, id string, log zerolog.Logger) (service, error)

// liveness is the heartbeat interval and worker timeout, shared by
// registration, heartbeat and the agents. Zero: the defaults.
type liveness struct {
	heartbeat, workerTimeout time.Duration
}

// bindLiveness declares --heartbeat-interval and --worker-timeout.
func bindLiveness(fs *flag.FlagSet, hbUsage, wtUsage string) (hb, wt *time.Duration) {
	return fs.Duration("heartbeat-interval", svc.DefaultHeartbeatInterval, hbUsage),
		fs.Duration("worker-timeout", svc.DefaultWorkerTimeout, wtUsage)
}

func newRegistration(l liveness) newService { return newRegistrationTokens(l, nil) }

// newRegistrationTokens is a registration that serves join tokens with
// tokens (nil: none), keeping everything (no retention).
func newRegistrationTokens(l liveness, tokens registration.Tokens) newService {
	return newRegistrationRetaining(l, tokens, registration.Retention{})
}

// newRegistrationRetaining is newRegistrationTokens with retention r.
func newRegistrationRetaining(l liveness, tokens registration.Tokens, r registration.Retention) newService {
	return func(nc *nats.Conn, id string, log zerolog.Logger) (service, error) {
		return registration.New(registration.Config{NC: nc, ID: id, Log: log,
			HeartbeatInterval: l.heartbeat, WorkerTimeout: l.workerTimeout, Tokens: tokens, Retention: r})
	}
}

// retentionFlags are the retention settings (Spark's names in the usage).
type retentionFlags struct {
	apps, drivers                    *int
	deadTTL, interval, artifactGrace *time.Duration
}

// bindRetention declares --retained-apps, --retained-drivers,
// --dead-worker-ttl, --retention-interval and --artifact-grace.
func bindRetention(fs *flag.FlagSet) retentionFlags {
	return retentionFlags{
		apps: fs.Int("retained-apps", registration.DefaultRetainedApps,
			"ended applications kept in the lists and KV, newest first (spark.deploy.retainedApplications); older ones and their executors are deleted, their events stay; 0 keeps all"),
		drivers: fs.Int("retained-drivers", registration.DefaultRetainedDrivers,
			"ended drivers kept (spark.deploy.retainedDrivers); 0 keeps all"),
		deadTTL: fs.Duration("dead-worker-ttl", registration.DefaultDeadWorkerTTL,
			"a DEAD or DECOMMISSIONED worker with nothing placed on it is deleted after this (Spark: spark.deploy.deadWorkerPersistence × worker timeout); 0 keeps them"),
		interval: fs.Duration("retention-interval", registration.DefaultRetentionInterval,
			"how often registration applies the retention bounds"),
		artifactGrace: fs.Duration("artifact-grace", registration.DefaultArtifactGrace,
			"an artifact no stored app or driver record names is deleted once it was uploaded (or last reused) longer ago than this, so artifacts go with their apps' retention; 0 keeps every artifact"),
	}
}

// retention checks the flags.
func (f retentionFlags) retention() (registration.Retention, error) {
	if *f.apps < 0 || *f.drivers < 0 || *f.deadTTL < 0 || *f.artifactGrace < 0 {
		return registration.Retention{}, usagef("--retained-apps, --retained-drivers, --dead-worker-ttl and --artifact-grace must be >= 0 (0 keeps all)")
	}
	if *f.interval <= 0 {
		return registration.Retention{}, usagef("--retention-interval must be > 0, got %s", *f.interval)
	}
	return registration.Retention{RetainedApps: *f.apps, RetainedDrivers: *f.drivers, DeadWorkerTTL: *f.deadTTL, Interval: *f.interval,
		ArtifactGrace: *f.artifactGrace}, nil
}

// newHeartbeat is a heartbeat service; grace 0 is the default
// disconnect grace, beatsOnly ignores the bus's connection events.
func newHeartbeat(l liveness, grace time.Duration, beatsOnly bool) newService {
	return func(nc *nats.Conn, id string, log zerolog.Logger) (service, error) {
		return heartbeat.New(heartbeat.Config{NC: nc, ID: id, Log: log,
			WorkerTimeout: l.workerTimeout, HeartbeatInterval: l.heartbeat, DisconnectGrace: grace, BeatsOnly: beatsOnly})
	}
}

// bindRecoveryTimeout declares --recovery-timeout.
func bindRecoveryTimeout(fs *flag.FlagSet, usage string) *time.Duration {
	return fs.Duration("recovery-timeout", recovery.DefaultRecoveryTimeout, usage)
}

func newRecovery(timeout time.Duration) newService {
	return func(nc *nats.Conn, id string, log zerolog.Logger) (service, error) {
		return recovery.New(recovery.Config{NC: nc, ID: id, Log: log, RecoveryTimeout: timeout})
	}
}

// schedulerSettings are the scheduler's flags. Zero: the defaults.
type schedulerSettings struct {
	consolidate, beatsOnly                bool
	maxRetries, missedBeats, defaultCores int
	maxInFlight                           int
	flowTarget                            time.Duration
	workerSelection                       scheduler.WorkerSelection
	renewInterval, beatInterval, launchTO time.Duration
	// appCreds mints each launch's app credential (nil: none, no auth).
	appCreds func(appID string) ([]byte, error)
}

func newScheduler(s schedulerSettings) newService {
	return func(nc *nats.Conn, id string, log zerolog.Logger) (service, error) {
		return scheduler.New(scheduler.Config{NC: nc, ID: id, Log: log,
			Consolidate: s.consolidate, MaxExecutorRetries: s.maxRetries, DefaultCores: s.defaultCores,
			WorkerSelection: s.workerSelection,
			RenewInterval:   s.renewInterval, BeatInterval: s.beatInterval, MissedBeats: s.missedBeats,
			LaunchTimeout: s.launchTO, AppCreds: s.appCreds, BeatsOnly: s.beatsOnly, MaxInFlight: s.maxInFlight,
			FlowTarget: s.flowTarget})
	}
}

// agentSettings are one agent's flags.
type agentSettings struct {
	natsURL, id, host, workDir string
	cores                      int
	memoryMB                   int64
	heartbeat, killGrace       time.Duration
	// stopAfterDisconnect is agent.Config.StopAfterDisconnect (0: keep).
	stopAfterDisconnect time.Duration
	// tlsCA is told to children; secure: commands only from scheduler
	// and recovery inboxes (set whenever the agent has a credential).
	tlsCA  string
	secure bool
	// custom resources and labels offered (stoker agent --resource, --label)
	resources   schemas.Resources
	discovery   map[string]string
	noGPUDetect bool
	labels      schemas.Labels
	// enforceMemory and cgroupParent: agent.Config's EnforceMemory and CgroupParent.
	enforceMemory, cgroupParent string
	housekeeping
}

// housekeeping is an agent's worker cleanup and log rolling.
type housekeeping struct {
	cleanupInterval, appDataTTL time.Duration // cleanupInterval 0: off
	logMaxBytes                 int64         // 0: no rolling
	logMaxFiles                 int
}

// housekeepingFlags are the flags of housekeeping, shared by `stoker agent` and `stoker up`.
type housekeepingFlags struct {
	cleanup                     *bool
	cleanupInterval, appDataTTL *time.Duration
	logMaxSize                  *sizeFlag
	logMaxFiles                 *int
}

func bindHousekeeping(fs *flag.FlagSet) housekeepingFlags {
	return housekeepingFlags{
		cleanup: fs.Bool("cleanup", false,
			"remove the work dirs of finished apps and drivers after --app-data-ttl (spark.worker.cleanup.enabled)"),
		cleanupInterval: fs.Duration("cleanup-interval", agent.DefaultCleanupInterval,
			"how often cleanup looks (spark.worker.cleanup.interval)"),
		appDataTTL: fs.Duration("app-data-ttl", agent.DefaultAppDataTTL,
			"a finished app's work dir is removed once its newest file is this old (spark.worker.cleanup.appDataTtl)"),
		logMaxSize: sizeVar(fs, "log-max-size", 0,
			"roll each executor's and driver's stdout and stderr at this size, e.g. 128m (spark.executor.logs.rolling.maxSize; default: no rolling)"),
		logMaxFiles: fs.Int("log-max-files", 5,
			"rolled log files kept per stream with --log-max-size, stdout.1 the newest (spark.executor.logs.rolling.maxRetainedFiles)"),
	}
}

// settings checks the flags.
func (f housekeepingFlags) settings() (housekeeping, error) {
	var h housekeeping
	if *f.cleanup {
		if *f.cleanupInterval <= 0 || *f.appDataTTL <= 0 {
			return h, usagef("--cleanup-interval and --app-data-ttl must be > 0")
		}
		h.cleanupInterval, h.appDataTTL = *f.cleanupInterval, *f.appDataTTL
	}
	if *f.logMaxFiles < 0 {
		return h, usagef("--log-max-files must be >= 0, got %d", *f.logMaxFiles)
	}
	h.logMaxBytes, h.logMaxFiles = int64(*f.logMaxSize)<<20, *f.logMaxFiles
	return h, nil
}

// bindKillGrace declares --kill-grace.
func bindKillGrace(fs *flag.FlagSet) *time.Duration {
	return fs.Duration("kill-grace", agent.DefaultKillGrace, "wait between SIGTERM and SIGKILL when killing a child")
}

func newAgent(nc *nats.Conn, log zerolog.Logger, a agentSettings) (*agent.Service, error) {
	return agent.New(agentConfig(nc, log, a))
}

// agentConfig is the agent's Config from its settings.
func agentConfig(nc *nats.Conn, log zerolog.Logger, a agentSettings) agent.Config {
	cfg := agent.Config{NC: nc, ID: a.id, Log: log, NATSURL: a.natsURL, WorkerID: a.id, Host: a.host,
		Cores: a.cores, MemoryMB: a.memoryMB, WorkDir: a.workDir, HeartbeatInterval: a.heartbeat, KillGrace: a.killGrace,
		TLSCA: a.tlsCA, StopAfterDisconnect: a.stopAfterDisconnect,
		Resources: a.resources, ResourceDiscovery: a.discovery, NoGPUDetect: a.noGPUDetect, Labels: a.labels,
		EnforceMemory: a.enforceMemory, CgroupParent: a.cgroupParent,
		CleanupInterval: a.cleanupInterval, AppDataTTL: a.appDataTTL,
		LogMaxBytes: a.logMaxBytes, LogMaxFiles: a.logMaxFiles}
	if a.secure {
		cfg.CommandReplyPrefixes = auth.CommandReplyPrefixes
	}
	return cfg
}
