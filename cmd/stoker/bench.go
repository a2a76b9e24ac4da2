package main

// stoker bench: wiring only; the scenarios are in package bench.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bench"
	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/scheduler"
)

type benchOptions struct {
	opts       bench.Options
	json       bool
	data       string
	keep       bool
	tcp        bool
	processes  bool
	cpuProfile string
	memProfile string
	logLevel   string
	hb, wt     time.Duration
	// maxInFlight, flowTarget are the scheduler's --max-in-flight and
	// --flow-target.
	maxInFlight int
	flowTarget  time.Duration
}

var benchScenarios = []string{"reference", "latency", "placements", "resources", "failover", "dead", "real"}

func init() {
	register(&command{
		name: "bench", group: "Cluster", summary: "measure an embedded cluster with simulated agents (placements/s, latency, failover, dead workers)",
		usage: "[--agents 200] [--executors 2000] [--apps 10] [--real-processes N] [--json] [--scenarios a,b]",
		details: `Brings up a whole cluster in this process (the bus and the services as
` + "`stoker up`" + ` runs them, secured: every agent on its own credential), starts
--agents simulated agents (the real agent code with a launcher that starts
no process, each on its own connection) and runs the scenarios:

  reference   the bus itself: request/reply and synchronous KV puts per second
  latency     submit → 4 executors RUNNING in KV, on the idle cluster (p50, p99)
  placements  --apps apps asking for --executors executors at once, until every
              one is RUNNING in KV: placements per second
  resources   CPU during steady heartbeats and RSS
  failover    a standby scheduler starts, the leader falls silent: time until the
              standby holds the lease; no executor relaunched or lost
  dead        10% of the agents fall silent: time until DEAD, and until their
              executors run again elsewhere
  real        --real-processes N: N ` + "`sleep`" + ` executors on 2 real agent processes

With --processes the bus and each service run as their own processes
(` + "`stoker bus`" + `, registration, heartbeat, recovery, scheduler), as a deployment
runs them: resources then gives CPU and RSS per process, and failover kills
the leading scheduler's process. Set STOKER_CPUPROFILE=DIR to have every
stoker process (these included) write DIR/<command>-<pid>.pprof.

It checks what it measures: an executor lost, running twice or a count that
is not the one asked for prints FAILED and exits 1. Time never fails it.`,
		examples: []string{
			"stoker bench",
			"stoker bench --agents 1000 --executors 100000 --apps 100 --json",
			"stoker bench --agents 2 --scenarios reference,real --real-processes 500",
			"stoker bench --processes --agents 2000 --scenarios resources,dead --heartbeat-interval 1s",
		},
		setup: setupWith(bindBench, runBench),
	})
}

