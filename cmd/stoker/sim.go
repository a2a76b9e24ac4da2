package main

// stoker agent --simulate N: N simulated agents in one process.

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/agent"
)

// simOptions are the --simulate flags of `stoker agent`.
type simOptions struct {
	n        int
	runTime  time.Duration
	failRate float64
	authDir  string
}

// simFlags binds them; check validates.
type simFlags struct {
	*simOptions
	n        *int
	runTime  *time.Duration
	failRate *float64
	authDir  *string
}

func bindSim(fs *flag.FlagSet) *simFlags {
	return &simFlags{simOptions: &simOptions{},
		n:        fs.Int("simulate", 0, "run N simulated agents in this process (real agent code, no processes started)"),
		runTime:  fs.Duration("sim-run-time", 0, "with --simulate: a simulated executor exits 0 after this long (0: runs until killed)"),
		failRate: fs.Float64("sim-fail-rate", 0, "with --simulate: the fraction (0..1) of simulated executors that fail with exit code 1"),
		authDir:  fs.String("auth-dir", "", "with --simulate: mint each agent's credential with the agent key in DIR/auth (stoker up's --data)"),
	}
}

func (f *simFlags) check() error {
	*f.simOptions = simOptions{n: *f.n, runTime: *f.runTime, failRate: *f.failRate, authDir: *f.authDir}
	switch {
	case *f.n < 0:
		return usagef("--simulate must be >= 0, got %d", *f.n)
	case *f.runTime < 0:
		return usagef("--sim-run-time must be >= 0, got %s", *f.runTime)
	case *f.failRate < 0 || *f.failRate > 1:
		return usagef("--sim-fail-rate must be in [0,1], got %g", *f.failRate)
	case *f.n == 0 && (*f.runTime != 0 || *f.failRate != 0 || *f.authDir != ""):
		return usagef("--sim-run-time, --sim-fail-rate and --auth-dir need --simulate N")
	}
	return nil
}

// simIDs are n worker ids: prefix-00001 ...
func simIDs(prefix string, n int) ([]string, error) {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%05d", prefix, i+1)
		if err := schemas.ValidID("worker", ids[i]); err != nil {
			return nil, usagef("--id: %v", err)
		}
	}
	return ids, nil
}

// simConnector returns how each simulated agent connects under its own
// identity: a credential minted from --auth-dir's agent key, or one
// obtained with the join token, or none (an insecure bus, or --creds for a
// single agent).
func simConnector(ctx context.Context, o *agentOptions, log zerolog.Logger) (func(context.Context, string) (*nats.Conn, error), error) {
	t := o.target
	opts := func(wid string) bus.ConnectOptions {
		l := log.With().Str("worker_id", wid).Logger()
		return bus.ConnectOptions{Name: "stoker-agent-" + wid, Retry: true, Log: &l, CA: t.CA}
	}
	switch {
	case o.sim.authDir != "":
		keys, err := auth.Load(filepath.Join(o.sim.authDir, auth.KeysDir))
		if err != nil {
			return nil, fmt.Errorf("--auth-dir: %w", err)
		}
		if t.CA == "" {
			if ca := auth.CAPath(o.sim.authDir); fileExists(ca) {
				t.CA = ca
			}
		}
		return func(_ context.Context, wid string) (*nats.Conn, error) {
			c, err := keys.Mint(auth.RoleAgent, wid, 0)
			if err != nil {
				return nil, err
			}
			o := opts(wid)
			o.CredsData, o.CA = c, t.CA
			return bus.Connect(t.URL, o)
		}, nil
	case o.joinToken != "":
		jt, err := auth.DecodeToken(o.joinToken)
		if err != nil {
			return nil, err
		}
		if t.CA == "" && jt.CA != "" {
			t.CA = filepath.Join(o.workDir, "ca.pem")
			if err := auth.WriteSecret(t.CA, []byte(jt.CA)); err != nil {
				return nil, err
			}
		}
		return func(ctx context.Context, wid string) (*nats.Conn, error) {
			c, err := joinCreds(ctx, t, jt, wid)
			if err != nil {
				return nil, err
			}
			o := opts(wid)
			o.CredsData, o.CA = c, t.CA
			return bus.Connect(t.URL, o)
		}, nil
	case t.Creds != "" && o.sim.n > 1:
		return nil, usagef("a credential is one worker id: give --simulate --join-token or --auth-dir so each agent has its own")
	}
	return func(_ context.Context, wid string) (*nats.Conn, error) { return t.connect(opts(wid)) }, nil
}

func runSimAgents(ctx context.Context, o *agentOptions, log zerolog.Logger) error {
	ids, err := simIDs(o.id, o.sim.n)
	if err != nil {
		return err
	}
	connect, err := simConnector(ctx, o, log)
	if err != nil {
		return err
	}
	// One log line per agent event would drown everything: warnings only.
	alog := log.Level(maxLevel(log.GetLevel(), zerolog.WarnLevel))
	o.secure = o.sim.authDir != "" || o.joinToken != "" || o.target.Creds != ""
	cfg := agentConfig(nil, alog, o.agentSettings)
	cfg.Launcher = &agent.SimLauncher{RunTime: o.sim.runTime, FailRate: o.sim.failRate}
	start := time.Now()
	f, err := agent.StartFleet(context.WithoutCancel(ctx), agent.FleetConfig{IDs: ids, Connect: connect, Agent: cfg})
	if err != nil {
		return err
	}
	log.Info().Int("agents", len(ids)).Str("first", ids[0]).Dur("took", time.Since(start)).Msg("simulated agents started")
	rctx, cancel := context.WithCancel(ctx)
	go func() {
		defer cancel()
		if f.WaitRegistered(rctx) == nil {
			log.Info().Int("agents", len(ids)).Dur("took", time.Since(start)).Msg("simulated agents registered; Ctrl-C or SIGTERM decommissions them")
		}
	}()
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	if err := f.Shutdown(sctx); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	return nil
}
