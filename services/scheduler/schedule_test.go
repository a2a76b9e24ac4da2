package scheduler

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stoker/stoker/schemas"
)

func sortedCounts(m map[string]int) []int {
	v := slices.Collect(maps.Values(m))
	slices.Sort(v)
	return v
}

func TestSchedule_Apps_SpreadAndConsolidate(t *testing.T) {
	tests := []struct {
		name              string
		workers, wcores   int
		execCores, maxCor int
		spread            bool
		want              []int // cores launched per used worker, sorted
	}{
		{"seed 10x10 want 20 spread", 10, 10, 1, 20, true, []int{2, 2, 2, 2, 2, 2, 2, 2, 2, 2}},
		{"seed 10x10 want 20 consolidated", 10, 10, 1, 20, false, []int{10, 10}},
		{"two 4-core workers 4 execs spread", 2, 4, 1, 4, true, []int{2, 2}},
		{"two 4-core workers 4 execs consolidated", 2, 4, 1, 4, false, []int{4}},
		{"2-core executors spread", 3, 4, 2, 8, true, []int{2, 2, 4}},
		{"2-core executors consolidated", 3, 4, 2, 8, false, []int{4, 4}},
		{"no max takes everything", 3, 4, 1, 0, true, []int{4, 4, 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHarness(t)
			h.Opts.SpreadOut = tc.spread
			h.Workers(tc.workers, tc.wcores, 64<<10)
			h.App("app-1", tc.execCores, 512, tc.maxCor)
			p := h.Schedule()
			if got := sortedCounts(coresPerWorker(p)); !slices.Equal(got, tc.want) {
				t.Fatalf("cores per worker = %v, want %v", got, tc.want)
			}
			for _, l := range p.LaunchExecutors {
				if l.Executor.Cores != tc.execCores || l.Executor.State != schemas.ExecutorLaunching {
					t.Fatalf("executor %+v: want %d cores LAUNCHING", l.Executor, tc.execCores)
				}
			}
			if len(p.AppUpdates) != 1 || p.AppUpdates[0].State != schemas.AppRunning {
				t.Fatalf("app updates = %+v, want one → RUNNING", p.AppUpdates)
			}
			if got, want := p.AppUpdates[0].NextExecutorID, len(p.LaunchExecutors); got != want {
				t.Fatalf("next executor id = %d, want %d", got, want)
			}
			h.AssertStable()
		})
	}
}

func TestSchedule_Apps_MemoryLimitsExecutorsPerWorker(t *testing.T) {
	h := NewHarness(t)
	h.Worker("w1", 16, 4096)
	h.App("app-1", 1, 1024, 0)
	p := h.Schedule()
	if len(p.LaunchExecutors) != 4 {
		t.Fatalf("launched %d executors, want 4 (memory bound)", len(p.LaunchExecutors))
	}
	h.AssertStable()
}