func bindBench(fs *flag.FlagSet, o *benchOptions) func(args []string) error {
	agents := fs.Int("agents", 200, "simulated agents")
	executors := fs.Int("executors", 2000, "executors placed in the placements scenario")
	apps := fs.Int("apps", 10, "apps the executors are split over")
	real := fs.Int("real-processes", 0, "N `sleep` executors on 2 real agents (0: skip the real scenario)")
	runs := fs.Int("latency-runs", 20, "4-executor apps timed by the latency scenario")
	dead := fs.Float64("dead-fraction", 0.1, "fraction of the agents that fall silent in the dead scenario")
	maxInFlight := fs.Int("max-in-flight", scheduler.DefaultMaxInFlight, "the scheduler's --max-in-flight: executors starting, and being killed, at once (-1: no bound)")
	flowTarget := fs.Duration("flow-target", scheduler.DefaultFlowTarget, "the scheduler's --flow-target: when most launches and kills of a window's worth are reported later, the window of executors in flight is halved (negative: the window is --max-in-flight, constant)")
	steady := fs.Duration("steady", 5*time.Second, "how long CPU is sampled during steady heartbeats")
	scen := fs.String("scenarios", "", "comma-separated scenarios to run (default: all): "+strings.Join(benchScenarios, ","))
	asJSON := fs.Bool("json", false, "print the result as JSON")
	data := fs.String("data", "", "data dir of the embedded cluster (default: a temporary dir, removed)")
	procs := fs.Bool("processes", false, "run the bus and each service as its own process (stoker bus, registration, heartbeat, recovery, scheduler), as a deployment does, for CPU and RSS per service; the simulated agents stay in this process, over TCP+TLS")
	tcp := fs.Bool("tcp", false, "simulated agents connect over TCP+TLS (default: in-process connections, still each its own credential; 10,000 TCP agents need 20,000 file descriptors)")
	cpu := fs.String("cpuprofile", "", "write a CPU profile of the placements and steady phases to this file")
	mem := fs.String("memprofile", "", "write a heap profile at the end to this file")
	hb, wt := bindLiveness(fs, "heartbeat interval of agents and apps", "silence after which a worker is DEAD")
	level := logLevelFlag(fs)
	return func(args []string) error {
		if len(args) > 0 {
			return usagef("unexpected arguments %q", strings.Join(args, " "))
		}
		for name, v := range map[string]int{"agents": *agents, "apps": *apps, "latency-runs": *runs} {
			if v <= 0 {
				return usagef("--%s must be > 0, got %d", name, v)
			}
		}
		if *executors < 0 || *real < 0 {
			return usagef("--executors and --real-processes must be >= 0")
		}
		if *dead <= 0 || *dead >= 1 {
			return usagef("--dead-fraction must be in (0,1), got %g", *dead)
		}
		if *maxInFlight == 0 || *maxInFlight < -1 {
			return usagef("--max-in-flight must be > 0, or -1 for no bound, got %d", *maxInFlight)
		}
		if *flowTarget == 0 {
			return usagef("--flow-target must be > 0, or negative for a constant window, got 0")
		}
		if *wt <= *hb {
			return usagef("--worker-timeout (%s) must exceed --heartbeat-interval (%s)", *wt, *hb)
		}
		var only map[string]bool
		if *scen != "" {
			only = map[string]bool{}
			for _, s := range strings.Split(*scen, ",") {
				s = strings.TrimSpace(s)
				if !contains(benchScenarios, s) {
					return usagef("--scenarios: unknown %q (one of %s)", s, strings.Join(benchScenarios, ", "))
				}
				only[s] = true
			}
		}
		*o = benchOptions{opts: bench.Options{Agents: *agents, Executors: *executors, Apps: *apps, RealProcesses: *real,
			LatencyRuns: *runs, DeadFraction: *dead, Only: only, Steady: *steady},
			json: *asJSON, data: *data, tcp: *tcp || *procs, processes: *procs, cpuProfile: *cpu, memProfile: *mem, logLevel: *level, hb: *hb, wt: *wt,
			maxInFlight: *maxInFlight, flowTarget: *flowTarget}
		return nil
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// errBenchChecks is the error of a run whose checks failed.
var errBenchChecks = errors.New("executors lost, doubled or miscounted (see FAILED above)")

func runBench(ctx context.Context, e *env, o *benchOptions) error {
	log, err := newLogger(e, o.logLevel)
	if err != nil {
		return err
	}
	// The cluster's own logging at warn: a bench of 10,000 agents would
	// otherwise print a line per registration.
	qlog := log.Level(maxLevel(log.GetLevel(), zerolog.WarnLevel))
	data := o.data
	if data == "" {
		if data, err = os.MkdirTemp("", "stoker-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(data)
	}
	var (
		url, ca   string
		keys      *auth.Keys
		srv       *bus.Server // the in-process bus (nil with --processes)
		startSchd func(ctx context.Context) (string, func(), error)
		failSchd  func(id string) error
		pids      func() map[string]int // nil: everything in this process
		busMsgs   func() (in, out int64, err error)
		self      = "bench process: bus, services, agents"
		// connect opens a connection on its own credential (set below,
		// once the bus is up; startSchd calls it later).
		connect func(role auth.Role, name string, inProcess bool) (*nats.Conn, error)
	)
	if o.processes {
		pc, err := startProcCluster(ctx, data, o)
		if err != nil {
			return err
		}
		defer pc.stop()
		url, ca, keys, pids, busMsgs = pc.url, pc.ca, pc.keys, pc.pids, pc.busMsgs
		self = "bench process: simulated agents"
		startSchd = func(context.Context) (string, func(), error) {
			id := instanceID("scheduler")
			if _, err := pc.startService("scheduler", id); err != nil {
				return "", nil, err
			}
			return id, func() { _ = pc.kill(id) }, nil
		}
		failSchd = pc.kill
	} else {
		c, uo, err := startBenchUp(ctx, data, o, qlog)
		if err != nil {
			return err
		}
		defer c.Stop()
		if keys, err = auth.Load(filepath.Join(c.data, auth.KeysDir)); err != nil {
			return err
		}
		url, ca, srv = c.url, c.ca, c.srv
		busMsgs = func() (int64, int64, error) {
			v, err := srv.Varz(nil)
			if err != nil {
				return 0, 0, err
			}
			return v.InMsgs, v.OutMsgs, nil
		}
		var mu sync.Mutex
		var extras []namedService
		defer func() {
			for _, ns := range extras {
				ns.s.Stop()
				ns.nc.Close()
			}
		}()
		failSvc := func(ns namedService) {
			ns.nc.Close() // no lease release, no goodbye: SIGKILL as the bus sees it
			ns.s.Stop()
		}
		startSchd = func(ctx context.Context) (string, func(), error) {
			id := instanceID("scheduler")
			nc, err := connect(auth.RoleScheduler, id, true)
			if err != nil {
				return "", nil, err
			}
			s, err := newScheduler(withAppCreds(uo.sched, keys))(nc, id, qlog.With().Str("service", "scheduler").Logger())
			if err != nil {
				nc.Close()
				return "", nil, err
			}
			sctx, cancel := startContext(ctx)
			defer cancel()
			if err := s.Start(sctx); err != nil {
				nc.Close()
				return "", nil, err
			}
			ns := namedService{name: "scheduler", s: s, id: id, nc: nc}
			mu.Lock()
			extras = append(extras, ns)
			mu.Unlock()
			return id, func() { failSvc(ns) }, nil
		}
		failSchd = func(id string) error {
			mu.Lock()
			defer mu.Unlock()
			for _, ns := range append(append([]namedService(nil), c.services...), extras...) {
				if ns.name == "scheduler" && ns.id == id {
					failSvc(ns)
					return nil
				}
			}
			return fmt.Errorf("no scheduler %q in this process", id)
		}
	}
	connect = func(role auth.Role, name string, inProcess bool) (*nats.Conn, error) {
		creds, err := keys.Mint(role, name, 0)
		if err != nil {
			return nil, err
		}
		co := bus.ConnectOptions{Name: "stoker-bench-" + name, CredsData: creds, CA: ca, Log: &qlog}
		u := url
		if inProcess && srv != nil {
			co.Server, u = srv, ""
		}
		// Thousands connecting at once on a loaded machine: a TLS
		// handshake can time out; try again as an agent would.
		for attempt := 0; ; attempt++ {
			nc, err := bus.Connect(u, co)
			if err == nil || attempt == 9 {
				return nc, err
			}
			time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
		}
	}
	admin, err := connect(auth.RoleAdmin, "bench", true)
	if err != nil {
		return err
	}
	defer admin.Close()

	acfg := agentConfig(nil, qlog, agentSettings{natsURL: url, host: "bench", workDir: filepath.Join(data, "sim"),
		heartbeat: o.hb, killGrace: time.Second, secure: true, tlsCA: ca})
	acfg.PingWait = 50 * time.Millisecond
	cl := &bench.Cluster{
		URL: url, Admin: admin, Agent: acfg, WorkerTimeout: o.wt, Log: qlog, Self: self,
		ConnectAgent: func(_ context.Context, wid string) (*nats.Conn, error) {
			return connect(auth.RoleAgent, wid, !o.tcp)
		},
		StartScheduler: startSchd,
		FailScheduler:  failSchd,
		RealDir:        filepath.Join(data, "real"),
		RealAgent: func(ctx context.Context, wid string, cores int) (int, func(), error) {
			return startRealAgent(ctx, data, url, ca, admin, keys, wid, cores)
		},
		PIDs:    pids,
		BusMsgs: busMsgs,
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	res := bench.Run(ctx, cl, o.opts)
	if o.memProfile != "" {
		if f, err := os.Create(o.memProfile); err == nil {
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	if o.json {
		err = res.WriteJSON(e.stdout)
	} else {
		err = res.WriteTable(e.stdout)
	}
	if err != nil {
		return err
	}
	if len(res.Failures) > 0 {
		return errBenchChecks
	}
	return nil
}

// startBenchUp brings up the whole cluster in this process, as `stoker
// up` does, without agents or web UI, on a free port.
func startBenchUp(ctx context.Context, data string, o *benchOptions, qlog zerolog.Logger) (*upCluster, *upOptions, error) {
	port, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	ufs := flag.NewFlagSet("up", flag.ContinueOnError)
	uo := &upOptions{}
	complete := bindUp(ufs, uo)
	if err := ufs.Parse([]string{"--data", data, "--port", strconv.Itoa(port), "--web-addr", "off",
		"--heartbeat-interval", o.hb.String(), "--worker-timeout", o.wt.String(),
		"--max-in-flight", strconv.Itoa(o.maxInFlight), "--flow-target", o.flowTarget.String()}); err != nil {
		return nil, nil, err
	}
	if err := complete(nil); err != nil {
		return nil, nil, err
	}
	uo.workers = 0
	uo.logLevel = "warn"
	c, err := startUp(ctx, uo, qlog)
	return c, uo, err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startRealAgent runs `stoker agent` (this executable) as a process, on
// its own agent credential, and waits until it registered.
func startRealAgent(ctx context.Context, data, url, ca string, admin *nats.Conn, keys *auth.Keys, wid string, cores int) (int, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return 0, nil, err
	}
	dir := filepath.Join(data, "real", wid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, nil, err
	}
	creds, err := keys.Mint(auth.RoleAgent, wid, 0)
	if err != nil {
		return 0, nil, err
	}
	cf := filepath.Join(dir, "agent.creds")
	if err := auth.WriteSecret(cf, creds); err != nil {
		return 0, nil, err
	}
	cmd := exec.Command(self, "agent", "--nats", url, "--creds", cf, "--tls-ca", ca, "--id", wid,
		"--cores", strconv.Itoa(cores), "--memory", "64g", "--work-dir", filepath.Join(dir, "work"), "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	stop := func() { terminate(cmd) }
	// Registered: its record in stoker-workers says ALIVE with its pid.
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if pid, err := workerPID(ctx, admin, wid); err == nil && pid == cmd.Process.Pid {
			return cmd.Process.Pid, stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return 0, nil, fmt.Errorf("agent %s did not register within 90s", wid)
}

// workerPID is the pid of worker wid's agent when its record says ALIVE.
func workerPID(ctx context.Context, nc *nats.Conn, wid string) (int, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	kv, err := js.KeyValue(ctx, bus.BucketWorkers)
	if err != nil {
		return 0, err
	}
	w, _, err := bus.Get[schemas.Worker](ctx, kv, wid)
	if err != nil {
		return 0, err
	}
	if w.State != schemas.WorkerAlive {
		return 0, fmt.Errorf("worker %s is %s", wid, w.State)
	}
	return w.PID, nil
}
