package main

// Service commands: each runs one part of the cluster until SIGINT/SIGTERM.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/agent"
	"github.com/stoker/stoker/services/scheduler"
	"github.com/stoker/stoker/services/svc"
)

// service is what every services/* package's *Service offers.
type service interface {
	Start(ctx context.Context) error
	Stop()
}

// startTimeout bounds a service's Start (bucket creation, subscriptions).
const startTimeout = 30 * time.Second

// startContext is the context a service's Start gets: not cancelled by the
// signal that later asks for an orderly stop, and bounded by startTimeout.
// Services keep nothing on it past Start.
func startContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), startTimeout)
}

// hostname is the machine's name, sanitized into an id.
func hostname() string {
	h, _ := os.Hostname()
	return schemas.SanitizeID(h)
}

// instanceID is a default service instance id: host plus a random suffix,
// so two instances on one machine never share an id.
func instanceID(kind string) string {
	id := hostname()
	if len(id) > schemas.MaxIDLen-len(kind)-8 {
		id = id[:schemas.MaxIDLen-len(kind)-8]
	}
	return schemas.SanitizeID(id + "-" + kind + "-" + schemas.NewInstance()[:6])
}

// commonServiceFlags are on every service command.
type commonServiceFlags struct {
	url          *natsFlags
	id, logLevel *string
	replicas     *deprecatedFlag
	// resolved by runService
	target natsTarget
}

func bindCommon(fs *flag.FlagSet) *commonServiceFlags {
	return &commonServiceFlags{
		url: natsFlag(fs),
		id:  fs.String("id", "", "instance id (default: <hostname>-<service>-<random>)"),
		replicas: deprecatedVar(fs, "replicas",
			"services no longer create the store; its owner (stoker bus, stoker up or stoker init) sets replicas"),
		logLevel: logLevelFlag(fs),
	}
}

// check validates the common flags and returns the instance id.
func (c *commonServiceFlags) check(kind string, args []string) (string, error) {
	if len(args) > 0 {
		return "", usagef("unexpected arguments %q", strings.Join(args, " "))
	}
	id := *c.id
	if id == "" {
		return instanceID(kind), nil
	}
	if err := schemas.ValidID(kind, id); err != nil {
		return "", usagef("--id: %v", err)
	}
	return id, nil
}

// runService connects, builds the service with mk, starts it and runs it
// until ctx is done; then stops it and drains the connection.
func runService(ctx context.Context, e *env, c *commonServiceFlags, kind string, args []string, mk newService) error {
	id, err := c.check(kind, args)
	if err != nil {
		return err
	}
	log, err := newLogger(e, *c.logLevel)
	if err != nil {
		return err
	}
	log = log.With().Str("service", kind).Logger()
	c.replicas.warn(log)
	c.target = c.url.target(auth.Role(kind))
	nc, err := c.target.connect(bus.ConnectOptions{Name: "stoker-" + kind + "-" + id, Retry: true, Log: &log})
	if err != nil {
		return err
	}
	defer nc.Close()
	// Build (and so validate) before waiting for the bus: a bad flag is
	// reported at once, not after the bus comes up.
	s, err := mk(nc, id, log)
	if err != nil {
		return usagef("%v", err)
	}
	if err := startWhenStore(ctx, nc, s, log); err != nil {
		return err
	}
	log.Info().Str("id", id).Str("nats", nc.ConnectedUrlRedacted()).Msg(kind + " running; Ctrl-C stops it")
	<-ctx.Done()
	log.Info().Msg("stopping")
	s.Stop()
	_ = nc.Drain()
	return nil
}

