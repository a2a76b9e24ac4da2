package registration

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Every caller returns after a write covering its id ended, writes of one
// app never overlap, and callers arriving during a write share the next.
func TestResets_JoinedWritesCoverEveryID(t *testing.T) {
	var r resets
	const apps, callers = 3, 200
	var (
		mu       sync.Mutex
		written  = map[string]int{} // app → highest upTo whose write ended
		inWrite  [apps]atomic.Int32
		writes   atomic.Int32
		overlaps atomic.Int32
	)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := i % apps
			app, id := fmt.Sprint("app-", a), i
			err := r.do(app, id, func(upTo int) error {
				if inWrite[a].Add(1) != 1 {
					overlaps.Add(1)
				}
				writes.Add(1)
				time.Sleep(time.Millisecond)
				mu.Lock()
				written[app] = max(written[app], upTo)
				mu.Unlock()
				inWrite[a].Add(-1)
				return nil
			})
			if err != nil {
				t.Errorf("do(%s, %d): %v", app, id, err)
			}
			mu.Lock()
			got := written[app]
			mu.Unlock()
			if got < id {
				t.Errorf("do(%s, %d) returned before a write covered it (highest written %d)", app, id, got)
			}
		}()
	}
	wg.Wait()
	if n := overlaps.Load(); n != 0 {
		t.Errorf("%d writes overlapped another of the same app", n)
	}
	if n := writes.Load(); n >= callers {
		t.Errorf("%d writes for %d callers: none joined", n, callers)
	}
	t.Logf("%d writes for %d resets", writes.Load(), callers)
	if len(r.pending) != 0 || len(r.writing) != 0 {
		t.Errorf("left behind: pending %v, writing %v", r.pending, r.writing)
	}
}

// A failed write's error reaches every caller it covered; the next write
// is made afresh.
func TestResets_ErrorReachesTheJoinedCallers(t *testing.T) {
	var r resets
	boom := errors.New("boom")
	started, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- r.do("a", 1, func(int) error { close(started); <-release; return nil })
	}()
	<-started
	// Two callers join the next write while the first is under way.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	ups := make(chan int, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.do("a", 5+i, func(upTo int) error { ups <- upTo; return boom })
		}()
	}
	for {
		r.mu.Lock()
		b := r.pending["a"]
		full := b != nil && b.upTo == 6
		r.mu.Unlock()
		if full {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatalf("first write: %v", err)
	}
	for i, err := range errs {
		if !errors.Is(err, boom) {
			t.Errorf("caller %d: err %v, want boom", i, err)
		}
	}
	if len(ups) != 1 || <-ups != 6 {
		t.Errorf("the joined callers made %d writes, want one up to 6", len(ups)+0)
	}
	if err := r.do("a", 7, func(int) error { return nil }); err != nil {
		t.Errorf("a write after a failed one: %v", err)
	}
}
