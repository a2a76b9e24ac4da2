package main

// `stoker up`: a whole cluster in one process. The bus is embedded; every
// service and agent gets its own connection and talks only over NATS, so
// the wiring is the same as when they run apart.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/agent"
	"github.com/stoker/stoker/services/registration"
	"github.com/stoker/stoker/services/svc"
	"github.com/stoker/stoker/services/web"
)

// upOptions is `stoker up` parsed.
type upOptions struct {
	workers           int
	coresPerWorker    int
	memoryPerWorkerMB int64
	data              string
	host              string
	port              int // -1: random (tests)
	live              liveness
	retention         registration.Retention
	housekeeping      housekeeping
	recoveryTimeout   time.Duration
	killGrace         time.Duration
	sched             schedulerSettings
	// store is what `stoker up` provisions (zero: the defaults).
	store    bus.StoreConfig
	logLevel string
	// insecure runs the bus without authentication or TLS.
	insecure bool
	tls      tlsOptions
	// registerWait bounds the wait for every agent's first registration.
	registerWait time.Duration
	// webAddr is where the web UI listens ("": no web UI); webUsers its
	// logins (none: a generated admin login, see webAdminLogin).
	webAddr  string
	webUsers []web.User
	// resources and labels are offered by every local worker (--resource,
	// --label); with resources given, nvidia-smi is not asked.
	resources schemas.Resources
	labels    schemas.Labels
	// webAnonymous overrides the role of a web request with no login
	// (tests only; the default is viewer, never admin).
	webAnonymous web.Role
}

func init() {
	register(&command{
		name: "up", group: "Cluster", summary: "run a whole cluster in this process: bus, services and N workers",
		usage: "[--workers 2] [--cores-per-worker N] [--memory-per-worker 2g] [--data ./data] [--port 4222] [flags]",
		details: `Starts an embedded NATS server with JetStream (data in <data>/nats),
provisions the store (buckets and stream, with --lease-ttl and the other
store flags; a setting changed since the last start is updated in place and
logged), starts the registration, heartbeat, recovery and scheduler
services, and N worker agents
named <hostname>-1..N with work dirs <data>/work/<worker>. Ctrl-C or SIGTERM
decommissions the workers, stops the services, then the bus. Starting again
on the same --data keeps the cluster's state.`,
		examples: []string{
			"stoker up",
			"stoker up --workers 4 --cores-per-worker 2 --memory-per-worker 1g --data /tmp/stoker",
			"stoker up --spread-out=false --worker-timeout 10s",
		},
		setup: setupWith(bindUp, runUp),
	})
}