func TestSchedule_Apps_MaxCoresCountsGrantedExecutors(t *testing.T) {
	h := NewHarness(t)
	h.Workers(4, 8, 64<<10)
	a := h.App("app-1", 2, 256, 9)
	a.State, a.NextExecutorID = schemas.AppRunning, 3
	h.Executor("app-1", 0, "w00", 2, 256, schemas.ExecutorRunning)
	h.Executor("app-1", 1, "w01", 2, 256, schemas.ExecutorFailed) // holds nothing
	h.Executor("app-1", 5, "w01", 2, 256, schemas.ExecutorExited) // id taken
	p := h.Schedule()
	// 9 max, 2 granted: 7 left → three 2-core executors (6 cores), 1 core unused.
	if len(p.LaunchExecutors) != 3 {
		t.Fatalf("launched %d, want 3: %+v", len(p.LaunchExecutors), p.LaunchExecutors)
	}
	var ids []int
	for _, l := range p.LaunchExecutors {
		ids = append(ids, l.Executor.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []int{6, 7, 8}) {
		t.Fatalf("executor ids = %v, want [6 7 8] (after the highest existing id)", ids)
	}
	if u := p.AppUpdates[0]; u.State != "" || u.NextExecutorID != 9 {
		t.Fatalf("app update = %+v, want state kept and next id 9", u)
	}
	h.AssertStable()
}

func TestSchedule_Apps_FIFOAndTooBigWaits(t *testing.T) {
	h := NewHarness(t)
	h.Workers(2, 4, 8192)
	h.App("app-1", 4, 1024, 4)
	h.App("app-2", 8, 1024, 0) // fits on no worker
	h.App("app-3", 1, 1024, 0)
	p := h.Schedule()
	got := map[string]int{}
	for _, l := range p.LaunchExecutors {
		got[l.Executor.AppID] += l.Executor.Cores
	}
	if got["app-1"] != 4 || got["app-2"] != 0 || got["app-3"] != 4 {
		t.Fatalf("cores per app = %v, want app-1:4 app-3:4", got)
	}
	if h.Snap.Apps["app-2"].State != schemas.AppWaiting {
		t.Fatalf("app-2 = %s, want WAITING", h.Snap.Apps["app-2"].State)
	}
	h.AssertStable()
}

func TestSchedule_Drivers_RoundRobin(t *testing.T) {
	h := NewHarness(t)
	h.Workers(3, 2, 4096)
	for i := 0; i < 3; i++ {
		h.Driver(fmt.Sprintf("driver-%d", i), 1, 512, false)
	}
	p := h.Schedule()
	if len(p.LaunchDrivers) != 3 {
		t.Fatalf("launched %d drivers, want 3", len(p.LaunchDrivers))
	}
	on := map[string]int{}
	for _, l := range p.LaunchDrivers {
		on[l.WorkerID]++
		if l.Attempt != 1 || l.From != schemas.DriverSubmitted || l.Driver.State != schemas.DriverRunning {
			t.Fatalf("launch %+v: want attempt 1 from SUBMITTED, record RUNNING", l)
		}
	}
	if len(on) != 3 {
		t.Fatalf("drivers per worker = %v, want one on each (round robin)", on)
	}
	h.AssertStable()
}

func TestSchedule_Drivers_FitNowhereWaitsInOrder(t *testing.T) {
	h := NewHarness(t)
	h.Worker("w1", 1, 1024)
	h.Driver("driver-big", 4, 512, false)
	h.Driver("driver-a", 1, 512, false)
	h.Driver("driver-b", 1, 512, false)
	p := h.Schedule()
	if len(p.LaunchDrivers) != 1 || p.LaunchDrivers[0].DriverID != "driver-a" {
		t.Fatalf("launches = %+v, want only driver-a", p.LaunchDrivers)
	}
	for _, id := range []string{"driver-big", "driver-b"} {
		if s := h.Snap.Drivers[id].State; s != schemas.DriverSubmitted {
			t.Fatalf("%s = %s, want SUBMITTED", id, s)
		}
	}
	h.AssertStable()
}

func TestSchedule_Drivers_BeforeApps(t *testing.T) {
	h := NewHarness(t)
	h.Worker("w1", 4, 4096)
	h.App("app-1", 1, 256, 0)
	h.Driver("driver-1", 1, 512, false)
	p := h.Schedule()
	if len(p.LaunchDrivers) != 1 || len(p.LaunchExecutors) != 3 {
		t.Fatalf("drivers %d executors %d, want 1 and 3", len(p.LaunchDrivers), len(p.LaunchExecutors))
	}
	h.AssertStable()
}

func TestSchedule_Resources_NeverNegative(t *testing.T) {
	h := NewHarness(t)
	h.Worker("w1", 4, 1024)
	a := h.App("app-1", 1, 128, 0)
	a.State = schemas.AppRunning
	h.Executor("app-1", 0, "w1", 6, 2048, schemas.ExecutorRunning) // more than the worker has
	h.Driver("driver-1", 1, 128, false)
	p := h.Schedule()
	if len(p.LaunchExecutors)+len(p.LaunchDrivers) != 0 {
		t.Fatalf("placed on an over-committed worker: %+v", p)
	}
	if len(p.Inconsistencies) != 2 || !strings.Contains(p.Inconsistencies[0], "w1") {
		t.Fatalf("inconsistencies = %q, want cores and memory of w1", p.Inconsistencies)
	}
}

// A pass with nothing to place builds no free resources per worker, yet
// still reports a worker held beyond what it has.
func TestSchedule_Resources_OvercommitReportedWithNothingWaiting(t *testing.T) {
	h := NewHarness(t)
	h.Worker("w1", 4, 1024)
	h.Worker("w2", 4, 1024)
	a := h.App("app-1", 1, 128, 0)
	a.State = schemas.AppRunning
	a.MaxCores = 6
	h.Executor("app-1", 0, "w1", 6, 2048, schemas.ExecutorRunning) // more than the worker has
	p := h.Schedule()
	if len(p.LaunchExecutors)+len(p.LaunchDrivers) != 0 {
		t.Fatalf("placed with the app at its cap: %+v", p)
	}
	want := []string{"worker w1: executors and drivers hold 2048 MB of 1024", "worker w1: executors and drivers hold 6 cores of 4"}
	if !slices.Equal(p.Inconsistencies, want) {
		t.Fatalf("inconsistencies = %q, want %q", p.Inconsistencies, want)
	}
}

func TestSchedule_Resources_AvoidedWorker(t *testing.T) {
	h := NewHarness(t)
	h.Workers(2, 4, 4096)
	h.Opts.Avoid = map[string]bool{"w00": true}
	h.App("app-1", 1, 128, 0)
	p := h.Schedule()
	if got := coresPerWorker(p); got["w00"] != 0 || got["w01"] != 4 {
		t.Fatalf("cores per worker = %v, want only w01", got)
	}
}

func TestReconcile_LostWorkers(t *testing.T) {
	tests := []struct {
		name     string
		state    schemas.WorkerState // "" = no record
		wantLost bool
	}{
		{"dead", schemas.WorkerDead, true},
		{"decommissioned", schemas.WorkerDecommissioned, true},
		{"missing", "", true},
		{"unknown is recovery's", schemas.WorkerUnknown, false},
		{"alive", schemas.WorkerAlive, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHarness(t)
			if tc.state != "" {
				h.Worker("w1", 4, 4096).State = tc.state
			}
			a := h.App("app-1", 1, 128, 2)
			a.State = schemas.AppRunning
			h.Executor("app-1", 0, "w1", 1, 128, schemas.ExecutorRunning)
			h.Executor("app-1", 1, "w1", 1, 128, schemas.ExecutorLaunching)
			h.Executor("app-1", 2, "w1", 1, 128, schemas.ExecutorExited)
			p := Reconcile(h.Snap, h.Opts)
			if !tc.wantLost {
				if !p.Empty() {
					t.Fatalf("plan = %+v, want empty", p)
				}
				return
			}
			if len(p.ExecutorUpdates) != 2 {
				t.Fatalf("executor updates = %+v, want 2 LOST", p.ExecutorUpdates)
			}
			for _, u := range p.ExecutorUpdates {
				if u.State != schemas.ExecutorLost || u.Message == "" {
					t.Fatalf("update %+v, want LOST with a reason", u)
				}
			}
			h.Schedule()
			h.AssertStable()
		})
	}
}