func init() {
	register(&command{
		name: "registration", group: "Services", summary: "run a registration instance (workers, drivers, apps API)",
		usage: "[--nats URL] [--id ID] [--heartbeat-interval 1s] [--worker-timeout 5s] [--retained-apps 200] [--retained-drivers 200] [--dead-worker-ttl 15m] [--artifact-grace 15m]",
		details: `Every registration instance applies the retention bounds; each deletion is
guarded by the revision it was judged at, so replicas never delete twice nor
delete a record that changed. Deleted records stay in the events history.`,
		examples: []string{"stoker registration --nats nats://n1:4222,nats://n2:4222", "stoker registration --retained-apps 50 --dead-worker-ttl 1h"},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			c := bindCommon(fs)
			hb, wt := bindLiveness(fs, "heartbeat interval told to agents and drivers",
				"silence after which a worker is DEAD (for validation and replies)")
			authDir := fs.String("auth-dir", "", "directory holding auth/role-agent.nk and role-join.nk, to serve join tokens (default: the one beside --creds)")
			ret := bindRetention(fs)
			return func(ctx context.Context, args []string) error {
				retention, err := ret.retention()
				if err != nil {
					return err
				}
				return runService(ctx, e, c, "registration", args, func(nc *nats.Conn, id string, log zerolog.Logger) (service, error) {
					dir := *authDir
					if dir == "" && c.target.Creds != "" {
						dir = filepath.Dir(filepath.Dir(c.target.Creds))
					}
					keys, err := loadKeysIfAny(dir)
					if err != nil {
						return nil, err
					}
					return newRegistrationRetaining(liveness{*hb, *wt}, tokenMinter(keys, c.target.CA), retention)(nc, id, log)
				})
			}
		},
	})
	register(&command{
		name: "heartbeat", group: "Services", summary: "run a heartbeat instance (marks silent workers DEAD)",
		usage: "[--nats URL] [--id ID] [--worker-timeout 5s] [--heartbeat-interval 1s] [--disconnect-grace 600ms] [--beats-only]",
		details: `When the bus reports an agent's connection closed (the server's DISCONNECT
event, forwarded to the STOKER account), its worker is DEAD unless it beats
again within --disconnect-grace; otherwise after --worker-timeout of silence.`,
		examples: []string{"stoker heartbeat --worker-timeout 10s"},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			c := bindCommon(fs)
			hb, wt := bindLiveness(fs, "heartbeat interval agents use (validates --worker-timeout)",
				"silence after which a worker is DEAD and an app's driver gone")
			grace := fs.Duration("disconnect-grace", 0,
				"after the bus reports an agent's connection closed, DEAD unless it beats within this (default 600ms, at most half --worker-timeout)")
			beatsOnly := fs.Bool("beats-only", false, "ignore the bus's connection-closed events: --worker-timeout alone")
			return func(ctx context.Context, args []string) error {
				if *grace < 0 {
					return usagef("--disconnect-grace must be >= 0, got %s", *grace)
				}
				return runService(ctx, e, c, "heartbeat", args, newHeartbeat(liveness{*hb, *wt}, *grace, *beatsOnly))
			}
		},
	})
	register(&command{
		name: "scheduler", group: "Services", summary: "run a scheduler instance (one active per cluster, by lease)",
		usage: "[--nats URL] [--id ID] [--spread-out=true] [--max-executor-retries 10] [--default-cores 0] [--renew-interval 1s] [--beat-interval 100ms] [--missed-beats 3] [--beats-only]",
		details: `The lease TTL is the stoker-leader bucket's, set by the store's owner
(stoker up, stoker bus or stoker init --lease-ttl); the scheduler reads it
and checks --renew-interval, --beat-interval and --missed-beats against it.`,
		examples: []string{"stoker scheduler --id sched-a", "stoker scheduler --spread-out=false   # consolidate executors"},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			c := bindCommon(fs)
			sc := bindSchedulerFlags(fs)
			leaseTTL := deprecatedVar(fs, "lease-ttl",
				"the lease TTL is the stoker-leader bucket's, set by the store's owner (stoker bus, stoker up or stoker init --lease-ttl)")
			authDir := fs.String("auth-dir", "", "directory holding auth/role-app.nk, to mint each launch's app credential (default: the one beside --creds)")
			return func(ctx context.Context, args []string) error {
				if err := sc.check(); err != nil {
					return err
				}
				return runService(ctx, e, c, "scheduler", args, func(nc *nats.Conn, id string, log zerolog.Logger) (service, error) {
					leaseTTL.warn(log)
					dir := *authDir
					if dir == "" && c.target.Creds != "" {
						dir = filepath.Dir(filepath.Dir(c.target.Creds))
					}
					keys, err := loadKeysIfAny(dir)
					if err != nil {
						return nil, err
					}
					if keys == nil && c.target.Creds != "" {
						log.Warn().Msg("no app signing key found (--auth-dir): launched executors and drivers get no credential")
					}
					return newScheduler(withAppCreds(sc.settings(), keys))(nc, id, log)
				})
			}
		},
	})
	register(&command{
		name: "recovery", group: "Services", summary: "run a recovery instance (reconciles state on each new scheduler epoch)",
		usage:    "[--nats URL] [--id ID] [--recovery-timeout 2s]",
		examples: []string{"stoker recovery --recovery-timeout 5s"},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			c := bindCommon(fs)
			rt := bindRecoveryTimeout(fs, "how long recovery waits for agents and drivers to answer (from the start of the asking), and the time of each of its marking and applying phases")
			return func(ctx context.Context, args []string) error {
				if *rt <= 0 {
					return usagef("--recovery-timeout must be > 0")
				}
				return runService(ctx, e, c, "recovery", args, newRecovery(*rt))
			}
		},
	})
	register(&command{
		name: "agent", group: "Services", summary: "run a worker agent (offers cores and memory, runs executors and drivers)",
		usage: "[--nats URL] [--id ID] [--cores N] [--memory 4g] [--work-dir DIR] [--heartbeat-interval 1s] [--resource gpu=0,1] [--label zone=a] [--cleanup [--app-data-ttl 168h]] [--log-max-size 128m [--log-max-files 5]] [--simulate N [--sim-run-time D] [--sim-fail-rate F] [--auth-dir DIR]]",
		details: `Defaults as Spark's worker: all cores, total memory minus 1 GiB. The default
id is the hostname plus a short suffix, kept in <work-dir>/worker-id so a
restart keeps it. One worker id is one live agent: an agent whose id is held by
another live agent exits with an error naming it (host, pid, since). On SIGTERM
or Ctrl-C the agent tells the cluster it is leaving (the worker is
DECOMMISSIONED at once) and stops its executors and drivers. With
--drain-grace D (Spark's spark.decommission.enabled), SIGTERM, SIGPWR or Ctrl-C
drain the worker first, as stoker drain --deadline D: its executors are
replaced on other workers, then stopped here, supervised drivers relaunched
elsewhere; the agent leaves once nothing runs or after D (a second signal
leaves at once). Give a container's stop timeout more than D
(docker stop -t, compose stop_grace_period).

Housekeeping as Spark's worker: --cleanup removes the work dirs of apps and
drivers the agent no longer runs once their newest file is older than
--app-data-ttl (only app-*/driver-* dirs; worker-id, LOCK and credentials
stay); --log-max-size rolls each child's stdout and stderr (stdout.1 the
newest rolled, --log-max-files kept; stoker logs reads the current file).

--simulate N runs N simulated agents in this process (load tests, stoker
bench): each is the real agent on its own NATS connection, worker id
<id>-00001 ... (default id sim-<hostname>), but starts no process: an
executor runs until killed, or exits after --sim-run-time, and a
--sim-fail-rate fraction fail with exit code 1. On a secured bus each joins
with --join-token (one credential per agent) or mints its credential from
the agent key in --auth-dir (stoker up's --data).

Custom resources (Spark 3's resource scheduling): --resource gpu=0,1,2,3 offers
four GPU addresses; --resource-discovery gpu=SCRIPT runs SCRIPT, which prints
Spark's {"name":"gpu","addresses":[...]}; without either, nvidia-smi on PATH is
asked for GPU indexes. An executor given addresses finds them in
STOKER_RESOURCE_<NAME> (and CUDA_VISIBLE_DEVICES for gpu). Labels (--label
zone=a,disk=ssd) are matched by apps' and drivers' --constraint.`,
		examples: []string{
			"stoker agent --nats nats://10.0.0.1:4222",
			"stoker agent --id gpu-1 --cores 8 --memory 30g --work-dir /var/lib/stoker/work",
			"stoker agent --cleanup --app-data-ttl 24h --log-max-size 64m --log-max-files 3",
			"stoker agent --simulate 1000 --cores 16 --memory 64g --auth-dir ./data --work-dir /tmp/sim",
			"stoker agent --resource gpu=0,1,2,3 --label zone=a,disk=ssd",
			"stoker agent --drain-grace 2m   # SIGTERM drains the worker first",
		},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			o := &agentOptions{}
			complete := bindAgent(fs, o)
			return func(ctx context.Context, args []string) error {
				if err := complete(args); err != nil {
					return err
				}
				return runAgent(ctx, e, o)
			}
		},
	})
}

