package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stoker/stoker/schemas"
)

// gpuWorker adds an ALIVE worker offering gpu addresses.
func (h *Harness) gpuWorker(id string, cores int, addrs ...string) *schemas.Worker {
	h.t.Helper()
	w := h.Worker(id, cores, 64<<10)
	w.Resources = schemas.Resources{"gpu": addrs}
	return w
}

// pairs lists "worker/address" for every gpu the plan hands out.
func gpuPairs(p Plan) []string {
	var out []string
	for _, l := range p.LaunchExecutors {
		for _, a := range l.Executor.Resources["gpu"] {
			out = append(out, l.Executor.WorkerID+"/"+a)
		}
	}
	slices.Sort(out)
	return out
}

func TestSchedule_Resources_EightGPUsNinthWaits(t *testing.T) {
	for _, spread := range []bool{true, false} {
		t.Run(fmt.Sprintf("spread=%v", spread), func(t *testing.T) {
			h := NewHarness(t)
			h.Opts.SpreadOut = spread
			h.gpuWorker("w1", 16, "0", "1", "2", "3")
			h.gpuWorker("w2", 16, "0", "1", "2", "3")
			h.Worker("w3", 16, 64<<10) // no gpus: never used
			a := h.App("app-1", 1, 512, 9)
			a.Executor.Resources = schemas.Amounts{"gpu": 1}
			p := h.Schedule()
			want := []string{"w1/0", "w1/1", "w1/2", "w1/3", "w2/0", "w2/1", "w2/2", "w2/3"}
			if got := gpuPairs(p); !slices.Equal(got, want) {
				t.Fatalf("gpu pairs = %v, want %v", got, want)
			}
			if n := len(p.LaunchExecutors); n != 8 {
				t.Fatalf("launched %d executors, want 8 (the ninth waits for a gpu)", n)
			}
			h.AssertStable()

			// Killing one frees exactly its address: the waiting ninth gets it.
			var victim *schemas.Executor
			for _, e := range h.Snap.Executors {
				if e.WorkerID == "w2" && slices.Equal(e.Resources["gpu"], []string{"2"}) {
					victim = e
				}
			}
			c := *victim
			c.State = schemas.ExecutorKilled
			h.Snap.Executors[c.Key()] = &c
			p = h.Schedule()
			if got := gpuPairs(p); !slices.Equal(got, []string{"w2/2"}) {
				t.Fatalf("after a kill: gpu pairs = %v, want [w2/2]", got)
			}
			h.AssertStable()
		})
	}
}

func TestSchedule_Resources_AmountPerExecutorAndSpread(t *testing.T) {
	h := NewHarness(t)
	h.gpuWorker("w1", 16, "0", "1", "2", "3")
	h.gpuWorker("w2", 16, "3", "1", "2", "0", "10")
	a := h.App("app-1", 1, 512, 0)
	a.Executor.Resources = schemas.Amounts{"gpu": 2}
	p := h.Schedule()
	if got := coresPerWorker(p); got["w1"] != 2 || got["w2"] != 2 {
		t.Fatalf("cores per worker = %v, want 2 executors on each (spread, 2 gpus each)", got)
	}
	for _, l := range p.LaunchExecutors {
		if len(l.Executor.Resources["gpu"]) != 2 {
			t.Fatalf("executor %s got %v, want 2 gpus", l.Executor.Key(), l.Executor.Resources)
		}
	}
	// Addresses are handed out in numeric order; "10" is left.
	if got := gpuPairs(p); !slices.Equal(got, []string{"w1/0", "w1/1", "w1/2", "w1/3", "w2/0", "w2/1", "w2/2", "w2/3"}) {
		t.Fatalf("gpu pairs = %v", got)
	}
	h.AssertStable()
}