func TestReconcile_DriverOnLostWorker(t *testing.T) {
	tests := []struct {
		name       string
		supervise  bool
		killReq    bool
		otherRoom  bool
		wantUpdate schemas.DriverState // "" when relaunched at once
		wantLaunch bool
		wantApp    schemas.AppState
	}{
		{"supervised relaunches elsewhere", true, false, true, "", true, ""},
		{"supervised waits without room", true, false, false, schemas.DriverSubmitted, false, ""},
		{"unsupervised errors and fails its app", false, false, true, schemas.DriverError, false, schemas.AppFailed},
		{"kill requested ends killed", true, true, true, schemas.DriverKilled, false, schemas.AppKilled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHarness(t)
			h.Worker("w-dead", 4, 4096).State = schemas.WorkerDead
			if tc.otherRoom {
				h.Worker("w-ok", 4, 4096)
			}
			d := h.Driver("driver-1", 1, 512, tc.supervise)
			d.State, d.WorkerID, d.Attempts, d.KillRequested = schemas.DriverRunning, "w-dead", 2, tc.killReq
			a := h.App("app-1", 1, 128, 1)
			a.DriverID = "driver-1"
			a.State = schemas.AppRunning
			p := h.Schedule()
			if tc.wantUpdate != "" {
				if len(p.DriverUpdates) != 1 || p.DriverUpdates[0].State != tc.wantUpdate {
					t.Fatalf("driver updates = %+v, want %s", p.DriverUpdates, tc.wantUpdate)
				}
				// schemas.LoseDriver: a relaunched driver names no worker,
				// an ended one keeps the worker it ran on (history).
				wantWorker := "w-dead"
				if tc.wantUpdate == schemas.DriverSubmitted {
					wantWorker = ""
				}
				if u := p.DriverUpdates[0]; u.WorkerID != wantWorker || u.From != schemas.DriverRunning || u.FromWorker != "w-dead" {
					t.Fatalf("driver update %+v: want from RUNNING on w-dead, on %q", u, wantWorker)
				}
			} else if len(p.DriverUpdates) != 0 {
				t.Fatalf("driver updates = %+v, want none", p.DriverUpdates)
			}
			if tc.wantLaunch {
				if len(p.LaunchDrivers) != 1 {
					t.Fatalf("driver launches = %+v, want 1", p.LaunchDrivers)
				}
				l := p.LaunchDrivers[0]
				if l.WorkerID != "w-ok" || l.Attempt != 3 || l.From != schemas.DriverRunning || l.FromWorker != "w-dead" {
					t.Fatalf("launch %+v: want w-ok attempt 3 from RUNNING on w-dead", l)
				}
			} else if len(p.LaunchDrivers) != 0 {
				t.Fatalf("driver launches = %+v, want none", p.LaunchDrivers)
			}
			if got := h.Snap.Apps["app-1"].State; tc.wantApp != "" && got != tc.wantApp {
				t.Fatalf("app = %s, want %s", got, tc.wantApp)
			}
			if tc.supervise && !tc.killReq && !tc.otherRoom {
				// Room appears: the waiting driver is placed, attempts kept + 1.
				h.Worker("w-new", 4, 4096)
				p := h.Schedule()
				if len(p.LaunchDrivers) != 1 || p.LaunchDrivers[0].Attempt != 3 || p.LaunchDrivers[0].From != schemas.DriverSubmitted {
					t.Fatalf("launches = %+v, want driver-1 attempt 3 from SUBMITTED", p.LaunchDrivers)
				}
			}
			h.AssertStable()
		})
	}
}

