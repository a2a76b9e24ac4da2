package scheduler

import (
	"strings"
	"testing"
	"time"

	"github.com/stoker/stoker/schemas"
)

// TestDrainKills is the pure kill rule of a drain, per app.
func TestDrainKills(t *testing.T) {
	for _, c := range []struct {
		name                                      string
		target, running, left, fresh, spent, want int
	}{
		{"capped: no replacement running yet", 4, 2, 2, 0, 0, 0},
		{"capped: one replacement running", 4, 3, 2, 1, 0, 1},
		{"capped: both running", 4, 4, 2, 2, 0, 2},
		{"capped: one already killed, one more running", 4, 4, 1, 2, 1, 1},
		{"capped: app asked for fewer than it has", 2, 2, 2, 0, 0, 2},
		{"capped: never more than left", 1, 5, 2, 0, 0, 2},
		{"uncapped: no replacement", unbounded, 3, 2, 0, 0, 0},
		{"uncapped: one fresh replacement", unbounded, 4, 2, 1, 0, 1},
		{"uncapped: fresh used up by an exit", unbounded, 4, 1, 1, 1, 0},
		{"uncapped: never negative", unbounded, 0, 1, 0, 3, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := drainKills(c.target, c.running, c.left, c.fresh, c.spent); got != c.want {
				t.Fatalf("drainKills(%d, %d, %d, %d, %d) = %d, want %d", c.target, c.running, c.left, c.fresh, c.spent, got, c.want)
			}
		})
	}
}

// drainHarness: w00..w02 of 4 cores; app-1 (4 executors of 1 core, max 4
// cores) RUNNING with executors 0, 1 on w00 and 2, 3 on w01; w00 draining
// until an hour from the harness clock.
func drainHarness(t *testing.T) *Harness {
	t.Helper()
	h := NewHarness(t)
	h.Workers(3, 4, 4096)
	a := h.App("app-1", 1, 128, 4)
	a.State, a.NextExecutorID = schemas.AppRunning, 4
	for id, wid := range []string{"w00", "w00", "w01", "w01"} {
		h.Executor("app-1", id, wid, 1, 128, schemas.ExecutorRunning)
	}
	h.Opts.Now = h.clock
	h.Snap.Workers["w00"].Drain = &schemas.Drain{Since: h.clock, Deadline: h.clock.Add(time.Hour), By: "request"}
	return h
}

// running counts app's executors RUNNING and not being killed.
func runningNotKilled(h *Harness, appID string) int {
	n := 0
	for _, e := range h.Snap.Executors {
		if e.AppID == appID && e.State == schemas.ExecutorRunning {
			if _, k := h.Snap.Killing[KillTarget(schemas.Kill{AppID: appID, ExecutorID: e.ID})]; !k {
				n++
			}
		}
	}
	return n
}

func setState(h *Harness, key string, st schemas.ExecutorState) {
	c := *h.Snap.Executors[key]
	c.State = st
	h.Snap.Executors[key] = &c
}

// TestSchedule_Drain_ReplacesThenKills: a draining worker's executors are
// replaced on other workers first, one kill per replacement RUNNING, the app
// never below its count minus one, then the worker is DECOMMISSIONED.
func TestSchedule_Drain_ReplacesThenKills(t *testing.T) {
	h := drainHarness(t)
	p := h.Schedule()
	if len(p.Kills) != 0 {
		t.Fatalf("kills before any replacement runs: %+v", p.Kills)
	}
	if got := coresPerWorker(p); got["w00"] != 0 || got["w01"]+got["w02"] != 2 {
		t.Fatalf("replacements per worker = %v, want 2 off w00", got)
	}
	if len(p.WorkerUpdates) != 0 {
		t.Fatalf("worker updates while executors run: %+v", p.WorkerUpdates)
	}
	h.AssertStable() // LAUNCHING replacements allow no kill
	var repl []string
	for _, l := range p.LaunchExecutors {
		repl = append(repl, l.Executor.Key())
	}
	for i, key := range repl {
		setState(h, key, schemas.ExecutorRunning)
		p = h.Schedule()
		if len(p.Kills) != 1 || p.Kills[0].WorkerID != "w00" || p.Kills[0].Drain == "" {
			t.Fatalf("replacement %d RUNNING: kills = %+v, want one on w00 with an event", i+1, p.Kills)
		}
		if n := runningNotKilled(h, "app-1"); n < 4 {
			t.Fatalf("after kill %d the app has %d executors RUNNING and not killed, want 4", i+1, n)
		}
		h.AssertStable()
	}
	for _, key := range []string{"app-1.0", "app-1.1"} {
		setState(h, key, schemas.ExecutorKilled)
	}
	p = h.Schedule()
	if len(p.WorkerUpdates) != 1 || p.WorkerUpdates[0].WorkerID != "w00" || p.WorkerUpdates[0].State != schemas.WorkerDecommissioned {
		t.Fatalf("worker updates = %+v, want w00 DECOMMISSIONED", p.WorkerUpdates)
	}
	if len(p.LaunchExecutors) != 0 || len(p.Kills) != 0 {
		t.Fatalf("decommissioning pass launched or killed: %+v", p)
	}
	h.AssertStable()
}

