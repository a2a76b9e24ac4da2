package heartbeat

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// newSecureEnv is newEnv on a bus in operator mode, where the server's
// DISCONNECT events reach the heartbeat role (bus.ConnClosed).
func newSecureEnv(t *testing.T) *env {
	t.Helper()
	srv := bustest.StartSecure(t)
	nc := srv.ConnAs(t, auth.RoleAdmin, "admin")
	return &env{srv: srv, nc: nc, st: bustest.Store(t, nc), clock: svc.NewFakeClock(time.Now().UTC())}
}

func (e *env) startSecure(t *testing.T, cfg Config) *Service {
	t.Helper()
	cfg.NC, cfg.ID, cfg.Log, cfg.Clock = e.srv.ConnAs(t, auth.RoleHeartbeat, "hb-1"), "hb-1", zerolog.Nop(), e.clock
	cfg.WorkerTimeout, cfg.HeartbeatInterval = 10*time.Second, testInterval
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func closedSeen(s *Service, wid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.workers[wid]
	return w != nil && !w.closedAt.IsZero()
}

// An agent whose connection closes is DEAD after the grace, long before
// its 10 s timeout; one that beats again within the grace stays ALIVE with
// its full timeout; with BeatsOnly the event changes nothing.
func TestService_Worker_ConnClosed(t *testing.T) {
	const grace = 200 * time.Millisecond
	tests := []struct {
		name      string
		beatsOnly bool
		reconnect bool
		wantDead  bool
	}{
		{"closed: DEAD after the grace", false, false, true},
		{"reconnected within the grace: nothing changes", false, true, false},
		{"beats only: the event is ignored", true, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newSecureEnv(t)
			s := e.startSecure(t, Config{DisconnectGrace: grace, BeatsOnly: tc.beatsOnly})
			put(t, e.st.Workers, "w1", alive(e.clock.Now(), "w1", "i1"))
			bustest.Eventually(t, 5*time.Second, "watcher sees w1", func() bool { return seen(s, "w1", schemas.WorkerAlive) })
			// Another agent's closed connection is not w1's.
			e.srv.ConnAs(t, auth.RoleAgent, "w2").Close()
			agent := e.srv.ConnAs(t, auth.RoleAgent, "w1")
			agent.Close()
			if tc.beatsOnly {
				// The service sees no event; wait for one a watcher of ours sees.
				time.Sleep(100 * time.Millisecond)
				if closedSeen(s, "w1") {
					t.Fatal("a beats-only service acted on a connection event")
				}
			} else {
				bustest.Eventually(t, 5*time.Second, "service sees w1's connection closed", func() bool { return closedSeen(s, "w1") })
			}
			if tc.reconnect {
				g := gen(s, "w1", false)
				beat(t, e.srv.ConnAs(t, auth.RoleAgent, "w1"), "w1", "i1", "_INBOX_agent_w1.x")
				bustest.Eventually(t, 5*time.Second, "heartbeat handled", func() bool { return gen(s, "w1", false) > g })
			}
			e.clock.Advance(grace - time.Millisecond)
			checkNotFired(t, e, 0, "just before the grace")
			e.clock.Advance(time.Millisecond)
			if !tc.wantDead {
				checkNotFired(t, e, 0, "at the grace")
				if st := workerState(t, e, "w1"); st != schemas.WorkerAlive {
					t.Fatalf("w1 is %s", st)
				}
				return
			}
			bustest.Eventually(t, 5*time.Second, "w1 DEAD", func() bool { return workerState(t, e, "w1") == schemas.WorkerDead })
			w, _, _ := bus.Get[schemas.Worker](ctxT(t), e.st.Workers, "w1")
			if !strings.Contains(w.Reason, "connection closed") {
				t.Fatalf("reason %q", w.Reason)
			}
		})
	}
}

func TestNew_DisconnectGrace(t *testing.T) {
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.URL())
	for _, tc := range []struct {
		timeout, grace, want time.Duration
		ok                   bool
	}{
		{5 * time.Second, 0, DefaultDisconnectGrace, true},
		{time.Second, 0, 500 * time.Millisecond, true},
		{time.Second, 300 * time.Millisecond, 300 * time.Millisecond, true},
		{time.Second, time.Second, 0, false},
		{time.Second, -time.Millisecond, 0, false},
	} {
		s, err := New(Config{NC: nc, WorkerTimeout: tc.timeout, HeartbeatInterval: 100 * time.Millisecond, DisconnectGrace: tc.grace})
		if (err == nil) != tc.ok {
			t.Fatalf("timeout %s grace %s: err %v, want ok=%v", tc.timeout, tc.grace, err, tc.ok)
		}
		if err == nil && s.cfg.DisconnectGrace != tc.want {
			t.Fatalf("timeout %s grace %s: got %s, want %s", tc.timeout, tc.grace, s.cfg.DisconnectGrace, tc.want)
		}
	}
}