func TestReconcile_AppFailsAfterRetries(t *testing.T) {
	tests := []struct {
		name     string
		failures int
		running  bool
		want     bool
	}{
		{"at the limit with none running", 10, false, true},
		{"below the limit", 9, false, false},
		{"at the limit with one running", 10, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHarness(t)
			h.Worker("w1", 4, 4096)
			a := h.App("app-1", 1, 128, 2)
			a.State, a.ConsecutiveFailures, a.NextExecutorID = schemas.AppRunning, tc.failures, 2
			h.Executor("app-1", 0, "w1", 1, 128, schemas.ExecutorLaunching)
			if tc.running {
				h.Executor("app-1", 1, "w1", 1, 128, schemas.ExecutorRunning)
			}
			p := h.Schedule()
			failed := len(p.AppUpdates) == 1 && p.AppUpdates[0].State == schemas.AppFailed
			if failed != tc.want {
				t.Fatalf("app updates = %+v, want failed=%v", p.AppUpdates, tc.want)
			}
			if tc.want {
				if !strings.Contains(p.AppUpdates[0].Message, "10 times in a row") {
					t.Fatalf("message %q", p.AppUpdates[0].Message)
				}
				// Its launching executor is killed, nothing new is placed.
				if len(p.Kills) != 1 || p.Kills[0].Kill.AppID != "app-1" || len(p.LaunchExecutors) != 0 {
					t.Fatalf("kills %+v launches %+v, want one kill and no launch", p.Kills, p.LaunchExecutors)
				}
			}
			h.AssertStable()
		})
	}
}

func TestReconcile_AppEndsWithItsDriver(t *testing.T) {
	tests := []struct {
		driver schemas.DriverState
		want   schemas.AppState
	}{
		{schemas.DriverFinished, schemas.AppFinished},
		{schemas.DriverFailed, schemas.AppFailed},
		{schemas.DriverKilled, schemas.AppKilled},
		{schemas.DriverError, schemas.AppFailed},
		{schemas.DriverRelaunching, ""},
		{schemas.DriverUnknown, ""},
	}
	for _, tc := range tests {
		t.Run(string(tc.driver), func(t *testing.T) {
			h := NewHarness(t)
			h.Worker("w1", 4, 4096)
			d := h.Driver("driver-1", 1, 128, false)
			d.State, d.WorkerID = tc.driver, "w1"
			a := h.App("app-1", 1, 128, 1)
			a.State, a.DriverID, a.NextExecutorID = schemas.AppRunning, "driver-1", 1
			h.Executor("app-1", 0, "w1", 1, 128, schemas.ExecutorRunning)
			p := h.Schedule()
			if tc.want == "" {
				if len(p.AppUpdates)+len(p.Kills) != 0 {
					t.Fatalf("plan = %+v, want nothing for the app", p)
				}
				return
			}
			if len(p.AppUpdates) != 1 || p.AppUpdates[0].State != tc.want {
				t.Fatalf("app updates = %+v, want %s", p.AppUpdates, tc.want)
			}
			if len(p.Kills) != 1 || p.Kills[0].WorkerID != "w1" || p.Kills[0].Kill.ExecutorID != 0 {
				t.Fatalf("kills = %+v, want executor 0 on w1", p.Kills)
			}
			h.AssertStable()
		})
	}
}