// schedulerFlags are shared by `stoker scheduler` and `stoker up`.
type schedulerFlags struct {
	spreadOut, beatsOnly                  *bool
	maxRetries, missedBeats, defaultCores *int
	maxInFlight                           *int
	flowTarget                            *time.Duration
	workerSelection                       *string
	renewInterval, beatInterval, launchTO *time.Duration
}

func bindSchedulerFlags(fs *flag.FlagSet) *schedulerFlags {
	return &schedulerFlags{
		spreadOut:     fs.Bool("spread-out", true, "spread executors over workers (false: fill one worker before the next)"),
		maxRetries:    fs.Int("max-executor-retries", scheduler.DefaultMaxExecutorRetries, "executor failures in a row (none running) after which an app FAILS"),
		renewInterval: fs.Duration("renew-interval", 0, "how often the leader renews its lease (default: lease-ttl/3, at most 1s; a failed renewal is retried on every beat while the lease stands)"),
		beatInterval:  fs.Duration("beat-interval", scheduler.DefaultBeatInterval, "how often the leader publishes a lease beat"),
		missedBeats: fs.Int("missed-beats", scheduler.DefaultMissedBeats,
			"beats a standby may miss before it revokes the lease and takes over (failover ≈ beat-interval × missed-beats)"),
		launchTO: fs.Duration("launch-timeout", scheduler.DefaultLaunchTimeout, "how long an agent has to acknowledge a launch or kill"),
		maxInFlight: fs.Int("max-in-flight", scheduler.DefaultMaxInFlight,
			"executors starting at once, cluster-wide (placed, not yet reported RUNNING), and as many being killed (kill sent, not yet reported ended); the rest follow as reports arrive, so a burst does not queue state reports past their timeouts (-1: no bound)"),
		flowTarget: fs.Duration("flow-target", scheduler.DefaultFlowTarget,
			"how long launches may take to be reported out of LAUNCHING, and kills to be reported ended: when most of a window's worth take longer the window of executors in flight is halved, and it grows from 256 up to --max-in-flight while they come back sooner (negative, e.g. -1s: the window is --max-in-flight, constant)"),
		defaultCores: fs.Int("default-cores", 0,
			"cap on the cores of an application that sets no --max-cores of its own, as Spark's spark.deploy.defaultCores (0: no cap)"),
		beatsOnly: fs.Bool("beats-only", false,
			"ignore the bus's connection-closed events: a standby takes over only after missed beats (default: at once when the leader's connection closes)"),
		workerSelection: fs.String("worker-selection-policy", "ROUND_ROBIN",
			"order of the workers offered to drivers: ROUND_ROBIN (shuffled, Spark's spreadOutDrivers) or Spark 4's "+
				"CORES_FREE_ASCENDING, CORES_FREE_DESCENDING, MEMORY_FREE_ASCENDING, MEMORY_FREE_DESCENDING, WORKER_ID"),
	}
}

