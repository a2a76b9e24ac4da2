package registration

import (
	"reflect"
	"testing"
	"time"

	"github.com/stoker/stoker/schemas"
)

func TestUsage_DerivesFromHoldingStates(t *testing.T) {
	execs := []schemas.Executor{
		{AppID: "app-a", ID: 0, WorkerID: "w1", Cores: 2, MemoryMB: 512, State: schemas.ExecutorRunning},
		{AppID: "app-a", ID: 1, WorkerID: "w1", Cores: 1, MemoryMB: 256, State: schemas.ExecutorLaunching},
		{AppID: "app-a", ID: 2, WorkerID: "w1", Cores: 8, MemoryMB: 8192, State: schemas.ExecutorFailed},
		{AppID: "app-b", ID: 0, WorkerID: "w2", Cores: 4, MemoryMB: 1024, State: schemas.ExecutorLost},
	}
	drivers := []schemas.Driver{
		{ID: "driver-1", WorkerID: "w1", Cores: 1, MemoryMB: 100, State: schemas.DriverRunning},
		{ID: "driver-2", WorkerID: "w2", Cores: 1, MemoryMB: 100, State: schemas.DriverRelaunching},
		{ID: "driver-3", WorkerID: "w2", Cores: 3, MemoryMB: 300, State: schemas.DriverFinished},
		{ID: "driver-4", Cores: 3, MemoryMB: 300, State: schemas.DriverSubmitted},
	}
	got := Usage(execs, drivers)
	want := schemas.Usages{
		"w1": {Cores: 4, MemoryMB: 868, Executors: 2, Drivers: 1},
		"w2": {Cores: 1, MemoryMB: 100, Executors: 0, Drivers: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("usage = %+v, want %+v", got, want)
	}
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("usage[%s] = %+v, want %+v", k, got[k], v)
		}
	}
}

func TestWorkerViews_SortedWithUsage(t *testing.T) {
	ws := []schemas.Worker{
		{ID: "w2", Cores: 4, MemoryMB: 1000, State: schemas.WorkerAlive},
		{ID: "w1", Cores: 8, MemoryMB: 2000, State: schemas.WorkerDead},
	}
	vs := WorkerViews(ws, schemas.Usages{"w2": {Cores: 3, MemoryMB: 700, Executors: 2, Drivers: 1}})
	if len(vs) != 2 || vs[0].ID != "w1" || vs[1].ID != "w2" {
		t.Fatalf("views not sorted by id: %+v", vs)
	}
	if vs[0].CoresUsed != 0 || vs[1].CoresUsed != 3 || vs[1].MemoryUsedMB != 700 || vs[1].Executors != 2 || vs[1].Drivers != 1 {
		t.Fatalf("usage not joined: %+v", vs)
	}
}

func TestAppViews_CoresGrantedAndOrder(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	apps := []schemas.App{
		{ID: "app-2", SubmittedAt: t0.Add(time.Second), State: schemas.AppWaiting},
		{ID: "app-1", SubmittedAt: t0, State: schemas.AppRunning, Executor: schemas.ExecutorSpec{Cores: 2, MemoryMB: 512}},
	}
	code := 1
	execs := []schemas.Executor{
		{AppID: "app-1", ID: 1, WorkerID: "w1", Cores: 2, State: schemas.ExecutorRunning},
		{AppID: "app-1", ID: 0, WorkerID: "w2", Cores: 2, State: schemas.ExecutorFailed, ExitCode: &code},
		{AppID: "app-1", ID: 2, WorkerID: "w2", Cores: 2, State: schemas.ExecutorLaunching},
	}
	vs := AppViews(apps, execs)
	if len(vs) != 2 || vs[0].ID != "app-1" || vs[1].ID != "app-2" {
		t.Fatalf("apps not ordered by submission: %+v", vs)
	}
	a := vs[0]
	if a.CoresGranted != 4 || len(a.Executors) != 3 || a.Executors[0].ID != 0 || *a.Executors[0].ExitCode != 1 {
		t.Fatalf("app-1 view = %+v", a)
	}
	if a.ExecutorCores != 2 || a.ExecutorMemoryMB != 512 {
		t.Fatalf("executor spec not shown: %+v", a)
	}
	if vs[1].Executors == nil || len(vs[1].Executors) != 0 {
		t.Fatalf("an app without executors lists none (not null): %+v", vs[1])
	}
}