// TestSchedule_Drain_NoRoomWaitsForDeadline: with no room elsewhere nothing
// is killed before the deadline; at the deadline everything is.
func TestSchedule_Drain_NoRoomWaitsForDeadline(t *testing.T) {
	h := drainHarness(t)
	delete(h.Snap.Workers, "w02")
	h.Snap.Workers["w01"].Cores = 2 // full
	h.Driver("driver-1", 1, 128, false)
	d := h.Snap.Drivers["driver-1"]
	d.State, d.WorkerID = schemas.DriverRunning, "w00"
	p := h.Schedule()
	if len(p.Kills) != 0 || len(p.LaunchExecutors) != 0 || len(p.DriverUpdates) != 0 {
		t.Fatalf("before the deadline with no room: %+v", p)
	}
	h.Opts.Now = h.Snap.Workers["w00"].Drain.Deadline
	p = h.Schedule()
	var targets []string
	for _, k := range p.Kills {
		if k.WorkerID != "w00" || !strings.Contains(k.Drain, "deadline") {
			t.Fatalf("deadline kill %+v", k)
		}
		targets = append(targets, KillTarget(k.Kill))
	}
	if strings.Join(targets, " ") != "driver/driver-1 executor/app-1.0 executor/app-1.1" {
		t.Fatalf("deadline kills = %v", targets)
	}
	h.AssertStable()
}

// TestSchedule_Drain_SupervisedDriverRelaunchedElsewhere: a supervised
// driver on a draining worker is relaunched on another worker and killed
// there; an unsupervised one stays until the deadline.
func TestSchedule_Drain_SupervisedDriverRelaunchedElsewhere(t *testing.T) {
	h := NewHarness(t)
	h.Workers(2, 4, 4096)
	for _, sup := range []bool{true, false} {
		id := "driver-unsup"
		if sup {
			id = "driver-sup"
		}
		d := h.Driver(id, 1, 128, sup)
		d.State, d.WorkerID, d.Attempts = schemas.DriverRunning, "w00", 1
	}
	h.Opts.Now = h.clock
	h.Snap.Workers["w00"].Drain = &schemas.Drain{Since: h.clock, Deadline: h.clock.Add(time.Hour)}
	p := h.Schedule()
	if len(p.LaunchDrivers) != 1 || p.LaunchDrivers[0].DriverID != "driver-sup" || p.LaunchDrivers[0].WorkerID != "w01" ||
		p.LaunchDrivers[0].FromWorker != "w00" || p.LaunchDrivers[0].Attempt != 2 {
		t.Fatalf("driver launches = %+v, want driver-sup on w01 (attempt 2)", p.LaunchDrivers)
	}
	if len(p.DriverUpdates) != 0 {
		t.Fatalf("driver updates = %+v (the launch replaces the requeue)", p.DriverUpdates)
	}
	if len(p.Kills) != 1 || p.Kills[0].WorkerID != "w00" || p.Kills[0].Kill.DriverID != "driver-sup" {
		t.Fatalf("kills = %+v, want driver-sup's process on w00", p.Kills)
	}
	h.AssertStable()
}