func TestReconcile_KillsForEndedAppsAndKillRequests(t *testing.T) {
	h := NewHarness(t)
	h.Worker("w1", 8, 8192)
	h.Worker("w2", 8, 8192).State = schemas.WorkerUnknown
	a := h.App("app-1", 1, 128, 0)
	a.State = schemas.AppKilled
	h.Executor("app-1", 0, "w1", 1, 128, schemas.ExecutorRunning)
	h.Executor("app-1", 1, "w2", 1, 128, schemas.ExecutorRunning) // UNKNOWN worker: recovery's
	h.Executor("app-gone", 0, "w1", 1, 128, schemas.ExecutorLaunching)
	d := h.Driver("driver-1", 1, 128, true)
	d.State, d.WorkerID, d.KillRequested = schemas.DriverRunning, "w1", true
	sub := h.Driver("driver-2", 1, 128, false)
	sub.KillRequested = true // registration ends it; never placed
	p := h.Schedule()
	var targets []string
	for _, k := range p.Kills {
		if k.WorkerID != "w1" {
			t.Fatalf("kill %+v sent to %s", k, k.WorkerID)
		}
		targets = append(targets, KillTarget(k.Kill))
	}
	want := []string{"driver/driver-1", "executor/app-1.0", "executor/app-gone.0"}
	if !slices.Equal(targets, want) {
		t.Fatalf("kills = %v, want %v", targets, want)
	}
	if len(p.LaunchDrivers) != 0 {
		t.Fatalf("placed a driver with a kill request: %+v", p.LaunchDrivers)
	}
	h.AssertStable()
	// The service forgets sent kills after a while: they are sent again.
	clear(h.Snap.Killing)
	if p := Schedule(h.Snap, h.Opts); len(p.Kills) != 3 {
		t.Fatalf("kills after forgetting = %+v, want 3 again", p.Kills)
	}
}

func TestReconcile_UnknownLeftToRecovery(t *testing.T) {
	h := NewHarness(t)
	h.Worker("w1", 4, 4096)
	a := h.App("app-1", 1, 128, 0)
	a.State, a.ConsecutiveFailures = schemas.AppUnknown, 99
	d := h.Driver("driver-1", 1, 128, false)
	d.State = schemas.DriverUnknown
	h.Executor("app-1", 0, "w1", 1, 128, schemas.ExecutorRunning)
	if p := Schedule(h.Snap, h.Opts); !p.Empty() {
		t.Fatalf("plan = %+v, want nothing for UNKNOWN records", p)
	}
}

func TestSchedule_Idempotent_MixedCluster(t *testing.T) {
	for _, spread := range []bool{true, false} {
		t.Run(fmt.Sprintf("spread=%v", spread), func(t *testing.T) {
			h := NewHarness(t)
			h.Opts.SpreadOut = spread
			h.Workers(7, 6, 6000)
			h.Worker("w-dead", 8, 8192).State = schemas.WorkerDead
			for i := 0; i < 5; i++ {
				h.Driver(fmt.Sprintf("driver-%d", i), 1, 500, i%2 == 0)
				h.App(fmt.Sprintf("app-%d", i), 1+i%3, 700, 4+i)
			}
			d := h.Driver("driver-x", 2, 500, true)
			d.State, d.WorkerID = schemas.DriverRunning, "w-dead"
			h.Executor("app-0", 0, "w-dead", 1, 700, schemas.ExecutorRunning)
			p := h.Schedule()
			if len(p.LaunchExecutors) == 0 || len(p.LaunchDrivers) != 6 || len(p.ExecutorUpdates) != 1 {
				t.Fatalf("plan = %+v", p)
			}
			// Derived usage never exceeds a worker.
			st := newPass(h.Snap, h.Opts)
			for id, w := range h.Snap.Workers {
				if u := st.used[id]; u.Cores > w.Cores || u.MemoryMB > w.MemoryMB {
					t.Fatalf("worker %s over-committed: %d cores %d MB", id, u.Cores, u.MemoryMB)
				}
			}
			h.AssertStable()
		})
	}
}

