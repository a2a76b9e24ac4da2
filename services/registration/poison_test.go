package registration

import (
	"slices"
	"testing"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// The repro: a value that is not a record in stoker-apps, and a
// worker with negative cores, written by something other than the
// services. The lists and the status still answer, without them; the
// status counts and names them; the bad worker's cores are not counted.
func TestService_List_SkipsPoisonedRecords(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t)
	put(t, e, e.st.Workers, "w1", &schemas.Worker{ID: "w1", Instance: "i", Cores: 4, MemoryMB: 1024, State: schemas.WorkerAlive})
	put(t, e, e.st.Apps, "app-1", &schemas.App{ID: "app-1", State: schemas.AppRunning,
		Executor: schemas.ExecutorSpec{Command: []string{"x"}, Cores: 1, MemoryMB: 64}})
	put(t, e, e.st.Executors, "app-1.0", &schemas.Executor{AppID: "app-1", ID: 0, WorkerID: "w1", Cores: 1, MemoryMB: 64, State: schemas.ExecutorRunning})
	for kv, kvs := range map[string]map[string]string{
		bus.BucketApps:      {"app-junk": "not a record"},
		bus.BucketWorkers:   {"w-neg": `{"id":"w-neg","state":"ALIVE","cores":-5,"memory_mb":1024}`},
		bus.BucketExecutors: {"app-1.1": `{"app_id":"app-1","id":1,"worker_id":"w-ghost","state":"RUNNING","cores":1,"memory_mb":64}`},
	} {
		b, _ := bus.FindBucket(kv)
		for k, v := range kvs {
			if _, err := b.In(e.st).Put(ctx, k, []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
	}

	apps := mustCall[schemas.AppList](t, e, bus.APIAppsList, &schemas.ListRequest{})
	if len(apps.Apps) != 1 || apps.Apps[0].ID != "app-1" || len(apps.Apps[0].Executors) != 1 {
		t.Fatalf("apps %+v, want app-1 with its one placed executor", apps.Apps)
	}
	ws := mustCall[schemas.WorkerList](t, e, bus.APIWorkersList, &schemas.ListRequest{})
	if len(ws.Workers) != 1 || ws.Workers[0].ID != "w1" || ws.Workers[0].CoresUsed != 1 {
		t.Fatalf("workers %+v, want w1 alone using 1 core", ws.Workers)
	}
	st := mustCall[schemas.Status](t, e, bus.APIStatus, &schemas.ListRequest{})
	if st.CoresTotal != 4 || st.CoresUsed != 1 || st.Workers["ALIVE"] != 1 {
		t.Fatalf("status %+v: want 4 cores, 1 used, 1 ALIVE", st)
	}
	want := map[string][]string{bus.BucketApps: {"app-junk"}, bus.BucketWorkers: {"w-neg"}, bus.BucketExecutors: {"app-1.1"}}
	for b, keys := range want {
		if st.Poisoned[b] != len(keys) || !slices.Equal(st.PoisonedKeys[b], keys) {
			t.Fatalf("status poisoned %v %v, want %v", st.Poisoned, st.PoisonedKeys, want)
		}
	}
	// Reported once per revision, however many lists read them.
	if n := e.svc.poison.Reported(); n != 3 {
		t.Fatalf("reported %d, want 3", n)
	}
}
