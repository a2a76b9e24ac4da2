package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stoker/stoker/schemas"
)

// Harness drives the pure planner the way Nomad's scheduler/testing.go
// does: mock workers, drivers, apps and executors go into a snapshot;
// Schedule records every plan in Plans and applies it to the snapshot.
type Harness struct {
	t     testing.TB
	Snap  *Snapshot
	Opts  Options
	Plans []Plan
	clock time.Time
}

// NewHarness returns a harness with spread-out placement, 10 retries and a
// seeded shuffle.
func NewHarness(t testing.TB) *Harness {
	t.Helper()
	return &Harness{
		t:     t,
		Snap:  NewSnapshot(),
		Opts:  Options{SpreadOut: true, MaxExecutorRetries: 10, Rand: rand.New(rand.NewPCG(1, 2))},
		clock: time.Date(2026, 11, 23, 20, 0, 0, 0, time.UTC),
	}
}

func (h *Harness) tick() time.Time {
	h.clock = h.clock.Add(time.Second)
	return h.clock
}

// Worker adds an ALIVE worker.
func (h *Harness) Worker(id string, cores int, memMB int64) *schemas.Worker {
	h.t.Helper()
	w := &schemas.Worker{ID: id, Cores: cores, MemoryMB: memMB, State: schemas.WorkerAlive, RegisteredAt: h.tick()}
	h.Snap.Workers[id] = w
	return w
}

// Workers adds n ALIVE workers w00, w01, ...
func (h *Harness) Workers(n, cores int, memMB int64) {
	h.t.Helper()
	for i := 0; i < n; i++ {
		h.Worker(fmt.Sprintf("w%02d", i), cores, memMB)
	}
}

// App adds a WAITING application submitted after every earlier one.
func (h *Harness) App(id string, execCores int, execMemMB int64, maxCores int) *schemas.App {
	h.t.Helper()
	a := &schemas.App{
		ID: id, Name: id, State: schemas.AppWaiting, MaxCores: maxCores, SubmittedAt: h.tick(),
		Executor: schemas.ExecutorSpec{Command: []string{"sleep", "1"}, Cores: execCores, MemoryMB: execMemMB},
	}
	h.Snap.Apps[id] = a
	return a
}

// Driver adds a SUBMITTED driver submitted after every earlier one.
func (h *Harness) Driver(id string, cores int, memMB int64, supervise bool) *schemas.Driver {
	h.t.Helper()
	d := &schemas.Driver{
		ID: id, Command: []string{"driver"}, Cores: cores, MemoryMB: memMB, Supervise: supervise,
		State: schemas.DriverSubmitted, SubmittedAt: h.tick(),
	}
	h.Snap.Drivers[id] = d
	return d
}

// Executor adds an executor record.
func (h *Harness) Executor(appID string, id int, wid string, cores int, memMB int64, state schemas.ExecutorState) *schemas.Executor {
	h.t.Helper()
	e := &schemas.Executor{AppID: appID, ID: id, WorkerID: wid, Cores: cores, MemoryMB: memMB, State: state}
	h.Snap.Executors[e.Key()] = e
	return e
}

// Schedule runs one pass, records the plan and applies it.
func (h *Harness) Schedule() Plan {
	h.t.Helper()
	p := Schedule(h.Snap, h.Opts)
	h.Plans = append(h.Plans, p)
	h.Snap.Apply(p)
	return p
}

// AssertStable checks that a pass over the current snapshot plans nothing.
func (h *Harness) AssertStable() {
	h.t.Helper()
	if p := Schedule(h.Snap, h.Opts); !p.Empty() {
		h.t.Fatalf("pass after apply is not empty: %+v", p)
	}
}

// coresPerWorker sums the cores the plan launches per worker.
func coresPerWorker(p Plan) map[string]int {
	m := map[string]int{}
	for _, l := range p.LaunchExecutors {
		m[l.Executor.WorkerID] += l.Executor.Cores
	}
	return m
}
