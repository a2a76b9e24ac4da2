package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

func TestNew_Defaults(t *testing.T) {
	t.Chdir(t.TempDir()) // the relative work dir below, and its worker-id file
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.URL())
	hostname, _ := os.Hostname()
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
		check   func(t *testing.T, s *Service)
	}{
		{
			name: "minimal",
			cfg:  Config{NC: nc, NATSURL: srv.URL(), WorkDir: "rel-work"},
			check: func(t *testing.T, s *Service) {
				if !strings.HasPrefix(s.WorkerID(), schemas.SanitizeID(hostname)+"-") {
					t.Errorf("worker id %q, want the sanitized hostname %q plus a suffix", s.WorkerID(), schemas.SanitizeID(hostname))
				}
				if kept, _ := os.ReadFile(filepath.Join(s.cfg.WorkDir, WorkerIDFile)); strings.TrimSpace(string(kept)) != s.WorkerID() {
					t.Errorf("%s holds %q, want %q", WorkerIDFile, kept, s.WorkerID())
				}
				if s.cfg.Host != hostname || s.cfg.Cores != runtime.NumCPU() || s.cfg.MemoryMB < minMemoryMB {
					t.Errorf("host %q cores %d memory %d", s.cfg.Host, s.cfg.Cores, s.cfg.MemoryMB)
				}
				if !filepath.IsAbs(s.cfg.WorkDir) || s.cfg.HeartbeatInterval != time.Second ||
					s.cfg.KillGrace != 5*time.Second || s.cfg.RegisterTimeout != 2*time.Second {
					t.Errorf("defaults: %+v", s.cfg)
				}
				if s.Instance() == "" {
					t.Error("no instance")
				}
			},
		},
		{name: "no connection", cfg: Config{NATSURL: "nats://x"}, wantErr: "NC is required"},
		{name: "no url", cfg: Config{NC: nc}, wantErr: "NATSURL is required"},
		{name: "bad worker id", cfg: Config{NC: nc, NATSURL: "nats://x", WorkerID: "a.b"}, wantErr: "worker id"},
		{name: "negative cores", cfg: Config{NC: nc, NATSURL: "nats://x", Cores: -1}, wantErr: "cores"},
		{name: "negative grace", cfg: Config{NC: nc, NATSURL: "nats://x", KillGrace: -time.Second}, wantErr: "KillGrace"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s)
		})
	}
}