// TestSchedule_Drain_ElasticAndUncapped: an elastic app's executors on a
// draining worker are replaced up to its requested total; an uncapped app
// kills one per replacement created since the drain began.
func TestSchedule_Drain_ElasticAndUncapped(t *testing.T) {
	h := NewHarness(t)
	h.Workers(2, 4, 4096)
	two := 2
	el := h.App("app-el", 1, 128, 8)
	el.State, el.NextExecutorID, el.RequestedExecutors = schemas.AppRunning, 2, &two
	h.Executor("app-el", 0, "w00", 1, 128, schemas.ExecutorRunning)
	h.Executor("app-el", 1, "w01", 1, 128, schemas.ExecutorRunning)
	h.Opts.Now = h.clock
	h.Snap.Workers["w00"].Drain = &schemas.Drain{Since: h.clock, Deadline: h.clock.Add(time.Hour)}
	p := h.Schedule()
	if len(p.LaunchExecutors) != 1 || p.LaunchExecutors[0].Executor.WorkerID != "w01" || len(p.Kills) != 0 {
		t.Fatalf("elastic: launches %+v kills %+v, want one replacement on w01 and no kill", p.LaunchExecutors, p.Kills)
	}
	setState(h, p.LaunchExecutors[0].Executor.Key(), schemas.ExecutorRunning)
	p = h.Schedule()
	if len(p.Kills) != 1 || KillTarget(p.Kills[0].Kill) != "executor/app-el.0" {
		t.Fatalf("elastic: kills = %+v, want app-el.0", p.Kills)
	}

	h2 := NewHarness(t)
	h2.Workers(2, 2, 4096)
	un := h2.App("app-un", 1, 128, 0)
	un.State, un.NextExecutorID = schemas.AppRunning, 4
	for id, wid := range []string{"w00", "w00", "w01", "w01"} {
		h2.Executor("app-un", id, wid, 1, 128, schemas.ExecutorRunning).CreatedAt = h2.clock.Add(-time.Minute)
	}
	h2.Opts.Now = h2.clock
	h2.Snap.Workers["w00"].Drain = &schemas.Drain{Since: h2.clock, Deadline: h2.clock.Add(time.Hour)}
	if p := h2.Schedule(); !p.Empty() {
		t.Fatalf("uncapped, no room: %+v", p)
	}
	h2.Worker("w02", 1, 4096) // room for one replacement
	p = h2.Schedule()
	if len(p.LaunchExecutors) != 1 || len(p.Kills) != 0 {
		t.Fatalf("uncapped: %+v", p)
	}
	e := *h2.Snap.Executors[p.LaunchExecutors[0].Executor.Key()]
	e.State, e.CreatedAt = schemas.ExecutorRunning, h2.clock.Add(time.Second)
	h2.Snap.Executors[e.Key()] = &e
	p = h2.Schedule()
	if len(p.Kills) != 1 || p.Kills[0].WorkerID != "w00" {
		t.Fatalf("uncapped with one replacement RUNNING: kills = %+v, want one on w00", p.Kills)
	}
	h2.AssertStable()
}

// TestSchedule_Drain_NotPlaceable: nothing new lands on a draining worker.
func TestSchedule_Drain_NotPlaceable(t *testing.T) {
	h := NewHarness(t)
	h.Workers(2, 4, 4096)
	h.Snap.Workers["w00"].Drain = &schemas.Drain{Since: h.clock, Deadline: h.clock.Add(time.Hour)}
	h.Snap.Executors["x.0"] = &schemas.Executor{AppID: "x", WorkerID: "w00", Cores: 1, MemoryMB: 1, State: schemas.ExecutorRunning}
	h.App("app-1", 1, 128, 8)
	h.Driver("driver-1", 1, 128, false)
	h.Opts.Now = h.clock
	p := h.Schedule()
	if got := coresPerWorker(p); got["w00"] != 0 || got["w01"] == 0 {
		t.Fatalf("cores per worker = %v, want only w01", got)
	}
	for _, l := range p.LaunchDrivers {
		if l.WorkerID == "w00" {
			t.Fatalf("driver placed on the draining worker")
		}
	}
}