func (s *schedulerFlags) check() error {
	if *s.maxRetries <= 0 {
		return usagef("--max-executor-retries must be > 0, got %d", *s.maxRetries)
	}
	for name, d := range map[string]time.Duration{"--renew-interval": *s.renewInterval,
		"--beat-interval": *s.beatInterval, "--launch-timeout": *s.launchTO} {
		if d < 0 {
			return usagef("%s must be >= 0, got %s", name, d)
		}
	}
	if *s.missedBeats < 0 {
		return usagef("--missed-beats must be >= 1, got %d", *s.missedBeats)
	}
	if *s.defaultCores < 0 {
		return usagef("--default-cores must be >= 0 (0: no cap), got %d", *s.defaultCores)
	}
	if *s.maxInFlight == 0 || *s.maxInFlight < -1 {
		return usagef("--max-in-flight must be > 0, or -1 for no bound, got %d", *s.maxInFlight)
	}
	if *s.flowTarget == 0 {
		return usagef("--flow-target must be > 0, or negative for a constant window, got 0")
	}
	if _, err := scheduler.ParseWorkerSelection(*s.workerSelection); err != nil {
		return usagef("--worker-selection-policy: %v", err)
	}
	return nil
}

// settings are the scheduler's settings from the flags.
func (s *schedulerFlags) settings() schedulerSettings {
	ws, _ := scheduler.ParseWorkerSelection(*s.workerSelection) // checked by check
	return schedulerSettings{consolidate: !*s.spreadOut, workerSelection: ws, maxRetries: *s.maxRetries,
		renewInterval: *s.renewInterval, beatInterval: *s.beatInterval, missedBeats: *s.missedBeats,
		launchTO: *s.launchTO, defaultCores: *s.defaultCores, maxInFlight: *s.maxInFlight, flowTarget: *s.flowTarget, beatsOnly: *s.beatsOnly}
}