func bindUp(fs *flag.FlagSet, o *upOptions) func(args []string) error {
	workers := fs.Int("workers", 2, "number of local workers")
	cores := fs.Int("cores-per-worker", runtime.NumCPU(), "cores each worker offers")
	memory := sizeVar(fs, "memory-per-worker", 2048, "memory each worker offers, e.g. 2g")
	data := fs.String("data", "./data", "directory for the bus's JetStream store and the workers' work dirs")
	host := fs.String("host", "127.0.0.1", "address the bus listens on (0.0.0.0 to let other machines join)")
	port := fs.Int("port", 4222, "NATS client port")
	hb, wt := bindLiveness(fs, "worker and app heartbeat interval", "silence after which a worker is DEAD")
	rt := bindRecoveryTimeout(fs, "how long recovery waits for agents and drivers")
	ret := bindRetention(fs)
	hk := bindHousekeeping(fs)
	grace := bindKillGrace(fs)
	sc := bindSchedulerFlags(fs)
	sf := bindStoreFlags(fs)
	level := logLevelFlag(fs)
	insecure := fs.Bool("insecure", false, "run the bus WITHOUT authentication or TLS: anyone who reaches the port owns every worker")
	var tlsOpts tlsOptions
	bindTLS(fs, &tlsOpts)
	wf := bindWebFlags(fs, `address of the web UI ("off": none)`, "web-password-file")
	var res resourcesFlag
	fs.Var(&res, "resource", "every local worker offers this custom resource, NAME=ADDR[,ADDR...], e.g. gpu=0,1 (repeatable; as stoker agent --resource; with it, nvidia-smi is not asked)")
	var labels labelsFlag
	fs.Var(&labels, "label", "placement labels of every local worker, KEY=VALUE[,KEY=VALUE...] (repeatable; as stoker agent --label)")
	return func(args []string) error {
		if len(args) > 0 {
			return usagef("unexpected arguments %q", strings.Join(args, " "))
		}
		store, err := sf.config()
		if err != nil {
			return err
		}
		if store.Replicas != 1 {
			return usagef("--replicas %d needs a JetStream cluster; `stoker up` runs one node: use 1, or `stoker bus` nodes with --replicas 3", store.Replicas)
		}
		if err := positive("workers", *workers); err != nil {
			return err
		}
		if err := positive("cores-per-worker", *cores); err != nil {
			return err
		}
		if err := needSize("memory-per-worker", memory); err != nil {
			return err
		}
		if *port <= 0 || *port > 65535 {
			return usagef("--port must be 1..65535, got %d", *port)
		}
		if *hb <= 0 || *rt <= 0 || *grace < 0 {
			return usagef("--heartbeat-interval and --recovery-timeout must be > 0, --kill-grace >= 0")
		}
		if *wt <= *hb {
			return usagef("--worker-timeout (%s) must exceed --heartbeat-interval (%s)", *wt, *hb)
		}
		if err := sc.check(); err != nil {
			return err
		}
		retention, err := ret.retention()
		if err != nil {
			return err
		}
		house, err := hk.settings()
		if err != nil {
			return err
		}
		if *data == "" {
			return usagef("--data must not be empty")
		}
		users, err := wf.users()
		if err != nil {
			return usagef("%v", err)
		}
		webAddr := *wf.addr
		if webAddr == "off" {
			webAddr = ""
		}
		*o = upOptions{
			webAddr: webAddr, webUsers: users,
			workers: *workers, coresPerWorker: *cores, memoryPerWorkerMB: int64(*memory),
			data: *data, host: *host, port: *port,
			live: liveness{heartbeat: *hb, workerTimeout: *wt}, retention: retention, housekeeping: house, recoveryTimeout: *rt, killGrace: *grace,
			sched: sc.settings(), store: store,
			logLevel: *level, registerWait: 15 * time.Second, insecure: *insecure, tls: tlsOpts,
			resources: schemas.Resources(res), labels: schemas.Labels(labels),
		}
		return nil
	}
}

func runUp(ctx context.Context, e *env, o *upOptions) error {
	log, err := newLogger(e, o.logLevel)
	if err != nil {
		return err
	}
	c, err := startUp(ctx, o, log)
	if err != nil {
		return err
	}
	printUpBanner(e.stdout, o, c)
	<-ctx.Done()
	log.Info().Msg("stopping: decommissioning workers, then services, then the bus")
	c.Stop()
	return nil
}

// upCluster is what `stoker up` started, in start order.
type upCluster struct {
	log      zerolog.Logger
	srv      *bus.Server
	url      string
	conns    []*nats.Conn
	services []namedService // started, in order
	agents   []*agent.Service
	stopOnce sync.Once
	// data is the absolute data dir; secure: the bus authenticates and
	// requires TLS with certificates from the CA in ca.
	data   string
	secure bool
	ca     string
	lock   *svc.DirLock // <data>/LOCK, released last
	web    *web.Server  // nil: no web UI
	// webPassword is the file holding the web UI's generated admin
	// password ("" with --web-password-file).
	webPassword string
}

// adminCreds is the admin credential `stoker up` wrote ("" when insecure).
func (c *upCluster) adminCreds() string {
	if !c.secure {
		return ""
	}
	return auth.CredsPath(c.data, auth.RoleAdmin)
}

// isLoopback reports whether host only listens on this machine.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type namedService struct {
	name string
	s    service
	// id and nc are the instance id and its connection (stoker bench
	// fails the scheduler through them).
	id string
	nc *nats.Conn
}