func TestSchedule_Resources_HeldAddressesSurviveASnapshotReload(t *testing.T) {
	// A new leader's snapshot is the records: the executors keep their
	// addresses, and nothing is placed twice on them.
	h := NewHarness(t)
	h.gpuWorker("w1", 16, "0", "1")
	a := h.App("app-1", 1, 512, 0)
	a.State, a.NextExecutorID = schemas.AppRunning, 2
	a.Executor.Resources = schemas.Amounts{"gpu": 1}
	e := h.Executor("app-1", 0, "w1", 1, 512, schemas.ExecutorRunning)
	e.Resources = schemas.Resources{"gpu": {"1"}}
	p := h.Schedule()
	if got := gpuPairs(p); !slices.Equal(got, []string{"w1/0"}) {
		t.Fatalf("gpu pairs = %v, want only the free w1/0", got)
	}
	h.AssertStable()
}

func TestSchedule_Resources_DoubleHolderIsInconsistent(t *testing.T) {
	h := NewHarness(t)
	h.gpuWorker("w1", 16, "0", "1")
	a := h.App("app-1", 1, 512, 0)
	a.State, a.NextExecutorID = schemas.AppRunning, 2
	a.Executor.Resources = schemas.Amounts{"gpu": 1}
	for i := 0; i < 2; i++ {
		e := h.Executor("app-1", i, "w1", 1, 512, schemas.ExecutorRunning)
		e.Resources = schemas.Resources{"gpu": {"0"}}
	}
	p := Schedule(h.Snap, h.Opts)
	if len(p.Inconsistencies) != 1 || !strings.Contains(p.Inconsistencies[0], "address 0 held by") {
		t.Fatalf("inconsistencies = %v", p.Inconsistencies)
	}
	if got := gpuPairs(p); !slices.Equal(got, []string{"w1/1"}) {
		t.Fatalf("gpu pairs = %v, want [w1/1]", got)
	}
}

func TestSchedule_Resources_Driver(t *testing.T) {
	h := NewHarness(t)
	h.Worker("w1", 16, 64<<10)
	h.gpuWorker("w2", 16, "7")
	d1 := h.Driver("driver-1", 1, 512, false)
	d1.ResourceAmounts = schemas.Amounts{"gpu": 1}
	d2 := h.Driver("driver-2", 1, 512, false)
	d2.ResourceAmounts = schemas.Amounts{"gpu": 1}
	p := h.Schedule()
	if len(p.LaunchDrivers) != 1 || p.LaunchDrivers[0].WorkerID != "w2" ||
		!slices.Equal(p.LaunchDrivers[0].Driver.Resources["gpu"], []string{"7"}) {
		t.Fatalf("driver launches = %+v, want driver-1 on w2 with gpu 7", p.LaunchDrivers)
	}
	h.AssertStable()
	// An app wanting a gpu waits: the driver holds the only one.
	a := h.App("app-1", 1, 512, 0)
	a.Executor.Resources = schemas.Amounts{"gpu": 1}
	if p := h.Schedule(); len(p.LaunchExecutors) != 0 {
		t.Fatalf("launched %d executors, want none", len(p.LaunchExecutors))
	}
}

func TestSchedule_Constraints_Apps(t *testing.T) {
	tests := []struct {
		name        string
		constraints []string
		want        map[string]int
	}{
		{"equal", []string{"zone=a"}, map[string]int{"w1": 4, "w2": 4}},
		{"not equal (a worker without the label matches)", []string{"zone!=a"}, map[string]int{"w3": 4, "w4": 4}},
		{"both", []string{"zone=a", "disk=ssd"}, map[string]int{"w1": 4}},
		{"none match", []string{"zone=z"}, map[string]int{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHarness(t)
			h.Worker("w1", 4, 64<<10).Labels = schemas.Labels{"zone": "a", "disk": "ssd"}
			h.Worker("w2", 4, 64<<10).Labels = schemas.Labels{"zone": "a"}
			h.Worker("w3", 4, 64<<10).Labels = schemas.Labels{"zone": "b"}
			h.Worker("w4", 4, 64<<10)
			h.App("app-1", 1, 512, 0).Constraints = tc.constraints
			p := h.Schedule()
			if got := coresPerWorker(p); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("cores per worker = %v, want %v", got, tc.want)
			}
			h.AssertStable()
		})
	}
}