// agentOptions is `stoker agent` parsed.
type agentOptions struct {
	agentSettings
	logLevel  string
	target    natsTarget
	joinToken string
	sim       simOptions
	// drainGrace > 0: SIGTERM, SIGPWR or Ctrl-C drain the worker for up
	// to this long before the agent leaves (agent.Decommission).
	drainGrace time.Duration
}

func bindAgent(fs *flag.FlagSet, o *agentOptions) func(args []string) error {
	url := natsFlag(fs)
	id := fs.String("id", "", "worker id (default: the hostname plus a suffix, kept in <work-dir>/worker-id)")
	host := fs.String("host", "", "address reported for this worker (default: the hostname)")
	cores := fs.Int("cores", runtime.NumCPU(), "cores offered to the cluster")
	memory := sizeVar(fs, "memory", 0, "memory offered, e.g. 4g (default: total memory minus 1 GiB)")
	workDir := fs.String("work-dir", agent.DefaultWorkDir, "directory for executors' and drivers' work dirs and logs")
	enforceMem := fs.String("enforce-memory", agent.EnforceAuto,
		"hold executors to their memory grant: auto (a cgroup v2 memory.max per executor when the agent may create cgroups, else a warning), "+
			"cgroup (required), rlimit (RLIMIT_AS, best effort; fails Go and JVM executors, which reserve more address space than they use), off")
	cgroupParent := fs.String("cgroup-parent", "", "cgroup v2 directory to create executors' cgroups in (default: the agent's own, when delegated)")
	hb := fs.Duration("heartbeat-interval", agent.DefaultHeartbeatInterval, "heartbeat interval until the cluster says otherwise")
	grace := bindKillGrace(fs)
	drainGrace := fs.Duration("drain-grace", 0, "on SIGTERM, SIGPWR or Ctrl-C, drain the worker first (its executors replaced on other workers, "+
		"then stopped here; Spark's spark.decommission.enabled) for up to this long, then leave; a second signal leaves at once; "+
		"0 leaves at once")
	var stopAfter offDuration
	fs.Var(&stopAfter, "stop-after-disconnect", "kill every executor and driver once this agent has lost the cluster for this long (no round trip to its NATS server, "+
		"or no heartbeat acknowledged by a heartbeat service that hears a quorum of the bus), "+
		"e.g. 3s: at most one copy runs if it plus --kill-grace is below the worker timeout (Nomad's stop_on_client_after); "+
		"off keeps them running while the cluster replaces them (at least once)")
	level := logLevelFlag(fs)
	joinToken := fs.String("join-token", "", "join the cluster with a token from `stoker token create` (once: the credential is kept in the work dir)")
	hk := bindHousekeeping(fs)
	sim := bindSim(fs)
	var res resourcesFlag
	fs.Var(&res, "resource", "offer a custom resource with its addresses, NAME=ADDR[,ADDR...], e.g. gpu=0,1,2,3 (repeatable; Spark's spark.worker.resource.NAME.amount)")
	var disc discoveryFlag
	fs.Var(&disc, "resource-discovery", `find a resource's addresses with a script printing {"name":"gpu","addresses":["0","1"]}, NAME=SCRIPT (repeatable; Spark's discoveryScript)`)
	noGPU := fs.Bool("no-gpu-detect", false, "do not ask nvidia-smi for GPUs when no gpu resource is given")
	var labels labelsFlag
	fs.Var(&labels, "label", "placement labels, KEY=VALUE[,KEY=VALUE...], e.g. zone=a,disk=ssd (repeatable; matched by --constraint)")
	return func(args []string) error {
		if len(args) > 0 {
			return usagef("unexpected arguments %q", strings.Join(args, " "))
		}
		if err := positive("cores", *cores); err != nil {
			return err
		}
		if *hb <= 0 || *grace < 0 || *drainGrace < 0 || *drainGrace > schemas.MaxDrainDeadline {
			return usagef("--heartbeat-interval must be > 0, --kill-grace >= 0 and --drain-grace between 0 and %s", schemas.MaxDrainDeadline)
		}
		dir, err := filepath.Abs(*workDir)
		if err != nil {
			return usagef("--work-dir: %v", err)
		}
		if err := sim.check(); err != nil {
			return err
		}
		if !slices.Contains(agent.EnforceModes, *enforceMem) {
			return usagef("--enforce-memory must be one of %s, got %q", strings.Join(agent.EnforceModes, ", "), *enforceMem)
		}
		house, err := hk.settings()
		if err != nil {
			return err
		}
		wid := *id
		if *sim.n > 0 && wid == "" {
			wid = "sim-" + hostname()
			wid = wid[:min(len(wid), schemas.MaxIDLen-8)]
		} else if wid == "" {
			if wid, err = agent.DefaultWorkerID(dir); err != nil {
				return fmt.Errorf("--id: %w", err)
			}
		}
		if err := schemas.ValidID("worker", wid); err != nil {
			return usagef("--id: %v", err)
		}
		*o = agentOptions{logLevel: *level, target: url.target(), joinToken: *joinToken, sim: *sim.simOptions, drainGrace: *drainGrace, agentSettings: agentSettings{natsURL: *url.url, id: wid, host: *host, workDir: dir,
			cores: *cores, memoryMB: int64(*memory), heartbeat: *hb, killGrace: *grace, stopAfterDisconnect: time.Duration(stopAfter),
			resources: schemas.Resources(res), discovery: disc, noGPUDetect: *noGPU, labels: schemas.Labels(labels),
			enforceMemory: *enforceMem, cgroupParent: *cgroupParent, housekeeping: house}}
		return nil
	}
}