func TestCanHold(t *testing.T) {
	ws := []schemas.Worker{
		{ID: "big-dead", Cores: 64, MemoryMB: 1 << 20, State: schemas.WorkerDead},
		{ID: "small", Cores: 2, MemoryMB: 1024, State: schemas.WorkerAlive},
	}
	cases := []struct {
		cores int
		mem   int64
		want  bool
	}{
		{2, 1024, true}, {3, 1024, false}, {1, 2048, false}, {1, 1, true},
	}
	for _, c := range cases {
		if got := CanHold(ws, c.cores, c.mem); got != c.want {
			t.Errorf("CanHold(%d, %d) = %v, want %v", c.cores, c.mem, got, c.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	base := Snapshot{
		Workers: []schemas.Worker{
			{ID: "w1", Cores: 4, MemoryMB: 4096, State: schemas.WorkerAlive},
			{ID: "w2", Cores: 8, MemoryMB: 8192, State: schemas.WorkerDead},
		},
		Apps:    []schemas.App{{ID: "app-1", State: schemas.AppRunning}, {ID: "app-2", State: schemas.AppFinished}},
		Drivers: []schemas.Driver{{ID: "driver-1", WorkerID: "w1", Cores: 1, MemoryMB: 512, State: schemas.DriverRunning}},
		Executors: []schemas.Executor{
			{AppID: "app-1", WorkerID: "w1", Cores: 2, MemoryMB: 1024, State: schemas.ExecutorRunning},
			// On a dead worker: not counted in ALIVE totals.
			{AppID: "app-1", ID: 1, WorkerID: "w2", Cores: 2, MemoryMB: 1024, State: schemas.ExecutorRunning},
		},
	}
	cases := []struct {
		name      string
		lease     *schemas.Lease
		rev       uint64
		cluster   *schemas.Cluster
		wantState schemas.ClusterState
		wantEpoch uint64
	}{
		{"no lease is standby", nil, 0, &schemas.Cluster{State: schemas.ClusterAlive}, schemas.ClusterStandby, 0},
		{"lease epoch", &schemas.Lease{Holder: "s1", Epoch: 9, Since: t0}, 12, &schemas.Cluster{State: schemas.ClusterAlive}, schemas.ClusterAlive, 9},
		{"epoch from revision", &schemas.Lease{Holder: "s1"}, 12, nil, schemas.ClusterRecovering, 12},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := base
			snap.Lease, snap.LeaseRevision, snap.Cluster = c.lease, c.rev, c.cluster
			st := Summarize(snap)
			if st.State != c.wantState {
				t.Fatalf("state = %s, want %s", st.State, c.wantState)
			}
			if c.lease == nil && st.Leader != nil || c.lease != nil && (st.Leader == nil || st.Leader.Epoch != c.wantEpoch || st.Leader.ID != "s1") {
				t.Fatalf("leader = %+v", st.Leader)
			}
			if st.CoresTotal != 4 || st.CoresUsed != 3 || st.MemoryTotalMB != 4096 || st.MemoryUsedMB != 1536 {
				t.Fatalf("totals = %+v", st)
			}
			if st.Workers["ALIVE"] != 1 || st.Workers["DEAD"] != 1 || st.Apps["RUNNING"] != 1 || st.Apps["FINISHED"] != 1 || st.Drivers["RUNNING"] != 1 {
				t.Fatalf("counts = %+v %+v %+v", st.Workers, st.Apps, st.Drivers)
			}
		})
	}
}
