package scheduler

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

// arrival is one command seen by a subscriber on the server's side.
type arrival struct {
	at         time.Time
	epoch      uint64
	validUntil time.Time
}

// TestService_Partition_CutLeaderSendsNothingPastAuthority cuts the leading
// scheduler's link (a half-open socket: bustest.Proxy) while it re-sends
// kills every 50ms, lets a standby take over, heals, and checks at a
// subscriber on the server's side that no command with the old epoch was
// sent after the old leader's authority ended, nor after the new leader
// started: zero overlap for commands.
func TestService_Partition_CutLeaderSendsNothingPastAuthority(t *testing.T) {
	c := newCluster(t)
	proxy := bustest.StartProxy(t, c.srv.Addr().String())
	leaderNC, err := bus.Connect(proxy.URL(), bus.ConnectOptions{Name: t.Name() + "-s1", Retry: true, ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(leaderNC.Close)

	var mu sync.Mutex
	var kills []arrival
	log := zerolog.Nop()
	sub, err := c.nc.Subscribe(bus.WorkerCmdKillSubject("w1"), bus.MsgHandler(context.Background(), &log, nil,
		func(_ context.Context, _ bus.Inbound, k *schemas.Kill) (any, error) {
			mu.Lock()
			kills = append(kills, arrival{time.Now(), k.Epoch, k.ValidUntil})
			mu.Unlock()
			return &schemas.Ack{OK: true}, nil // acknowledged, never acted on: re-sent after KillRetry
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	c.worker("w1", 4)
	c.app("app-1", schemas.AppKilled, 0)
	c.create(c.st.Executors, schemas.ExecutorKey("app-1", 0), &schemas.Executor{
		AppID: "app-1", ID: 0, WorkerID: "w1", Cores: 1, MemoryMB: 256, State: schemas.ExecutorRunning,
	})

	fast := func(cfg *Config) { cfg.Tick, cfg.KillRetry = 20*time.Millisecond, 50*time.Millisecond }
	s1 := c.scheduler("s1", func(cfg *Config) { fast(cfg); cfg.NC = leaderNC })
	bustest.Eventually(t, 10*time.Second, "s1 leads", s1.IsLeader)
	s2 := c.scheduler("s2", fast)
	old := s1.Epoch()
	count := func(epoch uint64) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, k := range kills {
			if k.epoch == epoch {
				n++
			}
		}
		return n
	}
	bustest.Eventually(t, 10*time.Second, "kills re-sent by s1", func() bool { return count(old) >= 5 })
	window := s1.el.Timings().AuthorityWindow()

	cutAt := time.Now()
	proxy.Cut()
	var newLeadAt time.Time
	bustest.Eventually(t, 10*time.Second, "s2 leads", func() bool {
		if s2.IsLeader() {
			newLeadAt = time.Now()
			return true
		}
		return false
	})
	bustest.Eventually(t, 10*time.Second, "kills by s2", func() bool { return count(s2.Epoch()) >= 3 })
	// Give the cut-off leader time to notice (old main: a renewal timing
	// out 1–2s after the cut) before its queued bytes are delivered.
	time.Sleep(3 * time.Second)
	proxy.Heal()
	time.Sleep(500 * time.Millisecond)

	mu.Lock()
	defer mu.Unlock()
	var late, afterCut int
	var lastValid time.Time
	for _, k := range kills {
		if k.epoch != old || k.at.Before(cutAt) {
			continue
		}
		afterCut++
		if k.validUntil.IsZero() {
			t.Errorf("kill with epoch %d carries no ValidUntil", old)
			continue
		}
		if k.validUntil.After(lastValid) {
			lastValid = k.validUntil
		}
		if !k.validUntil.Before(newLeadAt) {
			late++
		}
	}
	t.Logf("authority window %s; old-epoch kills delivered after the cut: %d; the last was valid until cut+%s; s2 led at cut+%s",
		window, afterCut, lastValid.Sub(cutAt).Round(time.Millisecond), newLeadAt.Sub(cutAt).Round(time.Millisecond))
	if late > 0 {
		t.Fatalf("%d kills with the old epoch %d were sent by a leader whose authority outlived the new leader's start", late, old)
	}
	if lastValid.Sub(cutAt) > window {
		t.Fatalf("an old-epoch kill was valid until cut+%s, past the authority window %s", lastValid.Sub(cutAt), window)
	}
}

var _ = nats.ErrTimeout
