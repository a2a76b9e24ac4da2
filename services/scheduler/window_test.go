package scheduler

import (
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// TestFlowWindow_Rules: rounds of a window's worth of samples (at least
// minRound); slow start from the floor, a cut in half for a round whose
// median was late and the next round not counted, a few late samples no
// signal, growth only while the window is what limits, an eighth a round
// after the first cut, and the bounds.
func TestFlowWindow_Rules(t *testing.T) {
	fast, slow := 100*time.Millisecond, 3*time.Second
	w := newFlowWindow(32, 1024, time.Second)
	round := func(late, inFlight int) bool {
		t.Helper()
		n, changed := w.size, false
		for i := 0; i < n; i++ {
			d := fast
			if i < late {
				d = slow
			}
			if w.observe(d, inFlight) {
				if i != n-1 {
					t.Fatalf("the window changed at sample %d of a round of %d", i+1, n)
				}
				changed = true
			}
		}
		return changed
	}
	if w.size != 32 {
		t.Fatalf("starts at %d, want the floor 32", w.size)
	}
	if !round(0, 32) || w.size != 64 {
		t.Fatalf("after a round in time, the window full: %d, want 64 (doubled)", w.size)
	}
	// A few late ones are no signal.
	if !round(20, 64) || w.size != 128 {
		t.Fatalf("after a round with 20 of 64 late: %d, want 128", w.size)
	}
	// Not what limits the passes (under half of it in flight): no growth.
	if round(0, 63) || w.size != 128 {
		t.Fatalf("grew to %d with 63 of 128 in flight", w.size)
	}
	round(0, 128)
	round(0, 256)
	if w.size != 512 {
		t.Fatalf("slow start: %d, want 512", w.size)
	}
	// A round with most late halves it; the next round's samples were sent
	// before the cut and do not count.
	if !round(300, 512) || w.size != 256 {
		t.Fatalf("after a late round: %d, want 256", w.size)
	}
	if round(256, 256) || w.size != 256 {
		t.Fatalf("the round after a cut cut again: %d", w.size)
	}
	// Past the first cut: an eighth more per round in time.
	if !round(0, 256) || w.size != 288 {
		t.Fatalf("after the cut, a round in time: %d, want 288", w.size)
	}
	// What the status reports: every round counted, the one cut.
	if w.rounds != 8 || w.cuts != 1 {
		t.Fatalf("%d rounds, %d cuts; want 8 and 1", w.rounds, w.cuts)
	}
	// Bounds: never under the floor, never over the ceiling.
	for i := 0; i < 20; i++ {
		round(w.size, w.size)
	}
	if w.size != 32 {
		t.Fatalf("floor: %d, want 32", w.size)
	}
	for i := 0; i < 100; i++ {
		round(0, w.size)
	}
	if w.size != 1024 {
		t.Fatalf("ceiling: %d, want 1024", w.size)
	}
	// A small window's rounds take minRound samples.
	w = newFlowWindow(2, 64, time.Second)
	for i := 0; i < minRound-1; i++ {
		if w.observe(fast, 2) {
			t.Fatalf("a round of %d samples with a window of 2", i+1)
		}
	}
	if !w.observe(fast, 2) || w.size != 4 {
		t.Fatalf("after minRound samples: %d, want 4", w.size)
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
					w.observe(d, inFlight)
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
	if p90 > 2*target {
		t.Errorf("p90 %s, want within twice the %s target", p90, target)
	}
	if want := 30 * 2000 * 9 / 10; served < want {
		t.Errorf("%d served in 30 s, want ≥ %d (the server kept busy)", served, want)
	}
}

// TestPlanner_FlowWindow_Samples: the planner times a launch it placed
// until the watch brings it out of LAUNCHING, and a kill it sent until the
// executor ended, and feeds both to the window; other records are no
// samples. A report of a launch, which asks for no pass, asks for one
// when it frees a quarter of a window the last pass filled.
func TestPlanner_FlowWindow_Samples(t *testing.T) {
	v := &view{snap: NewSnapshot()}
	v.executors = &mirror[schemas.Executor]{bucket: bus.BucketExecutors, log: zerolog.Nop(), mu: &v.mu, gen: &v.gen, items: v.snap.Executors, revs: map[string]uint64{}}
	p := newPlanner(v, Config{MaxInFlight: 8192, FlowTarget: time.Second, Log: zerolog.Nop()})
	if p.win == nil {
		t.Fatal("no window with a flow target")
	}
	const app = "app-20260101000000-000001"
	rev := uint64(0)
	put := func(id int, st schemas.ExecutorState) bool {
		t.Helper()
		b, err := bus.Encode(&schemas.Executor{AppID: app, ID: id, WorkerID: "w1", Cores: 1, MemoryMB: 1, State: st}, bus.JSON)
		if err != nil {
			t.Fatal(err)
		}
		rev++
		return v.executors.setLocked(schemas.ExecutorKey(app, id), rev, b, false, false)
	}
	samples := func(n, late int) {
		t.Helper()
		if p.win.n != n || p.win.late != late {
			t.Fatalf("%d samples, %d late; want %d, %d", p.win.n, p.win.late, n, late)
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()

	// Launch 0 placed 3 s ago: its own LAUNCHING echo is no sample, its
	// RUNNING report a late one.
	p.sent[schemas.ExecutorKey(app, 0)] = time.Now().Add(-3 * time.Second)
	put(0, schemas.ExecutorLaunching)
	samples(0, 0)
	put(0, schemas.ExecutorRunning)
	samples(1, 1)
	if len(p.sent) != 0 {
		t.Fatalf("%d launches still timed", len(p.sent))
	}
	// An executor nobody placed or killed: no sample.
	put(1, schemas.ExecutorRunning)
	put(1, schemas.ExecutorExited)
	samples(1, 1)
	// A kill sent 3 s ago, its executor ended: a late sample.
	put(2, schemas.ExecutorRunning)
	v.snap.Killing[KillTarget(schemas.Kill{AppID: app, ExecutorID: 2})] = time.Now().Add(-3 * time.Second)
	put(2, schemas.ExecutorKilled)
	samples(2, 2)

	// The last pass filled a window of 256: the report that frees its
	// first quarter asks for a pass, the others do not.
	p.win.size, p.limited, p.freed = 256, true, 0
	asked := 0
	for id := 10; id < 10+128; id++ {
		p.sent[schemas.ExecutorKey(app, id)] = time.Now()
		put(id, schemas.ExecutorLaunching)
		if put(id, schemas.ExecutorRunning) {
			asked++
			if id != 10+63 {
				t.Fatalf("the report of launch %d asked for a pass, want the 64th's", id-9)
			}
		}
	}
	if asked != 1 {
		t.Fatalf("%d reports asked for a pass, want 1", asked)
	}

	// The same for kills: while the last pass filled the window, the end
	// of an executor it was killing asks for a pass only when it frees the
	// first quarter; one nobody killed asks at once (it failed: its app
	// may want it replaced).
	kill := func(id int) {
		v.snap.Killing[KillTarget(schemas.Kill{AppID: app, ExecutorID: id})] = time.Now()
	}
	p.win.size, p.limited, p.freed, asked = 256, true, 0, 0
	since := 0 // ends since the last pass asked for
	for id := 200; id < 200+128; id++ {
		put(id, schemas.ExecutorRunning)
		kill(id)
		since++
		if put(id, schemas.ExecutorKilled) {
			asked++
			// The window moves with its samples: a quarter of it as it is.
			if since != max(p.win.size/4, 1) {
				t.Fatalf("the end of killed executor %d asked for a pass %d ends after the last, want %d (window %d)", id, since, p.win.size/4, p.win.size)
			}
			// The pass asked for runs and fills the window again.
			since, p.limited = 0, true
		}
	}
	if asked != 2 {
		t.Fatalf("%d of 128 ends of killed executors asked for a pass, want 2", asked)
	}
	p.limited, p.freed = true, 0
	put(400, schemas.ExecutorRunning)
	if !put(400, schemas.ExecutorFailed) {
		t.Fatal("an executor nobody killed ended without asking for a pass")
	}
	// Killed into a window that is not full: the freed resources are
	// placed at once.
	p.limited = false
	put(401, schemas.ExecutorRunning)
	kill(401)
	if !put(401, schemas.ExecutorKilled) {
		t.Fatal("a kill's end with the window not full asked for no pass")
	}
	// Every kill whose executor ended is forgotten at once: none in flight.
	if len(v.snap.Killing) != 0 {
		t.Fatalf("%d kills still in flight, their executors all ended", len(v.snap.Killing))
	}

	if q := newPlanner(v, Config{MaxInFlight: 8192, FlowTarget: -1}); q.win != nil {
		t.Fatal("a window with a negative flow target")
	} else {
		// Without a window too, an ended executor's kill is forgotten.
		put(500, schemas.ExecutorRunning)
		kill(500)
		kill(501)
		put(500, schemas.ExecutorExited)
		if _, ok := v.snap.Killing[KillTarget(schemas.Kill{AppID: app, ExecutorID: 500})]; ok || len(v.snap.Killing) != 1 {
			t.Fatalf("kills in flight %v, want only executor 501's", v.snap.Killing)
		}
	}
	if q := newPlanner(v, Config{MaxInFlight: -1, FlowTarget: time.Second}); q.win != nil {
		t.Fatal("a window with no bound")
	}
}
