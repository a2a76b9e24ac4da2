package main

// Service configurations: the one place each service's Config is built from
// its settings, used by the service commands and by `stoker up` alike. The
// defaults are the service packages' own.

import (
	"flag"
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
// tokens (nil: none).
func newRegistrationTokens(l liveness, tokens registration.Tokens) newService {
	return func(nc *nats.Conn, id string, log zerolog.Logger) (service, error) {
		return registration.New(registration.Config{NC: nc, ID: id, Log: log,
			HeartbeatInterval: l.heartbeat, WorkerTimeout: l.workerTimeout, Tokens: tokens})
	}
}

func newHeartbeat(l liveness) newService {
	return func(nc *nats.Conn, id string, log zerolog.Logger) (service, error) {
		return heartbeat.New(heartbeat.Config{NC: nc, ID: id, Log: log,
			WorkerTimeout: l.workerTimeout, HeartbeatInterval: l.heartbeat})
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
	consolidate                           bool
	maxRetries, missedBeats               int
	renewInterval, beatInterval, launchTO time.Duration
	// appCreds mints each launch's app credential (nil: none, no auth).
	appCreds func(appID string) ([]byte, error)
}

func newScheduler(s schedulerSettings) newService {
	return func(nc *nats.Conn, id string, log zerolog.Logger) (service, error) {
		return scheduler.New(scheduler.Config{NC: nc, ID: id, Log: log,
			Consolidate: s.consolidate, MaxExecutorRetries: s.maxRetries,
			RenewInterval: s.renewInterval, BeatInterval: s.beatInterval, MissedBeats: s.missedBeats,
			LaunchTimeout: s.launchTO, AppCreds: s.appCreds})
	}
}

// agentSettings are one agent's flags.
type agentSettings struct {
	natsURL, id, host, workDir string
	cores                      int
	memoryMB                   int64
	heartbeat, killGrace       time.Duration
	// tlsCA is told to children; secure: commands only from scheduler
	// and recovery inboxes (set whenever the agent has a credential).
	tlsCA  string
	secure bool
}

// bindKillGrace declares --kill-grace.
func bindKillGrace(fs *flag.FlagSet) *time.Duration {
	return fs.Duration("kill-grace", agent.DefaultKillGrace, "wait between SIGTERM and SIGKILL when killing a child")
}

func newAgent(nc *nats.Conn, log zerolog.Logger, a agentSettings) (*agent.Service, error) {
	cfg := agent.Config{NC: nc, ID: a.id, Log: log, NATSURL: a.natsURL, WorkerID: a.id, Host: a.host,
		Cores: a.cores, MemoryMB: a.memoryMB, WorkDir: a.workDir, HeartbeatInterval: a.heartbeat, KillGrace: a.killGrace,
		TLSCA: a.tlsCA}
	if a.secure {
		cfg.CommandReplyPrefixes = auth.CommandReplyPrefixes
	}
	return agent.New(cfg)
}