// A RunOnce app (`stoker run`): executors that exit 0 are done, not
// replaced; a failed one is replaced; the app FINISHES when all are done.
func TestSchedule_RunOnce_ExitedNotReplacedThenFinished(t *testing.T) {
	h := NewHarness(t)
	h.Workers(2, 4, 4096)
	a := h.App("app-1", 1, 64, 2)
	a.RunOnce = true
	p := h.Schedule()
	if len(p.LaunchExecutors) != 2 {
		t.Fatalf("first pass launched %d executors, want 2", len(p.LaunchExecutors))
	}
	zero, three := 0, 3
	// Executor 0 finishes cleanly, executor 1 fails.
	for _, e := range h.Snap.Executors {
		n := *e
		if e.ID == 0 {
			n.State, n.ExitCode = schemas.ExecutorExited, &zero
		} else {
			n.State, n.ExitCode = schemas.ExecutorFailed, &three
		}
		h.Snap.Executors[e.Key()] = &n
	}
	p = h.Schedule()
	if len(p.LaunchExecutors) != 1 || p.LaunchExecutors[0].Executor.ID != 2 {
		t.Fatalf("after one exit 0 and one failure: launches %+v, want only a replacement for the failed one", p.LaunchExecutors)
	}
	for _, u := range p.AppUpdates {
		if u.State == schemas.AppFinished {
			t.Fatalf("app finished while an executor still runs: %+v", u)
		}
	}
	// The replacement exits 0 too: nothing left to run, the app FINISHES.
	e := *h.Snap.Executors[schemas.ExecutorKey("app-1", 2)]
	e.State, e.ExitCode = schemas.ExecutorExited, &zero
	h.Snap.Executors[e.Key()] = &e
	p = h.Schedule()
	if len(p.LaunchExecutors) != 0 {
		t.Fatalf("launched %d executors for a RunOnce app whose work is done", len(p.LaunchExecutors))
	}
	if len(p.AppUpdates) != 1 || p.AppUpdates[0].State != schemas.AppFinished {
		t.Fatalf("app updates %+v, want FINISHED", p.AppUpdates)
	}
	h.AssertStable()
}

// Without RunOnce, an executor that exits is replaced (Spark's behaviour).
func TestSchedule_ExitedExecutorReplacedByDefault(t *testing.T) {
	h := NewHarness(t)
	h.Workers(1, 4, 4096)
	h.App("app-1", 1, 64, 1)
	h.Schedule()
	zero := 0
	for _, e := range h.Snap.Executors {
		n := *e
		n.State, n.ExitCode = schemas.ExecutorExited, &zero
		h.Snap.Executors[e.Key()] = &n
	}
	if p := h.Schedule(); len(p.LaunchExecutors) != 1 {
		t.Fatalf("launches %+v, want one replacement", p.LaunchExecutors)
	}
}

// An app with no cap of its own gets the cluster's default (Spark's
// spark.deploy.defaultCores); its own cap wins; 0 is no cap.
func TestSchedule_Apps_DefaultCoresCapsUncappedApps(t *testing.T) {
	for _, tc := range []struct {
		name               string
		appMax, defaultCap int
		want               int // executors of 1 core
	}{
		{"default caps", 0, 3, 3},
		{"own cap wins", 5, 3, 5},
		{"no default: all free cores", 0, 0, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHarness(t)
			h.Opts.DefaultCores = tc.defaultCap
			h.Workers(2, 8, 64<<10)
			h.App("app-1", 1, 256, tc.appMax)
			if p := h.Schedule(); len(p.LaunchExecutors) != tc.want {
				t.Fatalf("launched %d executors, want %d", len(p.LaunchExecutors), tc.want)
			}
			h.AssertStable()
		})
	}
}

// TestSchedule_Cordoned_NoNewPlacements: a cordoned worker gets no new
// executor or driver, keeps what runs on it, and counts again once
// uncordoned.
func TestSchedule_Cordoned_NoNewPlacements(t *testing.T) {
	h := NewHarness(t)
	h.Workers(2, 4, 4096)
	h.Snap.Workers["w00"].Cordoned = true
	a := h.App("app-run", 1, 128, 1)
	a.State = schemas.AppRunning
	h.Executor("app-run", 0, "w00", 1, 128, schemas.ExecutorRunning)
	h.App("app-1", 1, 128, 0)
	h.Driver("driver-1", 1, 128, false)
	p := h.Schedule()
	if got := coresPerWorker(p); got["w00"] != 0 || got["w01"] == 0 {
		t.Fatalf("cores per worker = %v, want only w01", got)
	}
	for _, l := range p.LaunchDrivers {
		if l.WorkerID != "w01" {
			t.Fatalf("driver placed on %s, want w01", l.WorkerID)
		}
	}
	if len(p.Kills) != 0 {
		t.Fatalf("kills on a cordoned worker: %+v", p.Kills)
	}
	h.AssertStable()

	h.Snap.Workers["w00"].Cordoned = false
	h.App("app-2", 1, 128, 0)
	p = h.Schedule()
	if got := coresPerWorker(p); got["w00"] == 0 {
		t.Fatalf("uncordoned: cores per worker = %v, want w00 used", got)
	}
}

