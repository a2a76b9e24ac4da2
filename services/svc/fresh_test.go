package svc

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// numberedCalls counts the calls begun and returns each call's number;
// gate, when set, holds every call until it is closed or sent to.
type numberedCalls struct {
	began   atomic.Int64
	running atomic.Int64
	maxRun  atomic.Int64
	gate    chan struct{}
	err     error
}

func (n *numberedCalls) call(ctx context.Context) (int64, error) {
	k := n.began.Add(1)
	r := n.running.Add(1)
	for {
		m := n.maxRun.Load()
		if r <= m || n.maxRun.CompareAndSwap(m, r) {
			break
		}
	}
	defer n.running.Add(-1)
	if n.gate != nil {
		select {
		case <-n.gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return k, n.err
}

// A caller arriving while a call runs must not get that call's answer (it
// may predate the caller's own writes): it waits for the next call, which
// everyone arriving meanwhile shares.
func TestFresh_LateCallersShareTheNextCall(t *testing.T) {
	n := &numberedCalls{gate: make(chan struct{})}
	f := NewFresh(context.Background(), time.Minute, n.call)

	first := make(chan int64)
	go func() {
		v, err := f.Get(context.Background())
		if err != nil {
			t.Error(err)
		}
		first <- v
	}()
	for n.began.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	const late = 50
	var wg sync.WaitGroup
	got := make([]int64, late)
	for i := range late {
		wg.Go(func() {
			v, err := f.Get(context.Background())
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		})
	}
	// Let the late callers queue, then release every call.
	time.Sleep(20 * time.Millisecond)
	close(n.gate)
	if v := <-first; v != 1 {
		t.Fatalf("first caller got call %d, want 1", v)
	}
	wg.Wait()
	for i, v := range got {
		if v != 2 {
			t.Fatalf("late caller %d got call %d, want 2 (began after it asked)", i, v)
		}
	}
	if b := n.began.Load(); b != 2 {
		t.Fatalf("%d calls for 51 callers, want 2", b)
	}
}

// Under a storm of callers every answer comes from a call that began after
// its caller asked, and calls never overlap.
func TestFresh_NeverOlderThanTheRequest(t *testing.T) {
	n := &numberedCalls{}
	f := NewFresh(context.Background(), time.Minute, func(ctx context.Context) (int64, error) {
		v, err := n.call(ctx) // counted as begun, then slow
		time.Sleep(100 * time.Microsecond)
		return v, err
	})
	var wg sync.WaitGroup
	var stale atomic.Int64
	for range 64 {
		wg.Go(func() {
			for range 50 {
				before := n.began.Load()
				v, err := f.Get(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				if v <= before {
					stale.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if s := stale.Load(); s != 0 {
		t.Fatalf("%d answers came from a call begun before their request", s)
	}
	if m := n.maxRun.Load(); m != 1 {
		t.Fatalf("%d calls ran at once, want 1", m)
	}
	if b := n.began.Load(); b >= 64*50 {
		t.Fatalf("%d calls for %d requests: nothing shared", b, 64*50)
	}
}

// A caller that gives up gets its context's error; the call goes on for
// the others, and its error reaches every caller that waited for it.
func TestFresh_CallerGivesUp_CallErrorShared(t *testing.T) {
	boom := errors.New("no quorum")
	n := &numberedCalls{gate: make(chan struct{}), err: boom}
	f := NewFresh(context.Background(), time.Minute, n.call)

	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error)
	go func() {
		_, err := f.Get(ctx)
		gaveUp <- err
	}()
	for n.began.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	stayed := make(chan error)
	go func() {
		_, err := f.Get(context.Background())
		stayed <- err
	}()
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("caller that gave up got %v, want context.Canceled", err)
	}
	close(n.gate)
	if err := <-stayed; !errors.Is(err, boom) {
		t.Fatalf("caller got %v, want the call's error", err)
	}
	// Idle again: the next caller starts a call of its own.
	if _, err := f.Get(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	if b := n.began.Load(); b != 3 {
		t.Fatalf("%d calls, want 3", b)
	}
}

// A call is bounded by the timeout, not by a caller's context.
func TestFresh_CallTimesOut(t *testing.T) {
	n := &numberedCalls{gate: make(chan struct{})}
	f := NewFresh(context.Background(), 20*time.Millisecond, n.call)
	if _, err := f.Get(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the call's deadline", err)
	}
}
