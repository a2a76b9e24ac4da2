package agent

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

const testWID = "w1"

// cluster plays the registration and heartbeat services with plain
// subscriptions: it answers and records what an agent sends.
type cluster struct {
	t  *testing.T
	nc *nats.Conn

	mu       sync.Mutex
	regs     []schemas.RegisterWorker
	hbs      []schemas.Heartbeat
	states   []schemas.StateChange
	leaves   []schemas.WorkerLeaving
	regReply func(*schemas.RegisterWorker) *schemas.WorkerRegistered
	hbReply  func(*schemas.Heartbeat) *schemas.Reregister
	// ackBeats answers every other heartbeat with a HeartbeatAck, as a
	// heartbeat service that hears a quorum does.
	ackBeats bool
	stateAck func(*schemas.StateChange) *schemas.StateAck
	// refuseStates answers state reports 503 (and counts them in refused).
	refuseStates bool
	// stateDelay holds every single state report this long before it is
	// taken, one after another (a registration with a backlog).
	stateDelay time.Duration
	// refuseLeave, when set, refuses a leave with this reason (Ack OK false).
	refuseLeave string
	refused     int
	// refuseReg, when set, answers registrations 409 with this reason (a
	// newer instance holds the worker id).
	refuseReg string
	// batches counts the StateChanges requests answered; batchSub serves
	// them (unsubscribe it: a registration from before batches).
	batches  int
	batchSub *nats.Subscription
}

// takeStateLocked records one state report, or refuses it (503).
func (c *cluster) takeStateLocked(req *schemas.StateChange) (*schemas.StateAck, error) {
	if c.refuseStates {
		c.refused++
		return nil, bus.Errorf(bus.CodeUnavailable, "registration is busy")
	}
	c.states = append(c.states, *req)
	if c.stateAck != nil {
		return c.stateAck(req), nil
	}
	return &schemas.StateAck{}, nil
}

// startCluster subscribes a fake cluster on nc.
func startCluster(t *testing.T, nc *nats.Conn) *cluster {
	t.Helper()
	c := &cluster{t: t, nc: nc}
	log := zerolog.Nop()
	ctx := context.Background()
	subs := map[string]nats.MsgHandler{
		bus.WorkerRegister: bus.MsgHandler(ctx, &log, nil, func(_ context.Context, _ bus.Inbound, req *schemas.RegisterWorker) (any, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.regs = append(c.regs, *req)
			if c.refuseReg != "" {
				return nil, bus.Errorf(bus.CodeConflict, "%s", c.refuseReg)
			}
			if c.regReply != nil {
				return c.regReply(req), nil
			}
			return &schemas.WorkerRegistered{WorkerID: req.WorkerID, HeartbeatIntervalMS: 50}, nil
		}),
		bus.WorkerHeartbeat: bus.MsgHandler(ctx, &log, nil, func(_ context.Context, _ bus.Inbound, req *schemas.Heartbeat) (any, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.hbs = append(c.hbs, *req)
			if c.hbReply != nil {
				if rr := c.hbReply(req); rr != nil {
					return rr, nil
				}
			}
			if c.ackBeats {
				return &schemas.HeartbeatAck{WorkerID: req.WorkerID}, nil
			}
			return nil, nil
		}),
		bus.WorkerState: bus.MsgHandler(ctx, &log, nil, func(_ context.Context, _ bus.Inbound, req *schemas.StateChange) (any, error) {
			c.mu.Lock()
			d := c.stateDelay
			c.mu.Unlock()
			time.Sleep(d)
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.takeStateLocked(req)
		}),
		bus.WorkerLeave: bus.MsgHandler(ctx, &log, nil, func(_ context.Context, _ bus.Inbound, req *schemas.WorkerLeaving) (any, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.leaves = append(c.leaves, *req)
			return &schemas.Ack{OK: c.refuseLeave == "", Message: c.refuseLeave}, nil
		}),
	}
	for subj, h := range subs {
		sub, err := nc.Subscribe(subj, h)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	// Reports together, as registration takes them: one process's in
	// order (after one not taken, its later ones are not taken either).
	var err error
	c.batchSub, err = nc.Subscribe(bus.WorkerStates, bus.MsgHandler(ctx, &log, nil, func(_ context.Context, _ bus.Inbound, req *schemas.StateChanges) (any, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.batches++
		out := &schemas.StateAcks{Results: make([]schemas.StateResult, len(req.Reports))}
		held := map[string]bool{}
		for i := range req.Reports {
			id := reportID(req.Reports[i])
			if held[id] {
				out.Results[i] = schemas.StateResult{Code: bus.CodeUnavailable, Error: "held"}
				continue
			}
			ack, err := c.takeStateLocked(&req.Reports[i])
			if err != nil {
				out.Results[i] = schemas.StateResult{Code: bus.ErrorCode(err), Error: err.Error()}
				held[id] = true
				continue
			}
			out.Results[i] = schemas.StateResult{Kill: ack.Kill, Reason: ack.Reason}
		}
		return out, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.batchSub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cluster) set(fn func(c *cluster)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn(c)
}

func (c *cluster) registrations() []schemas.RegisterWorker {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]schemas.RegisterWorker(nil), c.regs...)
}

func (c *cluster) heartbeats() []schemas.Heartbeat {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]schemas.Heartbeat(nil), c.hbs...)
}

