package scheduler

import (
	"slices"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
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
			m := &mirror[schemas.Worker]{bucket: bus.BucketWorkers, only: tc.only, log: zerolog.Nop(), mu: &sync.Mutex{},
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
	v.apps = &mirror[schemas.App]{bucket: bus.BucketApps, log: zerolog.Nop(), mu: &v.mu, items: v.snap.Apps, revs: map[string]uint64{}}
	v.executors = &mirror[schemas.Executor]{bucket: bus.BucketExecutors, log: zerolog.Nop(), mu: &v.mu, items: v.snap.Executors, revs: map[string]uint64{}}
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
}

// TestMirror_StartedAsPlaced_AsksNoPass: an executor's report of the
// launch the plan counted (LAUNCHING → RUNNING, same worker and resources)
// is applied without asking for a pass; any other change asks for one.
func TestMirror_StartedAsPlaced_AsksNoPass(t *testing.T) {
	v := &view{snap: NewSnapshot()}
	v.executors = &mirror[schemas.Executor]{bucket: bus.BucketExecutors, log: zerolog.Nop(), mu: &v.mu, items: v.snap.Executors, revs: map[string]uint64{}}
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
