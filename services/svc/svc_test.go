package svc

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestGroup_StopCancelsWaitsAndRefuses(t *testing.T) {
	g := NewGroup(context.Background())
	var done atomic.Int32
	for i := 0; i < 3; i++ {
		if !g.Go(func(ctx context.Context) { <-ctx.Done(); done.Add(1) }) {
			t.Fatal("Go refused before Stop")
		}
	}
	g.Stop()
	if done.Load() != 3 {
		t.Fatalf("Stop returned with %d of 3 goroutines finished", done.Load())
	}
	if g.Go(func(context.Context) {}) {
		t.Fatal("Go accepted after Stop")
	}
	g.Stop() // idempotent
}

func TestBackoff_GrowsCapsAndJitters(t *testing.T) {
	base, max := 100*time.Millisecond, time.Second
	if d := Backoff(0, base, max, nil); d != base {
		t.Fatalf("attempt 0: %s", d)
	}
	if d := Backoff(3, base, max, nil); d != 800*time.Millisecond {
		t.Fatalf("attempt 3: %s", d)
	}
	if d := Backoff(30, base, max, nil); d != max {
		t.Fatalf("attempt 30: %s, want the cap", d)
	}
	half := func(n int64) int64 { return n - 1 }
	if d := Backoff(30, base, max, half); d < max/2 || d > max {
		t.Fatalf("jittered: %s outside [max/2, max]", d)
	}
}

func TestNewLogger_LevelAndJSON(t *testing.T) {
	var buf bytes.Buffer
	l, err := NewLogger(&buf, "warn")
	if err != nil {
		t.Fatal(err)
	}
	l.Info().Msg("hidden")
	l.Warn().Msg("shown")
	if bytes.Contains(buf.Bytes(), []byte("hidden")) || !bytes.Contains(buf.Bytes(), []byte(`"message":"shown"`)) {
		t.Fatalf("log output: %s", buf.String())
	}
	if _, err := NewLogger(&buf, "loud"); err == nil {
		t.Fatal("bad level accepted")
	}
}

func TestFakeClock_AdvanceFiresDueTimersInOrder(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewFakeClock(start)
	var got []string
	c.AfterFunc(3*time.Second, func() { got = append(got, "3s") })
	c.AfterFunc(time.Second, func() {
		got = append(got, "1s")
		// Armed while firing: due at 1s+1s, inside this Advance.
		c.AfterFunc(time.Second, func() { got = append(got, "1s+1s") })
	})
	stopped := c.AfterFunc(2500*time.Millisecond, func() { got = append(got, "stopped") })
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop: want true once, then false")
	}
	c.Advance(2999 * time.Millisecond)
	if want := []string{"1s", "1s+1s"}; !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	if c.Pending() != 1 || c.Fired() != 2 {
		t.Fatalf("pending %d fired %d, want 1 and 2", c.Pending(), c.Fired())
	}
	if now := c.Now(); !now.Equal(start.Add(2999 * time.Millisecond)) {
		t.Fatalf("Now = %s", now)
	}
	c.Advance(time.Millisecond)
	if want := []string{"1s", "1s+1s", "3s"}; !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
}

func TestRealClock_AfterFunc(t *testing.T) {
	done := make(chan struct{})
	RealClock.AfterFunc(time.Millisecond, func() { close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("real timer did not fire")
	}
	if d := time.Since(RealClock.Now()); d < 0 || d > time.Minute {
		t.Fatalf("RealClock.Now off by %s", d)
	}
}

// calls counts the calls of each index and the most running at once.
type calls struct {
	mu            sync.Mutex
	seen          []int
	running, most int
}

func (c *calls) call(i int) {
	c.mu.Lock()
	c.seen[i]++
	c.running++
	c.most = max(c.most, c.running)
	c.mu.Unlock()
	time.Sleep(time.Millisecond)
	c.mu.Lock()
	c.running--
	c.mu.Unlock()
}

// Parallel calls each index once, never more than limit at once, and
// returns only when every call has.
func TestParallel(t *testing.T) {
	for _, tc := range []struct{ n, limit int }{{0, 4}, {1, 4}, {10, 1}, {100, 8}, {5, 0}, {3, 100}} {
		c := &calls{seen: make([]int, tc.n)}
		Parallel(tc.n, tc.limit, c.call)
		seen, running, most := c.seen, c.running, c.most
		for i, c := range seen {
			if c != 1 {
				t.Fatalf("n=%d limit=%d: index %d called %d times", tc.n, tc.limit, i, c)
			}
		}
		if running != 0 || most > max(tc.limit, 1) {
			t.Fatalf("n=%d limit=%d: %d still running at return, %d at once", tc.n, tc.limit, running, most)
		}
		if tc.n >= 8 && tc.limit >= 8 && most < 2 {
			t.Fatalf("n=%d limit=%d: never more than one at once", tc.n, tc.limit)
		}
	}
}

// A pool's Parallel calls each index once within its limits, on the
// pool's goroutines, and still returns once the group has stopped.
func TestPool_Parallel(t *testing.T) {
	g := NewGroup(context.Background())
	p := NewPool(g, 4)
	cs := &calls{seen: make([]int, 50)}
	var wg sync.WaitGroup
	for c := range 3 { // three callers share the pool's 4 goroutines
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Parallel(len(cs.seen), 2, func(i int) {
				if i%3 == c {
					cs.call(i)
				}
			})
		}()
	}
	wg.Wait()
	seen, most := cs.seen, cs.most
	for i, n := range seen {
		if n != 1 {
			t.Fatalf("index %d done %d times", i, n)
		}
	}
	if most > 4 {
		t.Fatalf("%d at once on a pool of 4", most)
	}
	g.Stop()
	done := make(chan struct{})
	go func() {
		p.Parallel(5, 5, func(int) {})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Parallel on a stopped pool did not return")
	}
}
