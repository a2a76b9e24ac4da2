package scheduler

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

func TestMirror_SetLocked(t *testing.T) {
	rec := func(cores int) []byte {
		b, err := bus.Encode(&schemas.Worker{ID: "w1", Cores: cores, MemoryMB: 1, State: schemas.WorkerAlive}, bus.Msgpack)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	type step struct {
		key     string
		rev     uint64
		data    []byte
		deleted bool
		force   bool
		want    int // cores held for w1 after the step; 0: absent
	}
	tests := []struct {
		name  string
		only  string
		steps []step
	}{
		{"newer replaces, older and equal are ignored", "", []step{
			{"w1", 5, rec(1), false, false, 1},
			{"w1", 7, rec(2), false, false, 2},
			{"w1", 6, rec(3), false, false, 2},
			{"w1", 7, rec(4), false, false, 2},
		}},
		{"force takes an equal revision (undoing an optimistic apply)", "", []step{
			{"w1", 5, rec(1), false, false, 1},
			{"w1", 5, rec(9), false, true, 9},
			{"w1", 4, rec(8), false, true, 9},
		}},
		{"delete removes; an older put does not bring it back", "", []step{
			{"w1", 5, rec(1), false, false, 1},
			{"w1", 6, nil, true, false, 0},
			{"w1", 5, rec(1), false, false, 0},
			{"w1", 8, rec(3), false, false, 3},
		}},
		{"a poisoned revision removes the record (never acted upon)", "", []step{
			{"w1", 5, rec(1), false, false, 1},
			{"w1", 6, []byte{0xc1}, false, false, 0},
			{"w1", 7, rec(2), false, false, 2},
			{"w1", 8, rec(-5), false, false, 0},
		}},
		{"only one key", "w2", []step{
			{"w1", 5, rec(1), false, false, 0},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &mirror[schemas.Worker]{bucket: bus.BucketWorkers, only: tc.only, log: zerolog.Nop(), mu: &sync.Mutex{}, gen: new(uint64),
				items: map[string]*schemas.Worker{}, revs: map[string]uint64{}}
			for i, s := range tc.steps {
				m.setLocked(s.key, s.rev, s.data, s.deleted, s.force)
				got := 0
				if w := m.items["w1"]; w != nil {
					got = w.Cores
				}
				if got != s.want {
					t.Fatalf("step %d (%+v): w1 has %d cores, want %d", i, s, got, s.want)
				}
			}
		})
	}
}

// Ended executors of ended apps stay out of the snapshot (history must not
// cost a pass anything); live apps' ended executors and anything holding
// resources stay in.
func TestView_HistoryStaysOutOfTheSnapshot(t *testing.T) {
	v := &view{snap: NewSnapshot(), clusterKV: map[string]*schemas.Cluster{}}
	v.apps = &mirror[schemas.App]{bucket: bus.BucketApps, log: zerolog.Nop(), mu: &v.mu, gen: &v.gen, items: v.snap.Apps, revs: map[string]uint64{}}
	v.executors = &mirror[schemas.Executor]{bucket: bus.BucketExecutors, log: zerolog.Nop(), mu: &v.mu, gen: &v.gen, items: v.snap.Executors, revs: map[string]uint64{}}
	v.historyOut()
	enc := func(x any) []byte {
		b, err := bus.Encode(x, bus.Msgpack)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	app := func(id string, st schemas.AppState, next int) []byte {
		return enc(&schemas.App{ID: id, State: st, NextExecutorID: next, Executor: schemas.ExecutorSpec{Command: []string{"x"}, Cores: 1, MemoryMB: 1}})
	}
	ex := func(appID string, n int, st schemas.ExecutorState) []byte {
		return enc(&schemas.Executor{AppID: appID, ID: n, WorkerID: "w", Cores: 1, MemoryMB: 1, State: st})
	}
	done, live := "app-20260101000000-000001", "app-20260101000000-000002"
	rev := uint64(0)
	next := func() uint64 { rev++; return rev }
	v.mu.Lock()
	defer v.mu.Unlock()
	// Executors arrive before their app (watches of two buckets race).
	v.executors.setLocked(done+".0", next(), ex(done, 0, schemas.ExecutorExited), false, false)
	v.executors.setLocked(done+".1", next(), ex(done, 1, schemas.ExecutorRunning), false, false)
	v.executors.setLocked(live+".0", next(), ex(live, 0, schemas.ExecutorExited), false, false)
	v.apps.setLocked(live, next(), app(live, schemas.AppRunning, 1), false, false)
	v.apps.setLocked(done, next(), app(done, schemas.AppFinished, 2), false, false)
	// An ended executor of the ended app arriving later is not kept either.
	v.executors.setLocked(done+".2", next(), ex(done, 2, schemas.ExecutorFailed), false, false)
	var keys []string
	for k := range v.snap.Executors {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{done + ".1", live + ".0"}; !slices.Equal(keys, want) {
		t.Fatalf("snapshot executors %v, want %v", keys, want)
	}
	// The ended app's running executor is killed (its teardown): its end
	// is left out of the snapshot but still seen, so the kill is no longer
	// in flight. Before, it stayed in flight until its retry time, and
	// 100,000 executors killed at once counted 40,000 ended kills in the
	// window.
	var seen []string
	v.executors.set = func(key string, _ *schemas.Executor) { seen = append(seen, key) }
	v.executors.setLocked(done+".1", next(), ex(done, 1, schemas.ExecutorKilled), false, false)
	if _, kept := v.snap.Executors[done+".1"]; kept || !slices.Equal(seen, []string{done + ".1"}) {
		t.Fatalf("the killed executor of the ended app: kept %v, seen %v", kept, seen)
	}
}

// TestMirror_StartedAsPlaced_AsksNoPass: an executor's report of the
// launch the plan counted (LAUNCHING → RUNNING, same worker and resources)
// is applied without asking for a pass; any other change asks for one.
func TestMirror_StartedAsPlaced_AsksNoPass(t *testing.T) {
	v := &view{snap: NewSnapshot()}
	v.executors = &mirror[schemas.Executor]{bucket: bus.BucketExecutors, log: zerolog.Nop(), mu: &v.mu, gen: &v.gen, items: v.snap.Executors, revs: map[string]uint64{}}
	v.executors.quiet = startedAsPlaced
	enc := func(e schemas.Executor) []byte {
		b, err := bus.Encode(&e, bus.JSON)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	const app = "app-20260101000000-000001"
	base := schemas.Executor{AppID: app, ID: 0, WorkerID: "w1", Cores: 1, MemoryMB: 1, State: schemas.ExecutorLaunching}
	with := func(f func(e *schemas.Executor)) schemas.Executor {
		e := base
		f(&e)
		return e
	}
	running := func(e *schemas.Executor) { e.State = schemas.ExecutorRunning }
	steps := []struct {
		name    string
		e       schemas.Executor
		matters bool
	}{
		{"placed", base, true},
		{"started where placed", with(running), false},
		{"exited", with(func(e *schemas.Executor) { e.State = schemas.ExecutorExited }), true},
		{"placed again", base, true},
		{"running on another worker", with(func(e *schemas.Executor) { running(e); e.WorkerID = "w2" }), true},
		{"placed again 2", base, true},
		{"running with other resources", with(func(e *schemas.Executor) { running(e); e.Resources = schemas.Resources{"gpu": {"0"}} }), true},
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for i, s := range steps {
		if got := v.executors.setLocked(app+".0", uint64(i+1), enc(s.e), false, false); got != s.matters {
			t.Errorf("%s: asks for a pass %v, want %v", s.name, got, s.matters)
		}
	}
	if got := v.executors.setLocked(app+".0", 1, enc(base), false, false); got {
		t.Errorf("an older revision asks for a pass")
	}
}

// TestMirror_WroteAheadOfTheWatch: a record the scheduler created is in
// the view at once with its revision, and the watch's copy of that
// revision is not decoded (a value that would not decode is taken for the
// one written, and asks for no pass); what the watch reached first wins
// over a late write's answer.
func TestMirror_WroteAheadOfTheWatch(t *testing.T) {
	v := &view{snap: NewSnapshot()}
	poison := bus.NewReporter(nil, zerolog.Nop())
	v.executors = &mirror[schemas.Executor]{bucket: bus.BucketExecutors, log: zerolog.Nop(), mu: &v.mu, gen: &v.gen,
		items: v.snap.Executors, revs: map[string]uint64{}, poison: poison}
	const app = "app-20260101000000-000001"
	e := schemas.Executor{AppID: app, ID: 0, WorkerID: "w1", Cores: 1, MemoryMB: 1, State: schemas.ExecutorLaunching, Epoch: 3}
	key := e.Key()
	gen := v.gen
	v.executors.wrote(key, 4, &e)
	v.mu.Lock()
	if got := v.snap.Executors[key]; got == nil || got.Epoch != 3 || v.executors.revs[key] != 4 || v.gen == gen {
		t.Fatalf("after the create's answer the view holds %+v at %d (gen %d → %d)", got, v.executors.revs[key], gen, v.gen)
	}
	v.executors.seen = 4
	if v.executors.setLocked(key, 4, []byte("{not json"), false, false) {
		t.Error("the watch's copy of the create asks for a pass")
	}
	if poison.Reported() != 0 || v.snap.Executors[key] == nil {
		t.Fatalf("the watch's copy of the create was decoded: %d poisoned, record %+v", poison.Reported(), v.snap.Executors[key])
	}
	// The watch is ahead (a delete at 6): a write answered at 5 is older.
	v.executors.seen = 6
	v.executors.setLocked(key, 6, nil, true, false)
	v.mu.Unlock()
	v.executors.wrote(key, 5, &e)
	v.mu.Lock()
	defer v.mu.Unlock()
	if got := v.snap.Executors[key]; got != nil {
		t.Fatalf("a write older than what the watch brought came back: %+v", got)
	}
}

// TestMirror_RefreshUnreadable: a write failed and the record cannot be
// read back (the bus does not answer for longer than refreshFor). A key
// the bucket never gave the mirror holds only the planner's own value (an
// executor create whose outcome is unknown): it is forgotten, or it would
// count as placed forever (TestChaos_BusNodeKills: an app stayed WAITING
// with no executor after both creates timed out while a bus node died). A
// key read from the bucket keeps its value until the watch brings a newer
// one; a record that is there is read back.
func TestMirror_RefreshUnreadable(t *testing.T) {
	defer func(d time.Duration) { refreshFor = d }(refreshFor)
	refreshFor = 300 * time.Millisecond
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.ClientURL())
	st := bustest.Store(t, nc)
	ctx := context.Background()
	rec := func(id int, st schemas.ExecutorState) *schemas.Executor {
		return &schemas.Executor{AppID: "app-1", ID: id, WorkerID: "w1", Cores: 1, MemoryMB: 1, State: st}
	}
	rev, err := bus.Create(ctx, st.Executors, "app-1.0", rec(0, schemas.ExecutorRunning))
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	items := map[string]*schemas.Executor{}
	var gen uint64
	m := newMirror(st.Executors, &mu, &gen, items, zerolog.Nop(), nil)
	data, _ := bus.Encode(rec(0, schemas.ExecutorRunning), bus.Msgpack)
	mu.Lock()
	m.setLocked("app-1.0", rev, data, false, false)
	// The planner's optimistic values: a change to the known record, a
	// record it means to create.
	items["app-1.0"] = rec(0, schemas.ExecutorKilled)
	items["app-1.1"] = rec(1, schemas.ExecutorLaunching)
	mu.Unlock()

	// Read back while the bus answers: the known record's true value.
	m.refresh(ctx, "app-1.0")
	if got := items["app-1.0"]; got == nil || got.State != schemas.ExecutorRunning {
		t.Fatalf("after a refresh the bus answered, app-1.0 = %+v, want RUNNING", got)
	}
	items["app-1.0"] = rec(0, schemas.ExecutorKilled)

	// The bus stops answering this mirror's reads.
	nc2 := bustest.Conn(t, srv.ClientURL())
	js2, err := jetstream.New(nc2)
	if err != nil {
		t.Fatal(err)
	}
	kv2, err := js2.KeyValue(ctx, st.Executors.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	m.kv = kv2
	nc2.Close()
	m.refresh(ctx, "app-1.1")
	m.refresh(ctx, "app-1.0")
	if got, ok := items["app-1.1"]; ok {
		t.Fatalf("the planned create app-1.1 that could not be read back is still in the view: %+v", got)
	}
	if got := items["app-1.0"]; got == nil {
		t.Fatal("app-1.0, read from the bucket before, was dropped")
	}
	// A create that did land comes with the watch: revision 0 lets it in.
	data1, _ := bus.Encode(rec(1, schemas.ExecutorLaunching), bus.Msgpack)
	mu.Lock()
	m.setLocked("app-1.1", 3, data1, false, false)
	mu.Unlock()
	if items["app-1.1"] == nil {
		t.Fatal("the watch's record of app-1.1 was refused after the planned value was forgotten")
	}
}
