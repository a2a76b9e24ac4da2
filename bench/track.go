package bench

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// tracker follows stoker-executors with a KV watch: what is RUNNING, per
// app and in total, as persisted by the cluster.
type tracker struct {
	stop func()

	mu      sync.Mutex
	state   map[string]tracked // key → last record
	running map[string]int     // app → RUNNING executors
	total   int                // RUNNING executors
	// onWorker is RUNNING executors by the worker their record names.
	onWorker map[string]int
	created  map[string]int // app → executor records ever created
	waiters  []*waiter
	// seenAt and runningAt are when the watch delivered each key's first
	// record and its first RUNNING one: the stages of a placement.
	seenAt, runningAt map[string]time.Time
}

type waiter struct {
	app  string // "" total
	n    int
	done chan struct{}
	// off, when set, are workers that must have no RUNNING executor too.
	off map[string]bool
}

func newTracker(ctx context.Context, nc *nats.Conn) (*tracker, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	st, err := bus.OpenStore(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("open the store: %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	w, err := st.Executors.WatchAll(wctx, jetstream.IgnoreDeletes())
	if err != nil {
		cancel()
		return nil, err
	}
	t := &tracker{state: map[string]tracked{}, running: map[string]int{}, created: map[string]int{}, onWorker: map[string]int{},
		seenAt: map[string]time.Time{}, runningAt: map[string]time.Time{}}
	t.stop = func() { cancel(); _ = w.Stop() }
	ready := make(chan struct{})
	go func() {
		initial := true
		for e := range w.Updates() {
			if e == nil {
				if initial {
					initial = false
					close(ready)
				}
				continue
			}
			if x, err := decodeTracked(e.Value()); err == nil {
				t.update(x)
			}
		}
	}()
	select {
	case <-ready:
	case <-ctx.Done():
		t.stop()
		return nil, ctx.Err()
	}
	return t, nil
}

// tracked is what the tracker reads of an executor record: the bench
// process watches every record, and decoding whole records (times, the
// resources) was a tenth of its CPU, counted with the simulated agents'.
type tracked struct {
	AppID    string                `json:"app_id"`
	ID       int                   `json:"id"`
	WorkerID string                `json:"worker_id"`
	State    schemas.ExecutorState `json:"state"`
}

func decodeTracked(data []byte) (tracked, error) {
	var x tracked
	err := bus.DecodeRecord(data, &x)
	return x, err
}

func (t *tracker) update(x tracked) {
	key := schemas.ExecutorKey(x.AppID, x.ID)
	t.mu.Lock()
	defer t.mu.Unlock()
	old, seen := t.state[key]
	at := time.Now()
	if !seen {
		t.created[x.AppID]++
		t.seenAt[key] = at
	}
	if _, ok := t.runningAt[key]; !ok && x.State == schemas.ExecutorRunning {
		t.runningAt[key] = at
	}
	if seen && old.State == schemas.ExecutorRunning {
		t.running[x.AppID]--
		t.onWorker[old.WorkerID]--
		t.total--
	}
	if x.State == schemas.ExecutorRunning {
		t.running[x.AppID]++
		t.onWorker[x.WorkerID]++
		t.total++
	}
	t.state[key] = x
	kept := t.waiters[:0]
	for _, w := range t.waiters {
		if t.reachedLocked(w) {
			close(w.done)
			continue
		}
		kept = append(kept, w)
	}
	t.waiters = kept
}

func (t *tracker) reachedLocked(w *waiter) bool {
	for wid := range w.off {
		if t.onWorker[wid] > 0 {
			return false
		}
	}
	if w.app == "" {
		return t.total == w.n
	}
	return t.running[w.app] == w.n
}

// wait returns a channel closed once app ("" every app) has n executors RUNNING.
func (t *tracker) wait(app string, n int) <-chan struct{} { return t.waitOff(app, n, nil) }

// waitOff is wait, and none RUNNING on the workers off.
func (t *tracker) waitOff(app string, n int, off map[string]bool) <-chan struct{} {
	w := &waiter{app: app, n: n, done: make(chan struct{}), off: off}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.reachedLocked(w) {
		close(w.done)
	} else {
		t.waiters = append(t.waiters, w)
	}
	return w.done
}

// counts are the RUNNING executors of app and in total, and the records
// ever created for app.
func (t *tracker) counts(app string) (running, total, created int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.running[app], t.total, t.created[app]
}

// runningKeys are the keys of RUNNING executors, with their worker.
func (t *tracker) runningKeys() map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]string, t.total)
	for k, x := range t.state {
		if x.State == schemas.ExecutorRunning {
			out[k] = x.WorkerID
		}
	}
	return out
}

// stages times the executors first seen after start: when the last
// record was created, and the median and largest time from a record's
// creation to its RUNNING (the launch and the agent's report).
func (t *tracker) stages(start time.Time) (lastCreate, createToRunP50, createToRunMax time.Duration, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var lags []time.Duration
	for k, at := range t.seenAt {
		if at.Before(start) {
			continue
		}
		lastCreate = max(lastCreate, at.Sub(start))
		if r, ok := t.runningAt[k]; ok {
			lags = append(lags, r.Sub(at))
		}
	}
	if len(lags) == 0 {
		return lastCreate, 0, 0, 0
	}
	slices.Sort(lags)
	return lastCreate, lags[len(lags)/2], lags[len(lags)-1], len(lags)
}

// shortfall says where the executors that did not reach RUNNING are: the
// records by state, and the apps short of their count (want: app → count),
// at most five of them. For a failed check's message: "lost" alone cannot
// tell a record never created from one still LAUNCHING or one FAILED.
func (t *tracker) shortfall(want map[string]int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	byState := map[schemas.ExecutorState]int{}
	for _, x := range t.state {
		byState[x.State]++
	}
	states := slices.Sorted(maps.Keys(byState))
	var b strings.Builder
	b.WriteString("records by state:")
	for _, s := range states {
		fmt.Fprintf(&b, " %s %d", s, byState[s])
	}
	apps := slices.Sorted(maps.Keys(want))
	short := 0
	for _, a := range apps {
		if t.running[a] >= want[a] {
			continue
		}
		if short++; short > 5 {
			b.WriteString("; …")
			break
		}
		fmt.Fprintf(&b, "; app %s: %d of %d RUNNING, %d records created", a, t.running[a], want[a], t.created[a])
	}
	return b.String()
}