// reports returns the state changes recorded for id (a driver id or
// "<appid>.<execid>").
func (c *cluster) reports(id string) []schemas.StateChange {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []schemas.StateChange
	for _, sc := range c.states {
		if reportID(sc) == id {
			out = append(out, sc)
		}
	}
	return out
}

// waitReport polls until id was reported in state and returns that report.
func (c *cluster) waitReport(id, state string) schemas.StateChange {
	c.t.Helper()
	var got schemas.StateChange
	bustest.Eventually(c.t, 15*time.Second, id+" reported "+state, func() bool {
		for _, sc := range c.reports(id) {
			if sc.State == state {
				got = sc
				return true
			}
		}
		return false
	})
	return got
}

// states lists the states reported for id, in order.
func (c *cluster) stateList(id string) []string {
	var out []string
	for _, sc := range c.reports(id) {
		out = append(out, sc.State)
	}
	return out
}

// env is one test's bus, connection and fake cluster.
type env struct {
	srv *bustest.Server
	nc  *nats.Conn
	c   *cluster
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.URL())
	return &env{srv: srv, nc: nc, c: startCluster(t, nc)}
}

// startAgent starts an agent on its own connection, stopped by t.Cleanup.
func startAgent(t *testing.T, url string, mutate func(*Config)) *Service {
	t.Helper()
	cfg := Config{
		Log:               zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
		NATSURL:           url,
		WorkerID:          testWID,
		Host:              "test-host",
		Cores:             4,
		MemoryMB:          2048,
		WorkDir:           t.TempDir(),
		HeartbeatInterval: 50 * time.Millisecond,
		KillGrace:         2 * time.Second,
		RegisterTimeout:   300 * time.Millisecond,
		RelaunchBackoff:   50 * time.Millisecond,
		PingWait:          30 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	if cfg.NC == nil {
		cfg.NC = bustest.Conn(t, url)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// waitRegistered fails the test unless s registers within the timeout.
func waitRegistered(t *testing.T, s *Service) {
	t.Helper()
	select {
	case <-s.Registered():
	case <-time.After(15 * time.Second):
		t.Fatal("agent did not register")
	}
}

// call sends a command to the test worker and decodes the reply.
func call(t *testing.T, nc *nats.Conn, subject string, req, resp any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return bus.Call(ctx, nc, subject, req, resp)
}

// sh is a tiny fake executable: a /bin/sh script.
func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func launchExecutor(t *testing.T, nc *nats.Conn, appID string, execID int, script string) schemas.Ack {
	t.Helper()
	var ack schemas.Ack
	err := call(t, nc, bus.WorkerCmdLaunchSubject(testWID), &schemas.LaunchExecutor{
		AppID: appID, ExecutorID: execID, Command: sh(script), Cores: 1, MemoryMB: 256,
	}, &ack)
	if err != nil {
		t.Fatalf("launch %s.%d: %v", appID, execID, err)
	}
	return ack
}

func launchDriver(t *testing.T, nc *nats.Conn, driverID string, supervise bool, script string) schemas.Ack {
	t.Helper()
	var ack schemas.Ack
	err := call(t, nc, bus.WorkerCmdLaunchDriverSubject(testWID), &schemas.LaunchDriver{
		DriverID: driverID, Command: sh(script), Cores: 1, MemoryMB: 256, Supervise: supervise, Attempt: 1,
	}, &ack)
	if err != nil {
		t.Fatalf("launch driver %s: %v", driverID, err)
	}
	return ack
}

func newAppID() string    { return schemas.NewAppID(time.Now()) }
func newDriverID() string { return schemas.NewDriverID(time.Now()) }

// alive reports whether a process with pid exists (zombies included).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || !errors.Is(err, syscall.ESRCH)
}

// readFile returns a file's content ("" if it does not exist yet).
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

func waitFileContains(t *testing.T, path, want string) {
	t.Helper()
	bustest.Eventually(t, 15*time.Second, path+" to contain "+want, func() bool {
		return strings.Contains(readFile(t, path), want)
	})
}