// TestSchedule_Apps_WaitingWithExecutorsMovesToRunning: an app whose
// executors hold cores (placed, RUNNING) but whose record still says
// WAITING (the write that moved it to RUNNING failed while a bus node
// died) is moved to RUNNING, once; an app WAITING with nothing placed and
// no room stays WAITING.
func TestSchedule_Apps_WaitingWithExecutorsMovesToRunning(t *testing.T) {
	h := NewHarness(t)
	h.Workers(2, 1, 64<<10)
	h.App("app-1", 1, 256, 2).NextExecutorID = 2
	h.Executor("app-1", 0, "w00", 1, 256, schemas.ExecutorRunning)
	h.Executor("app-1", 1, "w01", 1, 256, schemas.ExecutorRunning)
	h.App("app-2", 1, 256, 2) // no room left: waits
	p := h.Schedule()
	if len(p.LaunchExecutors) != 0 {
		t.Fatalf("launched %+v, want nothing (no room)", p.LaunchExecutors)
	}
	want := []AppUpdate{{AppID: "app-1", From: schemas.AppWaiting, State: schemas.AppRunning}}
	if !slices.Equal(p.AppUpdates, want) {
		t.Fatalf("app updates = %+v, want %+v", p.AppUpdates, want)
	}
	if st := h.Snap.Apps["app-1"].State; st != schemas.AppRunning {
		t.Fatalf("app-1 = %s after the pass, want RUNNING", st)
	}
	h.AssertStable()
}

// TestSchedule_MaxInFlight_PlacesWithinTheWindow: with MaxInFlight a pass
// places no more than the window less what is already LAUNCHING, apps in
// submission order; as launches are reported RUNNING the next passes place
// the rest, and the whole demand is placed in the end, each id once.
func TestSchedule_MaxInFlight_PlacesWithinTheWindow(t *testing.T) {
	h := NewHarness(t)
	h.Opts.MaxInFlight = 5
	h.Workers(4, 4, 64<<10)
	h.App("app-1", 1, 256, 6)
	h.App("app-2", 1, 256, 6)
	h.Executor("app-2", 0, "w03", 1, 256, schemas.ExecutorLaunching) // already in flight: counts
	h.Snap.Apps["app-2"].NextExecutorID = 1

	count := func(p Plan) map[string]int {
		got := map[string]int{}
		for _, l := range p.LaunchExecutors {
			got[l.Executor.AppID]++
		}
		return got
	}
	if got := count(h.Schedule()); got["app-1"] != 4 || got["app-2"] != 0 {
		t.Fatalf("first pass placed %v, want app-1:4 (window 5, one LAUNCHING already) and app-2 none", got)
	}
	if p := Schedule(h.Snap, h.Opts); len(p.LaunchExecutors) != 0 {
		t.Fatalf("a pass with the window full placed %d executors", len(p.LaunchExecutors))
	}
	seen := map[string]bool{}
	for pass := 0; pass < 10; pass++ {
		launching := 0
		for k, e := range h.Snap.Executors {
			if e.State == schemas.ExecutorLaunching {
				seen[k] = true
				e.State = schemas.ExecutorRunning // reported
				launching++
			}
		}
		if launching > 5 {
			t.Fatalf("%d LAUNCHING at once, window 5", launching)
		}
		h.Schedule()
	}
	got := map[string]int{}
	for _, e := range h.Snap.Executors {
		if e.State != schemas.ExecutorRunning {
			t.Fatalf("executor %s is %s after the passes, want RUNNING", e.Key(), e.State)
		}
		got[e.AppID]++
	}
	if got["app-1"] != 6 || got["app-2"] != 6 || len(seen) != 12 {
		t.Fatalf("placed %v (%d launches seen), want 6 each, 12 launches", got, len(seen))
	}
	h.AssertStable()
}