func TestTotalMemoryMB_Parse(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "meminfo")
	if err := os.WriteFile(p, []byte("MemTotal:       16303656 kB\nMemFree:         1234 kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := totalMemoryMB(p)
	if err != nil || got != 16303656/1024 {
		t.Fatalf("got %d %v", got, err)
	}
	if _, err := totalMemoryMB(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("want an error for a missing file")
	}
}

func TestService_Start_RetriesUntilResponderAppears(t *testing.T) {
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.URL())
	// A silent listener sees the attempts without answering them.
	var attempts atomic.Int32
	silent, err := nc.Subscribe(bus.WorkerRegister, func(*nats.Msg) { attempts.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	s := startAgent(t, srv.URL(), nil)
	bustest.Eventually(t, 15*time.Second, "two registration attempts", func() bool { return attempts.Load() >= 2 })
	select {
	case <-s.Registered():
		t.Fatal("registered without an answer")
	default:
	}
	_ = silent.Unsubscribe()

	c := startCluster(t, nc)
	waitRegistered(t, s)
	regs := c.registrations()
	r := regs[len(regs)-1]
	if r.WorkerID != testWID || r.Instance != s.Instance() || r.Host != "test-host" ||
		r.Cores != 4 || r.MemoryMB != 2048 || r.WorkDir == "" {
		t.Fatalf("registration: %+v", r)
	}
}

func TestService_Register_DuplicateIsAccepted(t *testing.T) {
	e := newEnv(t)
	e.c.set(func(c *cluster) {
		c.regReply = func(req *schemas.RegisterWorker) *schemas.WorkerRegistered {
			return &schemas.WorkerRegistered{WorkerID: req.WorkerID, Duplicate: true, HeartbeatIntervalMS: 50, Epoch: 9}
		}
	})
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	// Still alive and heartbeating, and the reply's epoch is remembered.
	bustest.Eventually(t, 15*time.Second, "heartbeats after a duplicate", func() bool { return len(e.c.heartbeats()) >= 2 })
	if s.Epoch() != 9 {
		t.Fatalf("epoch %d, want 9 from the registration reply", s.Epoch())
	}
}

func TestService_Heartbeat_Flows(t *testing.T) {
	e := newEnv(t)
	// A long configured interval: the reply's 50ms must override it.
	s := startAgent(t, e.srv.URL(), func(c *Config) { c.HeartbeatInterval = time.Hour })
	waitRegistered(t, s)
	bustest.Eventually(t, 15*time.Second, "three heartbeats", func() bool { return len(e.c.heartbeats()) >= 3 })
	hbs := e.c.heartbeats()
	for i, hb := range hbs {
		if hb.WorkerID != testWID || hb.Instance != s.Instance() {
			t.Fatalf("heartbeat %d: %+v", i, hb)
		}
		if i > 0 && hb.Seq <= hbs[i-1].Seq {
			t.Fatalf("heartbeat seq not increasing: %d then %d", hbs[i-1].Seq, hb.Seq)
		}
	}
}

func TestService_Heartbeat_ReregisterReplyRegistersAgain(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	app := newAppID()
	launchExecutor(t, e.nc, app, 0, "sleep 30")
	key := schemas.ExecutorKey(app, 0)
	running := e.c.waitReport(key, "RUNNING")

	// The cluster forgot the worker: it asks once to register again, and
	// answers that registration with the executor to kill (replaced).
	var asked atomic.Bool
	e.c.set(func(c *cluster) {
		c.hbReply = func(hb *schemas.Heartbeat) *schemas.Reregister {
			if asked.CompareAndSwap(false, true) {
				return &schemas.Reregister{WorkerID: hb.WorkerID, Reason: "unknown worker"}
			}
			return nil
		}
		c.regReply = func(req *schemas.RegisterWorker) *schemas.WorkerRegistered {
			return &schemas.WorkerRegistered{WorkerID: req.WorkerID, HeartbeatIntervalMS: 50, KillExecutors: []string{key}}
		}
	})
	bustest.Eventually(t, 15*time.Second, "a second registration", func() bool { return len(e.c.registrations()) >= 2 })
	second := e.c.registrations()[1]
	if len(second.Executors) != 1 || second.Executors[0].AppID != app || second.Executors[0].PID != running.PID ||
		second.Executors[0].State != schemas.ExecutorRunning {
		t.Fatalf("re-registration does not list the running executor: %+v", second.Executors)
	}
	e.c.waitReport(key, "KILLED")
	if alive(running.PID) {
		t.Fatalf("pid %d still alive after the registration reply asked to kill it", running.PID)
	}
}

func TestService_Register_AgainAfterBusRestart(t *testing.T) {
	srv := bustest.Start(t)
	dir, port := srv.Dir, srv.Port()
	nc := bustest.Conn(t, srv.URL())
	c := startCluster(t, nc)
	s := startAgent(t, srv.URL(), nil)
	waitRegistered(t, s)
	before := len(c.registrations())

	srv.Stop()
	srv2 := bustest.StartIn(t, dir, port)
	if srv2.Port() != port {
		t.Fatalf("restarted on port %d, want %d", srv2.Port(), port)
	}
	bustest.Eventually(t, 20*time.Second, "a registration after the restart", func() bool {
		return len(c.registrations()) > before
	})
	n := len(c.heartbeats())
	bustest.Eventually(t, 15*time.Second, "heartbeats after the restart", func() bool { return len(c.heartbeats()) > n })
}

func TestService_Shutdown_LeavesAndKillsChildren(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	app := newAppID()
	launchExecutor(t, e.nc, app, 1, "sleep 30")
	pid := e.c.waitReport(schemas.ExecutorKey(app, 1), "RUNNING").PID

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
	e.c.mu.Lock()
	leaves := append([]schemas.WorkerLeaving(nil), e.c.leaves...)
	e.c.mu.Unlock()
	if len(leaves) != 1 || leaves[0].WorkerID != testWID || leaves[0].Instance != s.Instance() {
		t.Fatalf("leaves: %+v", leaves)
	}
	if alive(pid) {
		t.Fatalf("child %d survived Shutdown", pid)
	}
}

// TestService_Decommission_LeavesAfterItsReports: a self-draining agent
// whose executors are all gone leaves only once the cluster acknowledged
// their reports. Leaving first had registration mark the worker
// DECOMMISSIONED before the last KILLED report, and that executor LOST.
func TestService_Decommission_LeavesAfterItsReports(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	log := zerolog.Nop()
	drains := 0
	sub, err := e.nc.Subscribe(bus.WorkerDrainSubject(testWID), bus.MsgHandler(context.Background(), &log, nil,
		func(_ context.Context, _ bus.Inbound, req *schemas.DrainRequest) (any, error) {
			e.c.mu.Lock()
			drains++
			e.c.mu.Unlock()
			return &schemas.Ack{OK: true}, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	app := newAppID()
	key := schemas.ExecutorKey(app, 0)
	launchExecutor(t, e.nc, app, 0, "sleep 0.3")
	e.c.waitReport(key, "RUNNING")
	// Registration stops taking reports: the executor's end stays queued.
	e.c.set(func(c *cluster) { c.refuseStates = true })
	done := make(chan error, 1)
	go func() { done <- s.Decommission(context.Background(), 30*time.Second) }()
	bustest.Eventually(t, 15*time.Second, "the executor ended, its report queued", func() bool {
		s.mu.Lock()
		n := len(s.executors)
		s.mu.Unlock()
		return n == 0 && s.reports.pending() == 1
	})
	time.Sleep(time.Second) // ten of waitEmpty's checks
	e.c.mu.Lock()
	left, asked := len(e.c.leaves), drains
	e.c.mu.Unlock()
	if asked != 1 {
		t.Fatalf("%d drain requests, want 1", asked)
	}
	if left != 0 {
		t.Fatal("the agent left with its executor's end unreported")
	}
	e.c.set(func(c *cluster) { c.refuseStates = false })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("decommission: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not leave once its report was taken")
	}
	if got := e.c.stateList(key); strings.Join(got, ",") != "RUNNING,EXITED" {
		t.Fatalf("reports %v, want RUNNING then EXITED before the leave", got)
	}
	e.c.mu.Lock()
	left = len(e.c.leaves)
	e.c.mu.Unlock()
	if left != 1 {
		t.Fatalf("%d leaves, want 1", left)
	}
}

// A leave the cluster refuses is an error for the caller (`stoker agent`
// exits non-zero), not a silent success; the agent stops all the same.
func TestService_Shutdown_RefusedLeaveIsAnError(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	e.c.mu.Lock()
	e.c.refuseLeave = "worker " + testWID + " is registered by another agent instance"
	e.c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.Shutdown(ctx)
	if !errors.Is(err, bus.ErrRefused) || !strings.Contains(err.Error(), "another agent instance") {
		t.Fatalf("shutdown: want the refusal, got %v", err)
	}
}