// startUp starts the bus, the services and the agents, and waits (up to
// o.registerWait) for every agent to be registered. On error, whatever was
// started is stopped.
func startUp(ctx context.Context, o *upOptions, log zerolog.Logger) (_ *upCluster, err error) {
	data, err := filepath.Abs(o.data)
	if err != nil {
		return nil, err
	}
	// One owner per data dir: a second `stoker up` on it would share the
	// store and decommission the first one's workers when it stops.
	lock, err := lockDir(data, "stoker up", fmt.Sprintf("nats://%s:%d", o.host, o.port), log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lock.Release()
		}
	}()
	busLog := log.With().Str("component", "bus").Logger().Level(maxLevel(log.GetLevel(), zerolog.WarnLevel))
	cfg := bus.ServerConfig{Name: hostname(), Host: o.host, Port: o.port,
		StoreDir: filepath.Join(data, "nats"), Log: &busLog}
	var (
		keys *auth.Keys
		ca   string
	)
	if !o.insecure {
		if keys, ca, err = secureServer(&cfg, data, o.tls); err != nil {
			return nil, err
		}
	} else if !isLoopback(o.host) {
		log.Warn().Str("host", o.host).Msg("--insecure on a non-loopback address: anyone who reaches the port can run commands on every worker")
	}
	srv, err := bus.StartServer(cfg)
	if err != nil {
		return nil, err
	}
	c := &upCluster{log: log, srv: srv, url: srv.URL(), data: data, secure: keys != nil, ca: ca, lock: lock}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()

	// Each service and agent connects in-process on its own credential,
	// minted in memory (user name: its instance or worker id).
	conn := func(role auth.Role, name string) (*nats.Conn, error) {
		l := log.With().Str("conn", name).Logger()
		var creds []byte
		if keys != nil {
			if creds, err = keys.Mint(role, name, 0); err != nil {
				return nil, err
			}
		}
		nc, err := bus.Connect("", bus.ConnectOptions{Name: "stoker-up-" + name, Server: srv, Log: &l, CredsData: creds})
		if err != nil {
			return nil, err
		}
		c.conns = append(c.conns, nc)
		return nc, nil
	}
	// `stoker up` owns the store: provisioned before any service opens it.
	pnc, err := conn(auth.RoleAdmin, "provision")
	if err != nil {
		return nil, err
	}
	if _, err := provisionStore(ctx, pnc, o.store, log); err != nil {
		return nil, err
	}
	startSvc := func(name string, mk newService) error {
		id := instanceID(name)
		nc, err := conn(auth.Role(name), id)
		if err != nil {
			return err
		}
		s, err := mk(nc, id, log.With().Str("service", name).Logger())
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		sctx, cancel := startContext(ctx)
		err = s.Start(sctx)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		c.services = append(c.services, namedService{name: name, s: s, id: id, nc: nc})
		return nil
	}

	steps := []struct {
		name string
		mk   newService
	}{
		{"registration", newRegistrationRetaining(o.live, tokenMinter(keys, ca), o.retention)},
		{"heartbeat", newHeartbeat(o.live, 0, o.sched.beatsOnly)},
		// Recovery before the scheduler, so it sees the scheduler's first epoch.
		{"recovery", newRecovery(o.recoveryTimeout)},
		{"scheduler", newScheduler(withAppCreds(o.sched, keys))},
	}
	for _, st := range steps {
		if err := startSvc(st.name, st.mk); err != nil {
			return nil, err
		}
	}

	host := hostname()
	for i := 1; i <= o.workers; i++ {
		wid := upWorkerID(host, i)
		nc, err := conn(auth.RoleAgent, wid)
		if err != nil {
			return nil, err
		}
		a, err := newAgent(nc, log, agentSettings{natsURL: c.url, id: wid, host: host,
			cores: o.coresPerWorker, memoryMB: o.memoryPerWorkerMB, workDir: filepath.Join(data, "work", wid),
			heartbeat: o.live.heartbeat, killGrace: o.killGrace, secure: keys != nil, tlsCA: ca, housekeeping: o.housekeeping,
			resources: o.resources, labels: o.labels, noGPUDetect: len(o.resources) > 0})
		if err != nil {
			return nil, fmt.Errorf("agent %s: %w", wid, err)
		}
		if err := a.Start(context.WithoutCancel(ctx)); err != nil {
			return nil, fmt.Errorf("agent %s: %w", wid, err)
		}
		c.agents = append(c.agents, a)
	}
	if o.webAddr != "" {
		// The web UI reads as a viewer; its kill buttons and submission go
		// through an admin connection of their own.
		vnc, err := conn(auth.RoleViewer, "web")
		if err != nil {
			return nil, err
		}
		anc, err := conn(auth.RoleAdmin, "web-admin")
		if err != nil {
			return nil, err
		}
		users, anonymous := o.webUsers, o.webAnonymous
		if len(users) == 0 {
			// No password file: read only for whoever reaches the
			// (loopback) port, admin behind the generated login.
			if users, c.webPassword, err = webAdminLogin(o.data); err != nil {
				return nil, err
			}
			if anonymous == "" {
				anonymous = web.RoleViewer
			}
		}
		if c.web, err = startWeb(web.Config{Addr: o.webAddr, Viewer: vnc, Admin: anc, BusURL: c.url,
			Users: users, Anonymous: anonymous, Insecure: o.insecure}, log); err != nil {
			return nil, err
		}
	}
	wait := time.NewTimer(o.registerWait)
	defer wait.Stop()
	for _, a := range c.agents {
		select {
		case <-a.Registered():
		case <-wait.C:
			log.Warn().Str("worker_id", a.WorkerID()).Msg("worker not registered yet; it keeps trying")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return c, nil
}

// upWorkerID is <hostname>-<i>, kept within the id length limit.
func upWorkerID(host string, i int) string {
	suffix := fmt.Sprintf("-%d", i)
	if len(host)+len(suffix) > schemas.MaxIDLen {
		host = strings.TrimRight(host[:schemas.MaxIDLen-len(suffix)], "-_")
	}
	return host + suffix
}

func maxLevel(a, b zerolog.Level) zerolog.Level {
	if a > b {
		return a
	}
	return b
}

// Stop decommissions the agents (in parallel), stops the services in
// reverse order, closes the connections and stops the bus. Idempotent.
func (c *upCluster) Stop() {
	c.stopOnce.Do(func() {
		if c.web != nil {
			c.web.Stop()
		}
		var wg sync.WaitGroup
		for _, a := range c.agents {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				switch err := a.Shutdown(ctx); {
				case errors.Is(err, bus.ErrRefused):
					c.log.Error().Err(err).Str("worker_id", a.WorkerID()).Msg("leave refused")
				case err != nil && !errors.Is(err, context.Canceled):
					c.log.Warn().Err(err).Str("worker_id", a.WorkerID()).Msg("leave not acknowledged")
				}
			}()
		}
		wg.Wait()
		for i := len(c.services) - 1; i >= 0; i-- {
			c.services[i].s.Stop()
		}
		for _, nc := range c.conns {
			nc.Close()
		}
		c.srv.Stop()
		c.lock.Release()
	})
}

