package scheduler

import (
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// TestFlowWindow_Rules: slow start from the floor, a cut in half per round
// trip for a late sample, growth only while the window is what limits, an
// eighth at a time after the first cut, and the bounds.
func TestFlowWindow_Rules(t *testing.T) {
	t0 := time.Unix(0, 0)
	fast, slow := 100*time.Millisecond, 3*time.Second
	w := newFlowWindow(4, 64, time.Second)
	if w.size != 4 {
		t.Fatalf("starts at %d, want the floor 4", w.size)
	}
	// Slow start: one more per sample in time while the window is full.
	for i := 0; i < 4; i++ {
		w.observe(t0, fast, w.size)
	}
	if w.size != 8 {
		t.Fatalf("after a window of samples in time: %d, want 8 (doubled)", w.size)
	}
	// Not what limits the passes (under half of it in flight): no growth.
	if w.observe(t0, fast, 3) || w.size != 8 {
		t.Fatalf("grew to %d with 3 of 8 in flight", w.size)
	}
	for w.size < 40 {
		w.observe(t0, fast, w.size)
	}
	// A late sample halves it; those sent before come back late too and
	// do not cut again until the late one's round trip has passed.
	if !w.observe(t0, slow, w.size) || w.size != 20 {
		t.Fatalf("after a late sample: %d, want 20", w.size)
	}
	if w.observe(t0.Add(slow-time.Millisecond), slow, w.size) || w.size != 20 {
		t.Fatalf("cut again within the round trip: %d", w.size)
	}
	if !w.observe(t0.Add(slow), slow, w.size) || w.size != 10 {
		t.Fatalf("after the round trip, a late sample: %d, want 10", w.size)
	}
	// Past the first cut: an eighth more (at least one) per window of
	// samples in time.
	for i := 0; i < 9; i++ {
		w.observe(t0.Add(slow), fast, w.size)
	}
	if w.size != 10 {
		t.Fatalf("grew to %d before a window of samples", w.size)
	}
	w.observe(t0.Add(slow), fast, w.size)
	if w.size != 11 {
		t.Fatalf("after a window of samples: %d, want 11", w.size)
	}
	// Bounds: never under the floor, never over the ceiling.
	for i := 0; i < 20; i++ {
		w.observe(t0.Add(time.Duration(i+2)*slow), slow, w.size)
	}
	if w.size != 4 {
		t.Fatalf("floor: %d, want 4", w.size)
	}
	for i := 0; i < 10000; i++ {
		w.observe(t0.Add(time.Hour), fast, w.size)
	}
	if w.size != 64 {
		t.Fatalf("ceiling: %d, want 64", w.size)
	}
	if w := newFlowWindow(256, 10, time.Second); w.size != 10 || w.min != 10 {
		t.Fatalf("a ceiling under the floor: size %d floor %d, want both 10", w.size, w.min)
	}
}

// TestFlowWindow_KeepsReportsWithinTarget runs the window against a
// simulated registration that takes 2,000 reports a second, one at a time
// in arrival order, after 100 ms of pipeline: what 10,000 agents' teardown
// met. A constant window of 8,192 queued the reports 4 s deep; the window
// must keep most within the target and the server busy.
func TestFlowWindow_KeepsReportsWithinTarget(t *testing.T) {
	const (
		step    = 10 * time.Millisecond
		perStep = 20 // 2,000 a second
		base    = 100 * time.Millisecond
		target  = time.Second
	)
	run := func(w *flowWindow, constant int) (p90 time.Duration, served int) {
		t0 := time.Unix(0, 0)
		var queue, pipe []time.Time // send times: waiting for the server; served, in the pipeline
		var servedAt []time.Time
		var lat []time.Duration
		inFlight := 0
		for i := 0; i < 6000; i++ { // 60 s
			now := t0.Add(time.Duration(i) * step)
			size := constant
			if w != nil {
				size = w.size
			}
			for ; inFlight < size; inFlight++ {
				queue = append(queue, now)
			}
			n := min(perStep, len(queue))
			for _, at := range queue[:n] {
				pipe = append(pipe, at)
				servedAt = append(servedAt, now)
			}
			queue = queue[n:]
			for len(pipe) > 0 && !servedAt[0].Add(base).After(now) {
				d := now.Sub(pipe[0])
				pipe, servedAt = pipe[1:], servedAt[1:]
				inFlight--
				if w != nil {
					w.observe(now, d, inFlight)
				}
				if i >= 3000 { // the last 30 s
					lat = append(lat, d)
					served++
				}
			}
		}
		slices.Sort(lat)
		return lat[len(lat)*9/10], served
	}
	p90, served := run(nil, 8192)
	if p90 < 3*time.Second {
		t.Fatalf("the model is off: a constant 8,192 gave p90 %s, want ≥ 3 s", p90)
	}
	t.Logf("constant 8,192: p90 %s, %d served in 30 s", p90, served)
	p90, served = run(newFlowWindow(256, 8192, target), 0)
	t.Logf("window: p90 %s, %d served in 30 s", p90, served)
	if p90 > target+target/2 {
		t.Errorf("p90 %s, want within 1.5 × the %s target", p90, target)
	}
	if want := 30 * 2000 * 9 / 10; served < want {
		t.Errorf("%d served in 30 s, want ≥ %d (the server kept busy)", served, want)
	}
}

// TestPlanner_FlowWindow_Samples: the planner times a launch it placed
// until the watch brings it out of LAUNCHING, and a kill it sent until the
// executor ended, and feeds both to the window; other records are no
// samples.
func TestPlanner_FlowWindow_Samples(t *testing.T) {
	v := &view{snap: NewSnapshot()}
	v.executors = &mirror[schemas.Executor]{bucket: bus.BucketExecutors, log: zerolog.Nop(), mu: &v.mu, gen: &v.gen, items: v.snap.Executors, revs: map[string]uint64{}}
	p := newPlanner(v, Config{MaxInFlight: 8192, FlowTarget: time.Second, Log: zerolog.Nop()})
	if p.win == nil {
		t.Fatal("no window with a flow target")
	}
	const app = "app-20260101000000-000001"
	rev := uint64(0)
	put := func(id int, st schemas.ExecutorState) {
		t.Helper()
		b, err := bus.Encode(&schemas.Executor{AppID: app, ID: id, WorkerID: "w1", Cores: 1, MemoryMB: 1, State: st}, bus.JSON)
		if err != nil {
			t.Fatal(err)
		}
		rev++
		v.executors.setLocked(schemas.ExecutorKey(app, id), rev, b, false, false)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	p.win.size, p.win.ssthresh = 2000, 2000

	// Launch 0 placed 3 s ago: its own LAUNCHING echo is no sample, its
	// RUNNING report a late one (window halved).
	p.sent[schemas.ExecutorKey(app, 0)] = time.Now().Add(-3 * time.Second)
	put(0, schemas.ExecutorLaunching)
	if p.win.size != 2000 {
		t.Fatalf("the LAUNCHING echo moved the window to %d", p.win.size)
	}
	put(0, schemas.ExecutorRunning)
	if p.win.size != 1000 || len(p.sent) != 0 {
		t.Fatalf("after a launch reported in 3 s: window %d, %d launches timed; want 1000, 0", p.win.size, len(p.sent))
	}
	// An executor nobody placed or killed: no sample.
	p.win.hold = time.Time{}
	put(1, schemas.ExecutorRunning)
	put(1, schemas.ExecutorExited)
	if p.win.size != 1000 {
		t.Fatalf("an unsent executor moved the window to %d", p.win.size)
	}
	// A kill sent 3 s ago, its executor ended: a late sample.
	put(2, schemas.ExecutorRunning)
	v.snap.Killing[KillTarget(schemas.Kill{AppID: app, ExecutorID: 2})] = time.Now().Add(-3 * time.Second)
	put(2, schemas.ExecutorKilled)
	if p.win.size != 500 {
		t.Fatalf("after a kill reported in 3 s: window %d, want 500", p.win.size)
	}

	if q := newPlanner(v, Config{MaxInFlight: 8192, FlowTarget: -1}); q.win != nil {
		t.Fatal("a window with a negative flow target")
	}
	if q := newPlanner(v, Config{MaxInFlight: -1, FlowTarget: time.Second}); q.win != nil {
		t.Fatal("a window with no bound")
	}
}