// TestSchedule_MaxInFlight_BoundsKillsInFlight: the window bounds the
// kills in flight as it does launches: an ended app's executors are killed
// a window at a time, a kill counting until its executor is reported
// ended; every one is killed in the end, none twice.
func TestSchedule_MaxInFlight_BoundsKillsInFlight(t *testing.T) {
	h := NewHarness(t)
	h.Opts.MaxInFlight = 3
	h.Workers(2, 8, 64<<10)
	a := h.App("app-1", 1, 256, 0)
	a.State = schemas.AppFinished
	for i := range 7 {
		h.Executor("app-1", i, fmt.Sprintf("w%02d", i%2), 1, 256, schemas.ExecutorRunning)
	}
	killed := map[string]int{}
	for pass := 0; pass < 10; pass++ {
		p := h.Schedule()
		if len(p.Kills) > 3 {
			t.Fatalf("pass %d sent %d kills, window 3", pass, len(p.Kills))
		}
		inFlight := 0
		for _, e := range h.Snap.Executors {
			if _, sent := h.Snap.Killing[KillTarget(schemas.Kill{AppID: e.AppID, ExecutorID: e.ID})]; sent && e.State.Holds() {
				inFlight++
			}
		}
		if inFlight > 3 {
			t.Fatalf("pass %d: %d kills in flight, window 3", pass, inFlight)
		}
		for _, k := range p.Kills {
			key := schemas.ExecutorKey(k.Kill.AppID, k.Kill.ExecutorID)
			killed[key]++
			if pass%2 == 1 { // reported a pass later, sometimes
				continue
			}
			e := *h.Snap.Executors[key]
			e.State = schemas.ExecutorKilled
			h.Snap.Executors[key] = &e
		}
		if pass%2 == 1 {
			for _, e := range h.Snap.Executors {
				if e.State == schemas.ExecutorRunning {
					if _, sent := h.Snap.Killing[KillTarget(schemas.Kill{AppID: e.AppID, ExecutorID: e.ID})]; sent {
						c := *e
						c.State = schemas.ExecutorKilled
						h.Snap.Executors[e.Key()] = &c
					}
				}
			}
		}
	}
	if len(killed) != 7 {
		t.Fatalf("killed %d executors, want all 7: %v", len(killed), killed)
	}
	for k, n := range killed {
		if n != 1 {
			t.Fatalf("executor %s killed %d times", k, n)
		}
	}
}

// appendKillTarget builds KillTarget's bytes (the plan's kills sort by them
// without allocating), for drivers and executors alike.
func TestAppendKillTarget_IsKillTarget(t *testing.T) {
	for _, k := range []schemas.Kill{
		{DriverID: "driver-20261205-0001"},
		{AppID: "app-20261205-0001", ExecutorID: 0},
		{AppID: "app-20261205-0001", ExecutorID: 12345},
		{AppID: "a-very-long-application-id-that-does-not-fit-in-the-stack-buffer-of-the-sort-comparator-at-all", ExecutorID: 7},
	} {
		if got, want := string(appendKillTarget([]byte("x"), k)), "x"+KillTarget(k); got != want {
			t.Errorf("appendKillTarget(%+v) = %q, want %q", k, got, want)
		}
	}
}

// Looking a kill up in Snapshot.Killing builds no key on the heap: every
// executor's end and every pass's kills look there.
func TestKillSent_DoesNotAllocate(t *testing.T) {
	k := schemas.Kill{AppID: "app-20261205-0001", ExecutorID: 4711}
	killing := map[string]time.Time{KillTarget(k): time.Unix(1, 0)}
	if at, ok := killSent(killing, k); !ok || !at.Equal(time.Unix(1, 0)) {
		t.Fatalf("killSent = %v %v, want the time stored", at, ok)
	}
	if _, ok := killSent(killing, schemas.Kill{AppID: k.AppID, ExecutorID: 4712}); ok {
		t.Fatal("killSent found a kill never sent")
	}
	if n := testing.AllocsPerRun(100, func() { killSent(killing, k) }); n != 0 {
		t.Errorf("killSent allocates %.0f times", n)
	}
	kills := []KillCmd{{WorkerID: "w", Kill: k}, {WorkerID: "w", Kill: schemas.Kill{AppID: k.AppID, ExecutorID: 12}}}
	st := &pass{}
	if n := testing.AllocsPerRun(100, func() {
		st.p.Kills = append(st.p.Kills[:0], kills...)
		st.sort()
	}); n != 0 {
		t.Errorf("sorting kills allocates %.0f times", n)
	}
}