func runAgent(ctx context.Context, e *env, o *agentOptions) error {
	log, err := newLogger(e, o.logLevel)
	if err != nil {
		return err
	}
	lock, err := lockDir(o.workDir, "stoker agent "+o.id, o.natsURL, log)
	if err != nil {
		return err
	}
	defer lock.Release()
	if o.sim.n > 0 {
		return runSimAgents(ctx, o, log)
	}
	t := o.target
	if t.Creds == "" {
		// A credential received with a join token is kept in the work dir.
		if p := filepath.Join(o.workDir, agentCredsFile); fileExists(p) {
			t.Creds = p
			if ca := filepath.Join(o.workDir, "ca.pem"); t.CA == "" && fileExists(ca) {
				t.CA = ca
			}
		} else if o.joinToken != "" {
			if err := os.MkdirAll(o.workDir, 0o755); err != nil {
				return err
			}
			if t, err = joinWithToken(ctx, t, o.joinToken, o.workDir, o.id); err != nil {
				return err
			}
			log.Info().Str("creds", t.Creds).Msg("joined with the token; the credential is kept for restarts")
		}
	}
	nc, err := t.connect(bus.ConnectOptions{Name: "stoker-agent-" + o.id, Retry: true, Log: &log})
	if err != nil {
		return err
	}
	defer nc.Close()
	o.tlsCA, o.secure = t.CA, t.Creds != ""
	a, err := newAgent(nc, log, o.agentSettings)
	if err != nil {
		return usagef("%v", err)
	}
	if err := a.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	go func() {
		select {
		case <-a.Registered():
			log.Info().Str("worker_id", o.id).Msg("worker registered; Ctrl-C or SIGTERM decommissions it")
		case <-ctx.Done():
		}
	}()
	// SIGINT and SIGTERM end ctx (main); SIGPWR is the agent's own.
	power := make(chan os.Signal, 1)
	if len(powerSignals) > 0 {
		signal.Notify(power, powerSignals...)
		defer signal.Stop(power)
	}
	select {
	case <-ctx.Done():
	case <-power:
	case <-a.Done():
		// Replaced by a newer instance: it has stopped acting already.
		a.Stop()
		_ = nc.Drain()
		return a.Err()
	}
	if o.drainGrace > 0 {
		err = decommission(a, o.drainGrace)
	} else {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = a.Shutdown(sctx)
	}
	_ = nc.Drain()
	if err != nil {
		// The exit code says the worker did not leave cleanly: refused, or
		// not acknowledged (the cluster marks it DEAD after its timeout).
		return fmt.Errorf("leave: %w", err)
	}
	return nil
}

