package bus_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
)

// deadWatcher is a watch that delivers nothing and never closes: what
// nats.go left after a bus restart when it did not recreate an ordered
// consumer. closed makes it one whose channel is closed instead.
type deadWatcher struct {
	ch      chan jetstream.KeyValueEntry
	stopped chan struct{}
	once    sync.Once
}

func newDeadWatcher(closed bool) *deadWatcher {
	w := &deadWatcher{ch: make(chan jetstream.KeyValueEntry), stopped: make(chan struct{})}
	if closed {
		close(w.ch)
	}
	return w
}

func (w *deadWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.ch }
func (w *deadWatcher) Stop() error                             { w.once.Do(func() { close(w.stopped) }); return nil }

// TestKeeper_ReplacesAStalledOrClosedWatch starts a Keeper on a watch that
// never delivers (or is closed) on a real bucket: it must notice, watch
// again, deliver every key's latest entry (a key purged meanwhile is
// removed: its marker is delivered), say it caught up, and keep following.
func TestKeeper_ReplacesAStalledOrClosedWatch(t *testing.T) {
	for _, closed := range []bool{false, true} {
		name := map[bool]string{false: "stalled", true: "closed"}[closed]
		t.Run(name, func(t *testing.T) {
			s := bustest.Start(t)
			nc := bustest.Conn(t, s.URL())
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "keep"})
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"a", "b", "gone"} {
				if _, err := kv.PutString(ctx, k, "1"); err != nil {
					t.Fatal(err)
				}
			}
			var mu sync.Mutex
			vals := map[string]string{}
			caught := 0
			lost := 0
			k := bus.Keeper{KV: kv, Log: zerolog.Nop(), StallAfter: 100 * time.Millisecond, RetryWait: 20 * time.Millisecond,
				Apply: func(e jetstream.KeyValueEntry) {
					mu.Lock()
					defer mu.Unlock()
					if bus.Deleted(e) {
						delete(vals, e.Key())
						return
					}
					vals[e.Key()] = string(e.Value())
				},
				CaughtUp: func() { mu.Lock(); caught++; mu.Unlock() },
				Lost:     func() { mu.Lock(); lost++; mu.Unlock() },
			}
			dead := newDeadWatcher(closed)
			done := make(chan struct{})
			go func() { defer close(done); k.Run(ctx, dead, true) }()
			// Purged and written while the dead watch "ran": a replacement
			// must deliver both.
			if err := kv.Purge(ctx, "gone"); err != nil {
				t.Fatal(err)
			}
			if _, err := kv.PutString(ctx, "a", "2"); err != nil {
				t.Fatal(err)
			}
			bustest.Eventually(t, 10*time.Second, "the keeper caught up on a new watch", func() bool {
				mu.Lock()
				defer mu.Unlock()
				_, gone := vals["gone"]
				return caught == 1 && vals["a"] == "2" && vals["b"] == "1" && !gone
			})
			if _, err := kv.PutString(ctx, "c", "3"); err != nil {
				t.Fatal(err)
			}
			bustest.Eventually(t, 10*time.Second, "a write after the re-watch followed", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return vals["c"] == "3"
			})
			select {
			case <-dead.stopped:
			default:
				t.Fatal("the dead watch was never stopped")
			}
			mu.Lock()
			if lost != 1 {
				t.Fatalf("%d lost watches, want 1", lost)
			}
			mu.Unlock()
			// A healthy watch that is merely idle is not replaced.
			time.Sleep(500 * time.Millisecond)
			mu.Lock()
			if lost != 1 || caught != 1 {
				t.Fatalf("an idle, healthy watch was replaced: %d lost, %d catch-ups", lost, caught)
			}
			mu.Unlock()
			cancel()
			<-done
		})
	}
}