func printUpBanner(w io.Writer, o *upOptions, c *upCluster) {
	env := "export STOKER_NATS_URL=" + c.url
	natsCLI := "nats --server " + c.url
	security := "NO AUTHENTICATION (--insecure)"
	if creds := c.adminCreds(); creds != "" {
		env += " STOKER_CREDS=" + creds
		natsCLI = "nats --context stoker"
		security = "clients need the admin credential " + creds + " (TLS: CA " + c.ca + ")"
	}
	webLine := "web UI off (--web-addr off)"
	if c.web != nil {
		webLine = "web UI at " + c.web.URL() + " (JSON API /api/v1, metrics /metrics)"
		if c.webPassword != "" {
			webLine += "\n  web UI is read only without a login; kill and submit: user admin, password in " + c.webPassword
		}
	}
	fmt.Fprintf(w, `Stoker is up: NATS at %s
  %s with %s and %s each; data in %s
  %s
  %s

Try, in another terminal (the first line is all a client needs):
  %s
  stoker workers
  stoker submit --wait -- sleep 3
  stoker run -- sleep 600              # a client-mode app holding executors
  go run ./examples/pi --slices 10     # Monte Carlo pi on the executors
`, c.url, plural(len(c.agents), "worker", "workers"), schemas.FormatCores(o.coresPerWorker), schemas.FormatMemoryMB(o.memoryPerWorkerMB),
		o.data, security, webLine, env)
	if creds := c.adminCreds(); creds != "" {
		fmt.Fprintf(w, "  nats context save stoker --select --server %s --creds %s --tlsca %s\n", c.url, creds, c.ca)
	}
	fmt.Fprintf(w, `  %s kv ls stoker-workers

Ctrl-C stops the cluster; starting again on the same --data keeps its state.
`, natsCLI)
}