func TestSchedule_Constraints_SpreadAndConsolidateAmongMatching(t *testing.T) {
	for _, tc := range []struct {
		spread bool
		want   []int
	}{{true, []int{2, 2, 2, 2}}, {false, []int{4, 4}}} {
		h := NewHarness(t)
		h.Opts.SpreadOut = tc.spread
		for i := 0; i < 8; i++ {
			zone := "a"
			if i%2 == 1 {
				zone = "b"
			}
			h.Worker(fmt.Sprintf("w%d", i), 4, 64<<10).Labels = schemas.Labels{"zone": zone}
		}
		h.App("app-1", 1, 512, 8).Constraints = []string{"zone=b"}
		p := h.Schedule()
		for _, l := range p.LaunchExecutors {
			if h.Snap.Workers[l.Executor.WorkerID].Labels["zone"] != "b" {
				t.Fatalf("spread=%v: executor on %s outside zone b", tc.spread, l.Executor.WorkerID)
			}
		}
		if got := sortedCounts(coresPerWorker(p)); !slices.Equal(got, tc.want) {
			t.Fatalf("spread=%v: cores per worker = %v, want %v", tc.spread, got, tc.want)
		}
	}
}

func TestSchedule_Constraints_Drivers(t *testing.T) {
	h := NewHarness(t)
	h.Worker("w1", 4, 64<<10).Labels = schemas.Labels{"zone": "a"}
	h.Worker("w2", 4, 64<<10).Labels = schemas.Labels{"zone": "b"}
	for i := 0; i < 4; i++ {
		h.Driver(fmt.Sprintf("driver-%d", i), 1, 512, false).Constraints = []string{"zone!=a"}
	}
	p := h.Schedule()
	if len(p.LaunchDrivers) != 4 {
		t.Fatalf("launched %d drivers, want 4", len(p.LaunchDrivers))
	}
	for _, l := range p.LaunchDrivers {
		if l.WorkerID != "w2" {
			t.Fatalf("driver %s on %s, want w2 (zone!=a)", l.DriverID, l.WorkerID)
		}
	}
	h.Driver("driver-9", 1, 512, false).Constraints = []string{"zone!=a"}
	if p := h.Schedule(); len(p.LaunchDrivers) != 0 {
		t.Fatalf("a fifth driver was placed: %+v (w2 is full, w1 is zone a)", p.LaunchDrivers)
	}
}

func TestSchedule_WorkerSelection_Drivers(t *testing.T) {
	// w1: 8 cores 1 GB free; w2: 4 cores 8 GB; w3: 6 cores 4 GB.
	tests := []struct {
		policy string
		want   []string // workers of driver-0, driver-1, driver-2 (2 cores, 512 MB each)
	}{
		{"CORES_FREE_ASCENDING", []string{"w2", "w2", "w3"}},
		{"cores_free_desc", []string{"w1", "w1", "w3"}},
		{"MEMORY_FREE_ASC", []string{"w1", "w1", "w3"}},
		{"MEMORY_FREE_DESCENDING", []string{"w2", "w2", "w3"}},
		{"WORKER_ID", []string{"w1", "w1", "w2"}},
	}
	for _, tc := range tests {
		t.Run(tc.policy, func(t *testing.T) {
			h := NewHarness(t)
			var err error
			if h.Opts.WorkerSelection, err = ParseWorkerSelection(tc.policy); err != nil {
				t.Fatal(err)
			}
			h.Worker("w1", 8, 1024)
			h.Worker("w2", 4, 8192)
			h.Worker("w3", 6, 4096)
			for i := 0; i < 3; i++ {
				h.Driver(fmt.Sprintf("driver-%d", i), 2, 512, false)
			}
			p := h.Schedule()
			got := map[string]string{}
			for _, l := range p.LaunchDrivers {
				got[l.DriverID] = l.WorkerID
			}
			for i, w := range tc.want {
				if id := fmt.Sprintf("driver-%d", i); got[id] != w {
					t.Fatalf("%s on %s, want %s (all: %v)", id, got[id], w, got)
				}
			}
		})
	}
	if _, err := ParseWorkerSelection("MOST_FREE"); err == nil || !strings.Contains(err.Error(), "WORKER_ID") {
		t.Fatalf("bad policy: err = %v, want one naming the choices", err)
	}
}

