package tests

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// kvMirror follows a bucket into a map, for benchmarks that poll state
// every millisecond or two without a CLI process per look.
type kvMirror[T any] struct {
	mu sync.Mutex
	m  map[string]*T
}

func mirrorBucket[T any](tb testing.TB, kv jetstream.KeyValue) *kvMirror[T] {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	w, err := kv.WatchAll(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	m := &kvMirror[T]{m: map[string]*T{}}
	go func() {
		_ = bus.Follow(ctx, w, func(e jetstream.KeyValueEntry) {
			m.mu.Lock()
			defer m.mu.Unlock()
			if bus.Deleted(e) {
				delete(m.m, e.Key())
				return
			}
			v := new(T)
			if bus.DecodeRecord(e.Value(), v) == nil {
				m.m[e.Key()] = v
			}
		}, nil)
	}()
	return m
}

func (m *kvMirror[T]) each(fn func(key string, v *T)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range m.m {
		fn(k, v)
	}
}

// BenchmarkAgentKill SIGKILLs an agent that runs one of an app's two
// executors, b.N times, with the default liveness (heartbeat 1 s, worker
// timeout 5 s), and reports the time from the kill to the worker DEAD and
// to the app running two executors again, both elsewhere: "events" (the
// heartbeat service acts on the bus's closed-connection event, grace
// 600 ms) and "beats-only" (the 5 s timeout). Run:
// go test ./tests -run '^$' -bench AgentKill -benchtime 30x
func BenchmarkAgentKill(b *testing.B) {
	for _, mode := range []struct {
		name string
		args []string
	}{{"events", nil}, {"beats-only", []string{"--beats-only"}}} {
		b.Run(mode.name, func(b *testing.B) {
			c := NewCluster(b, ClusterOptions{WorkerTimeout: 5 * time.Second, HeartbeatInterval: time.Second})
			c.StartService("registration", "--heartbeat-interval", c.hb, "--worker-timeout", c.timeout)
			c.StartService("heartbeat", append([]string{"--heartbeat-interval", c.hb, "--worker-timeout", c.timeout}, mode.args...)...)
			c.StartService("recovery")
			c.StartService("scheduler", mode.args...)
			agents := map[string]*Proc{}
			for _, id := range []string{"a", "b", "c"} {
				agents[id] = c.StartAgent(id, 1, "1g")
			}
			st := c.Store()
			workers := mirrorBucket[schemas.Worker](b, st.Workers)
			execs := mirrorBucket[schemas.Executor](b, st.Executors)
			alive := func(id string) bool {
				ok := false
				workers.each(func(k string, w *schemas.Worker) { ok = ok || (k == id && w.State == schemas.WorkerAlive) })
				return ok
			}
			// running lists the workers of the app's RUNNING executors.
			running := func(app string) []string {
				var on []string
				execs.each(func(_ string, e *schemas.Executor) {
					if e.AppID == app && e.State == schemas.ExecutorRunning {
						on = append(on, e.WorkerID)
					}
				})
				return on
			}
			c.Eventually(30*time.Second, "three agents ALIVE", func() bool { return alive("a") && alive("b") && alive("c") })
			app := c.registerApp("bench", 1, 2, "sleep", "3600")
			c.Eventually(30*time.Second, "two executors RUNNING", func() bool { return len(running(app)) == 2 })
			var dead, replaced []time.Duration
			for i := 0; i < b.N; i++ {
				victim := running(app)[0]
				killed := time.Now()
				agents[victim].Signal(syscall.SIGKILL)
				var tDead time.Duration
				c.Eventually(30*time.Second, fmt.Sprintf("%s DEAD and two executors RUNNING elsewhere", victim), func() bool {
					if tDead == 0 && !alive(victim) {
						tDead = time.Since(killed)
					}
					on := running(app)
					if tDead == 0 || len(on) != 2 {
						time.Sleep(time.Millisecond)
						return false
					}
					for _, w := range on {
						if w == victim {
							return false
						}
					}
					return true
				})
				replaced = append(replaced, time.Since(killed))
				dead = append(dead, tDead)
				_ = agents[victim].Wait(5 * time.Second)
				agents[victim] = c.StartAgent(victim, 1, "1g")
				c.Eventually(30*time.Second, victim+" ALIVE again", func() bool { return alive(victim) })
			}
			reportDurations(b, "agent kill → DEAD", dead, "dead-")
			reportDurations(b, "agent kill → executor replaced", replaced, "replaced-")
		})
	}
}