// agentCredsFile is an agent's credential in its work dir (from a join token).
const agentCredsFile = "agent.creds"

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// lockDir takes dir for this process (svc.LockDir), logging a stale lock
// it takes over from a process that died holding it.
func lockDir(dir, command, address string, log zerolog.Logger) (*svc.DirLock, error) {
	l, err := svc.LockDir(dir, svc.NewOwner(command, address))
	if err != nil {
		return nil, err
	}
	if p := l.Previous; p.PID != 0 {
		log.Warn().Str("dir", dir).Str("previous_owner", p.String()).Msg("took over the lock of a process that is no longer running")
	}
	return l, nil
}

// busOptions is `stoker bus` parsed.
type busOptions struct {
	cfg      bus.ServerConfig
	log      string
	insecure bool
	authDir  string
	tls      tlsOptions
	// provision: this node provisions the store with store once JetStream answers.
	provision bool
	store     bus.StoreConfig
}

func init() {
	register(&command{
		name: "bus", group: "Services", summary: "run an embedded NATS server with JetStream (one node of the bus)",
		usage: "--data DIR [--port 4222] [--host H] [--server-name N] [--cluster-name C --cluster-port P --routes URLS] [--monitor-port P] [--replicas 1] [--lease-ttl 10s] [--provision=true]",
		details: `Any NATS 2.11+ server with JetStream works as the bus; this is the same
server embedded, so a cluster needs nothing else installed. Three nodes with
--routes to each other form a JetStream cluster (give each --replicas 3).

Once JetStream answers, the node provisions the cluster's store (buckets
and stream) with the store flags, as ` + "`stoker init`" + ` does: every node of a
cluster may, idempotently, so give them all the same store flags. A setting
that differs and cannot be changed in place stops the node with an error
saying how to fix it. --provision=false leaves the store to ` + "`stoker init`" + `.`,
		examples: []string{
			"stoker bus --data ./data/nats",
			"stoker bus --data /data --server-name n1 --cluster-name stoker --cluster-port 6222 --routes nats://n2:6222,nats://n3:6222 --replicas 3",
		},
		setup: setupWith(bindBus, runBus),
	})
}

func bindBus(fs *flag.FlagSet, o *busOptions) func(args []string) error {
	port := fs.Int("port", 4222, "client port")
	host := fs.String("host", "0.0.0.0", "client listen address")
	data := fs.String("data", "", "JetStream store directory (required)")
	name := fs.String("server-name", "", "server name, unique in a cluster (default: the hostname)")
	clusterName := fs.String("cluster-name", "", "JetStream cluster name (enables clustering)")
	clusterPort := fs.Int("cluster-port", 6222, "cluster route port")
	routes := fs.String("routes", "", "comma-separated route URLs of the other nodes, e.g. nats://n2:6222")
	monitor := fs.Int("monitor-port", 0, "HTTP monitoring port (0: off)")
	provision := fs.Bool("provision", true, "provision the cluster's store once JetStream answers (false: leave it to `stoker init`)")
	sf := bindStoreFlags(fs)
	level := logLevelFlag(fs)
	insecure := fs.Bool("insecure", false, "run WITHOUT authentication or TLS: anyone who reaches the port owns every worker")
	var tlsOpts tlsOptions
	bindTLS(fs, &tlsOpts)
	authDir := fs.String("auth-dir", "", "keys (auth/) and credentials (creds/); the same on every node of a cluster (default: --data)")
	return func(args []string) error {
		if len(args) > 0 {
			return usagef("unexpected arguments %q", strings.Join(args, " "))
		}
		store, err := sf.config()
		if err != nil {
			return err
		}
		if *data == "" {
			return usagef("--data is required")
		}
		if *port <= 0 || *port > 65535 {
			return usagef("--port must be 1..65535, got %d", *port)
		}
		n := *name
		if n == "" {
			n = hostname()
		}
		cfg := bus.ServerConfig{Name: n, Host: *host, Port: *port, StoreDir: *data, MonitorPort: *monitor}
		if *clusterName != "" || *routes != "" {
			cfg.ClusterName, cfg.ClusterPort = *clusterName, *clusterPort
			for _, r := range strings.Split(*routes, ",") {
				if r = strings.TrimSpace(r); r != "" {
					cfg.Routes = append(cfg.Routes, r)
				}
			}
		}
		dir := *authDir
		if dir == "" {
			dir = *data
		}
		*o = busOptions{cfg: cfg, log: *level, provision: *provision, store: store, insecure: *insecure, authDir: dir, tls: tlsOpts}
		return nil
	}
}