// An executor an older epoch left LAUNCHING on an ALIVE worker (recovery
// could not settle it) is checked with its agent once per KillRetry: never
// for the current epoch's own launches, a worker recovery still waits on
// (UNKNOWN), or a lost worker (LOST there instead); and it keeps holding its
// resources until the check says otherwise (nothing is placed in its stead).
func TestSchedule_StaleLaunch_CheckedWithItsAgent(t *testing.T) {
	h := NewHarness(t)
	h.Opts.Epoch = 7
	h.Worker("w1", 1, 1024)
	h.Worker("w2", 4, 1024)
	h.Worker("w3", 4, 1024).State = schemas.WorkerUnknown
	h.Worker("w4", 4, 1024).State = schemas.WorkerDead
	h.App("app-1", 1, 256, 0).State = schemas.AppRunning
	old := func(id int, wid string, epoch uint64) {
		h.Executor("app-1", id, wid, 1, 256, schemas.ExecutorLaunching).Epoch = epoch
	}
	old(0, "w1", 5)                                                         // older epoch: checked
	old(1, "w2", 6)                                                         // older epoch: checked
	old(2, "w2", 7)                                                         // this epoch's own launch: not checked
	old(3, "w2", 0)                                                         // no epoch (a record from before the field): not checked
	old(4, "w3", 5)                                                         // UNKNOWN worker: recovery's
	old(5, "w4", 5)                                                         // DEAD worker: LOST
	h.Executor("app-1", 6, "w2", 1, 256, schemas.ExecutorRunning).Epoch = 5 // RUNNING: not a launch
	p := h.Schedule()
	want := []LaunchCheck{{WorkerID: "w1", Keys: []string{"app-1.0"}}, {WorkerID: "w2", Keys: []string{"app-1.1"}}}
	if fmt.Sprint(p.Checks) != fmt.Sprint(want) {
		t.Fatalf("checks = %+v, want %+v", p.Checks, want)
	}
	if len(p.ExecutorUpdates) != 1 || p.ExecutorUpdates[0].Key != "app-1.5" || p.ExecutorUpdates[0].State != schemas.ExecutorLost {
		t.Fatalf("executor updates = %+v, want app-1.5 LOST (its worker is DEAD)", p.ExecutorUpdates)
	}
	// Only w2 has room beyond what the unsettled records hold: w1's one
	// core stays held by its LAUNCHING record until the check settles it.
	for _, l := range p.LaunchExecutors {
		if l.Executor.WorkerID == "w1" {
			t.Fatalf("placed %s on w1, whose core a LAUNCHING record still holds", l.Executor.Key())
		}
	}
	// Sent once: the next pass does not repeat it...
	if p := h.Schedule(); len(p.Checks) != 0 {
		t.Fatalf("checks repeated before KillRetry: %+v", p.Checks)
	}
	// ...until the planner forgets it (KillRetry), as it forgets kills.
	delete(h.Snap.Checking, "w1")
	if p := h.Schedule(); fmt.Sprint(p.Checks) != fmt.Sprint([]LaunchCheck{{WorkerID: "w1", Keys: []string{"app-1.0"}}}) {
		t.Fatalf("after forgetting w1's check: checks = %+v", p.Checks)
	}
	// Without an epoch (Options.Epoch 0) nothing is checked.
	h.Opts.Epoch = 0
	h.Snap.Checking = map[string]time.Time{}
	if p := h.Schedule(); len(p.Checks) != 0 {
		t.Fatalf("checks without an epoch: %+v", p.Checks)
	}
}