func runBus(ctx context.Context, e *env, o *busOptions) error {
	log, err := newLogger(e, o.log)
	if err != nil {
		return err
	}
	o.cfg.Log = &log
	lock, err := lockDir(o.cfg.StoreDir, "stoker bus", fmt.Sprintf("nats://%s:%d", o.cfg.Host, o.cfg.Port), log)
	if err != nil {
		return err
	}
	defer lock.Release()
	var keys *auth.Keys
	if !o.insecure {
		if keys, _, err = secureServer(&o.cfg, o.authDir, o.tls); err != nil {
			return err
		}
	} else if !isLoopback(o.cfg.Host) {
		log.Warn().Str("host", o.cfg.Host).Msg("--insecure on a non-loopback address: anyone who reaches the port can run commands on every worker")
	}
	srv, err := bus.StartServer(o.cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "NATS with JetStream at %s (data in %s)\n", srv.URL(), o.cfg.StoreDir)
	if o.cfg.Auth != nil {
		fmt.Fprintf(e.stdout, "Credentials in %s (services: --creds %s; clients: export STOKER_CREDS=%s)\n",
			filepath.Join(o.authDir, auth.CredsDir), auth.CredsPath(o.authDir, "<role>"), auth.CredsPath(o.authDir, auth.RoleAdmin))
	} else {
		fmt.Fprintln(e.stdout, "NO AUTHENTICATION (--insecure)")
	}
	provisioned := make(chan error, 1)
	if o.provision {
		var creds []byte
		if keys != nil {
			// In-process, as an admin: provisioning creates streams.
			if creds, err = keys.Mint(auth.RoleAdmin, "provision", 0); err != nil {
				srv.Stop()
				return err
			}
		}
		nc, err := bus.Connect("", bus.ConnectOptions{Name: "stoker-bus-provision", Server: srv, Log: &log, CredsData: creds})
		if err != nil {
			srv.Stop()
			return err
		}
		// Kept open: the owner provisions again after a reconnect.
		defer nc.Close()
		go func() {
			_, err := provisionStore(ctx, nc, o.store, log)
			if err == nil {
				log.Info().Int("replicas", o.store.Replicas).Dur("lease_ttl", o.store.LeaseTTL).Msg("store provisioned")
			}
			provisioned <- err
		}()
	}
	select {
	case <-ctx.Done():
	case err := <-provisioned:
		if err != nil && ctx.Err() == nil {
			srv.Stop()
			return err
		}
		<-ctx.Done()
	}
	log.Info().Msg("stopping the bus")
	srv.Stop()
	return nil
}

// startWhenStore waits (as long as ctx allows) for JetStream and for the
// store's owner to have provisioned the store, so a service started
// alongside the bus, as compose does, waits instead of failing; then it
// starts s within startTimeout.
func startWhenStore(ctx context.Context, nc *nats.Conn, s service, log zerolog.Logger) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if _, err := bus.WaitStore(ctx, js, log); err != nil {
		return err
	}
	sctx, cancel := startContext(ctx)
	defer cancel()
	return s.Start(sctx)
}

// decommission drains the agent's worker for up to grace, then leaves; a
// second SIGINT, SIGTERM or SIGPWR cuts the drain short.
func decommission(a *agent.Service, grace time.Duration) error {
	again := make(chan os.Signal, 1)
	signal.Notify(again, append([]os.Signal{os.Interrupt, syscall.SIGTERM}, powerSignals...)...)
	defer signal.Stop(again)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-again:
			cancel()
		case <-ctx.Done():
		}
	}()
	return a.Decommission(ctx, grace)
}
