package recovery

import (
	"fmt"
	"slices"
	"testing"

	"github.com/stoker/stoker/schemas"
)

const (
	appA = "app-20260101000000-aaaaaa"
	appB = "app-20260101000000-bbbbbb"
	drvS = "driver-20260101000000-000001" // supervised
	drvU = "driver-20260101000000-000002" // unsupervised
	drvK = "driver-20260101000000-000003" // kill requested
)

// snapshot builders: records as they are after recovery marked them UNKNOWN.
func worker(id string, st schemas.WorkerState) *schemas.Worker {
	return &schemas.Worker{ID: id, State: st, Cores: 8, MemoryMB: 8192}
}

func executor(app string, id int, wid string, st schemas.ExecutorState, cores int) *schemas.Executor {
	return &schemas.Executor{AppID: app, ID: id, WorkerID: wid, State: st, Cores: cores, MemoryMB: 512}
}

func driver(id, wid string, st schemas.DriverState, supervise bool) *schemas.Driver {
	return &schemas.Driver{ID: id, WorkerID: wid, State: st, Supervise: supervise, Cores: 1, MemoryMB: 256}
}

func app(id string, st schemas.AppState) *schemas.App { return &schemas.App{ID: id, State: st} }

func snapshot(ws []*schemas.Worker, as []*schemas.App, ds []*schemas.Driver, xs []*schemas.Executor) Snapshot {
	s := Snapshot{Epoch: 7, Workers: map[string]*schemas.Worker{}, Apps: map[string]*schemas.App{},
		Drivers: map[string]*schemas.Driver{}, Executors: map[string]*schemas.Executor{}}
	for _, w := range ws {
		s.Workers[w.ID] = w
	}
	for _, a := range as {
		s.Apps[a.ID] = a
	}
	for _, d := range ds {
		s.Drivers[d.ID] = d
	}
	for _, x := range xs {
		s.Executors[x.Key()] = x
	}
	return s
}

func running(app string, id, pid int) schemas.RunningExecutor {
	return schemas.RunningExecutor{AppID: app, ExecutorID: id, Cores: 1, MemoryMB: 512, State: schemas.ExecutorRunning, PID: pid}
}

// describe flattens a Result into sorted one-line facts, so cases read as
// what recovery decides rather than as struct literals.
func describe(r Result) []string {
	var out []string
	exec := func(prefix string, c ExecutorChange) {
		s := fmt.Sprintf("%sexecutor %s %s->%s", prefix, c.Key, c.From, c.To)
		if c.PID > 0 {
			s += fmt.Sprintf(" pid=%d", c.PID)
		}
		out = append(out, s)
	}
	drv := func(prefix string, c DriverChange) {
		out = append(out, fmt.Sprintf("%sdriver %s %s->%s worker=%q", prefix, c.ID, c.From, c.To, c.WorkerID))
	}
	for _, w := range r.Workers {
		out = append(out, fmt.Sprintf("worker %s %s->%s", w.ID, w.From, w.To))
		for _, c := range w.Executors {
			exec(w.ID+"! ", c)
		}
		for _, c := range w.Drivers {
			drv(w.ID+"! ", c)
		}
	}
	for _, c := range r.Executors {
		exec("", c)
	}
	for _, c := range r.Drivers {
		drv("", c)
	}
	for _, a := range r.Apps {
		out = append(out, fmt.Sprintf("app %s %s->%s", a.ID, a.From, a.To))
	}
	for _, k := range r.Kills {
		if k.Kill.DriverID != "" {
			out = append(out, fmt.Sprintf("kill %s driver %s", k.WorkerID, k.Kill.DriverID))
		} else {
			out = append(out, fmt.Sprintf("kill %s executor %s", k.WorkerID, schemas.ExecutorKey(k.Kill.AppID, k.Kill.ExecutorID)))
		}
		if k.Kill.Epoch != 7 {
			out = append(out, fmt.Sprintf("kill with epoch %d, want 7", k.Kill.Epoch))
		}
	}
	slices.Sort(out)
	return out
}

func TestReconcile(t *testing.T) {
	U, A, D := schemas.WorkerUnknown, schemas.WorkerAlive, schemas.WorkerDead
	L, R := schemas.ExecutorLaunching, schemas.ExecutorRunning
	cases := []struct {
		name    string
		snap    Snapshot
		reports map[string]*schemas.WorkerReport
		acks    map[string]bool
		want    []string
	}{
		{
			name: "empty cluster",
			snap: snapshot(nil, nil, nil, nil),
			want: nil,
		},
		{
			name: "worker answers with everything it runs",
			snap: snapshot([]*schemas.Worker{worker("w1", U)}, nil, nil, []*schemas.Executor{
				executor(appA, 1, "w1", R, 2), executor(appA, 2, "w1", L, 2),
			}),
			reports: map[string]*schemas.WorkerReport{"w1": {WorkerID: "w1",
				Executors: []schemas.RunningExecutor{running(appA, 1, 0), running(appA, 2, 42)}}},
			want: []string{
				"executor " + appA + ".2 LAUNCHING->RUNNING pid=42",
				"worker w1 UNKNOWN->ALIVE",
			},
		},
		{
			name: "not reported is LOST, reported but ended elsewhere or unknown is killed",
			snap: snapshot([]*schemas.Worker{worker("w1", U), worker("w2", U)}, nil, nil, []*schemas.Executor{
				executor(appA, 1, "w1", R, 1),                      // not reported → LOST
				executor(appA, 2, "w1", schemas.ExecutorLost, 1),   // reported → kill
				executor(appA, 3, "w2", R, 1),                      // reported by w1 → kill on w1
				executor(appA, 4, "w1", schemas.ExecutorExited, 1), // not reported, ended: nothing
			}),
			reports: map[string]*schemas.WorkerReport{
				"w1": {WorkerID: "w1", Executors: []schemas.RunningExecutor{running(appA, 2, 0), running(appA, 3, 0), running(appB, 9, 0)}},
				"w2": {WorkerID: "w2", Executors: []schemas.RunningExecutor{running(appA, 3, 0)}},
			},
			want: []string{
				"executor " + appA + ".1 RUNNING->LOST",
				"kill w1 executor " + appA + ".2",
				"kill w1 executor " + appA + ".3",
				"kill w1 executor " + appB + ".9",
				"worker w1 UNKNOWN->ALIVE",
				"worker w2 UNKNOWN->ALIVE",
			},
		},
		{
			name: "executor reported as ended takes the reported state",
			snap: snapshot([]*schemas.Worker{worker("w1", U)}, nil, nil, []*schemas.Executor{executor(appA, 1, "w1", R, 1)}),
			reports: map[string]*schemas.WorkerReport{"w1": {WorkerID: "w1", Executors: []schemas.RunningExecutor{
				{AppID: appA, ExecutorID: 1, State: schemas.ExecutorExited}}}},
			want: []string{"executor " + appA + ".1 RUNNING->EXITED", "worker w1 UNKNOWN->ALIVE"},
		},
		{
			name: "silent worker stays UNKNOWN, its executors as recorded, its drivers RUNNING again",
			snap: snapshot([]*schemas.Worker{worker("w1", U)}, nil, []*schemas.Driver{
				driver(drvS, "w1", schemas.DriverUnknown, true),
				driver(drvU, "w1", schemas.DriverUnknown, false),
				{ID: drvK, WorkerID: "w1", State: schemas.DriverUnknown, Supervise: true, KillRequested: true},
			}, []*schemas.Executor{
				executor(appA, 1, "w1", R, 1), executor(appA, 2, "w1", L, 1), executor(appA, 3, "w1", schemas.ExecutorFailed, 1),
			}),
			want: []string{
				`driver ` + drvK + ` UNKNOWN->RUNNING worker="w1"`,
				`driver ` + drvS + ` UNKNOWN->RUNNING worker="w1"`,
				`driver ` + drvU + ` UNKNOWN->RUNNING worker="w1"`,
			},
		},
		{
			name: "drivers: reported is RUNNING, unreported on an answering worker relaunched, reported elsewhere killed",
			snap: snapshot([]*schemas.Worker{worker("w1", U), worker("w2", U)}, nil, []*schemas.Driver{
				driver(drvS, "w1", schemas.DriverUnknown, true),
				driver(drvU, "w1", schemas.DriverUnknown, false),
				driver(drvK, "w1", schemas.DriverFinished, false),
			}, nil),
			reports: map[string]*schemas.WorkerReport{
				"w1": {WorkerID: "w1", Drivers: []schemas.RunningDriver{{DriverID: drvU, State: schemas.DriverRunning, PID: 9}}},
				"w2": {WorkerID: "w2", Drivers: []schemas.RunningDriver{{DriverID: drvS, State: schemas.DriverRunning},
					{DriverID: drvK, State: schemas.DriverRunning}}},
			},
			want: []string{
				`driver ` + drvS + ` UNKNOWN->SUBMITTED worker=""`,
				`driver ` + drvU + ` UNKNOWN->RUNNING worker="w1"`,
				"kill w2 driver " + drvK,
				"kill w2 driver " + drvS,
				"worker w1 UNKNOWN->ALIVE",
				"worker w2 UNKNOWN->ALIVE",
			},
		},
		{
			name: "a relaunching driver stays RELAUNCHING",
			snap: snapshot([]*schemas.Worker{worker("w1", U)}, nil, []*schemas.Driver{driver(drvS, "w1", schemas.DriverUnknown, true)}, nil),
			reports: map[string]*schemas.WorkerReport{"w1": {WorkerID: "w1",
				Drivers: []schemas.RunningDriver{{DriverID: drvS, State: schemas.DriverRelaunching}}}},
			want: []string{`driver ` + drvS + ` UNKNOWN->RELAUNCHING worker="w1"`, "worker w1 UNKNOWN->ALIVE"},
		},
		{
			name: "apps: acked with executors RUNNING, acked without WAITING, silent left UNKNOWN",
			snap: snapshot([]*schemas.Worker{worker("w1", U), worker("w2", U)},
				[]*schemas.App{app(appA, schemas.AppUnknown), app(appB, schemas.AppUnknown),
					app("app-20260101000000-cccccc", schemas.AppUnknown), app("app-20260101000000-dddddd", schemas.AppKilled)},
				nil, []*schemas.Executor{
					executor(appA, 1, "w1", R, 1), // confirmed
					executor(appB, 1, "w2", R, 1), // its worker is silent: left RUNNING
				}),
			reports: map[string]*schemas.WorkerReport{"w1": {WorkerID: "w1", Executors: []schemas.RunningExecutor{running(appA, 1, 0)}}},
			acks:    map[string]bool{appA: true, appB: true},
			want: []string{
				"app " + appA + " UNKNOWN->RUNNING",
				"app " + appB + " UNKNOWN->RUNNING",
				"worker w1 UNKNOWN->ALIVE",
			},
		},
		{
			name: "workers recovery did not mark (re-registered ALIVE, already DEAD) are left alone",
			snap: snapshot([]*schemas.Worker{worker("w1", A), worker("w2", D)}, nil, nil, []*schemas.Executor{
				executor(appA, 1, "w1", R, 1), executor(appA, 2, "w2", R, 1),
			}),
			reports: map[string]*schemas.WorkerReport{"w1": {WorkerID: "w1"}},
			want:    nil,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := describe(Reconcile(tc.snap, tc.reports, tc.acks))
			slices.Sort(tc.want)
			if !slices.Equal(got, tc.want) {
				t.Errorf("Reconcile:\n got  %q\n want %q", got, tc.want)
			}
		})
	}
}

// applyResult applies r to a copy of snap as the service would when no
// record moved on meanwhile.
func applyResult(snap Snapshot, r Result) Snapshot {
	out := snapshot(nil, nil, nil, nil)
	for k, w := range snap.Workers {
		c := *w
		out.Workers[k] = &c
	}
	for k, x := range snap.Executors {
		c := *x
		out.Executors[k] = &c
	}
	for k, d := range snap.Drivers {
		c := *d
		out.Drivers[k] = &c
	}
	ex := func(c ExecutorChange) {
		if x := out.Executors[c.Key]; x != nil && x.State == c.From && x.WorkerID == c.WorkerID {
			x.State = c.To
		}
	}
	dr := func(c DriverChange) {
		if d := out.Drivers[c.ID]; d != nil && d.State == c.From && d.WorkerID == c.FromWorker {
			d.State, d.WorkerID = c.To, c.WorkerID
		}
	}
	for _, w := range r.Workers {
		out.Workers[w.ID].State = w.To
		for _, c := range w.Executors {
			ex(c)
		}
		for _, c := range w.Drivers {
			dr(c)
		}
	}
	for _, c := range r.Executors {
		ex(c)
	}
	for _, c := range r.Drivers {
		dr(c)
	}
	return out
}

// usedCores is the derived usage the scheduler computes (docs/contract.md).
func usedCores(s Snapshot) map[string]int {
	used := map[string]int{}
	for _, x := range s.Executors {
		if x.State.Holds() {
			used[x.WorkerID] += x.Cores
		}
	}
	for _, d := range s.Drivers {
		if d.State.Holds() {
			used[d.WorkerID] += d.Cores
		}
	}
	return used
}

// SPARK-18959: used cores exact after failover, never negative.
func TestReconcile_UsageExactAfterFailover(t *testing.T) {
	U, R, L := schemas.WorkerUnknown, schemas.ExecutorRunning, schemas.ExecutorLaunching
	snap := snapshot([]*schemas.Worker{worker("w1", U), worker("w2", U), worker("w3", U)}, nil,
		[]*schemas.Driver{driver(drvS, "w1", schemas.DriverUnknown, true), driver(drvU, "w3", schemas.DriverUnknown, false)},
		[]*schemas.Executor{
			executor(appA, 1, "w1", R, 2), executor(appA, 2, "w1", L, 3), executor(appA, 3, "w1", R, 4), // 3 not reported
			executor(appA, 4, "w2", R, 5), executor(appB, 1, "w2", schemas.ExecutorLost, 6), // appB.1 reported → kill, not counted
			executor(appB, 2, "w3", R, 7), // w3 silent
		})
	reports := map[string]*schemas.WorkerReport{
		"w1": {WorkerID: "w1", Executors: []schemas.RunningExecutor{running(appA, 1, 0), running(appA, 2, 0)},
			Drivers: []schemas.RunningDriver{{DriverID: drvS, State: schemas.DriverRunning}}},
		"w2": {WorkerID: "w2", Executors: []schemas.RunningExecutor{running(appA, 4, 0), running(appB, 1, 0)}},
	}
	after := applyResult(snap, Reconcile(snap, reports, nil))
	got := usedCores(after)
	// w3 is silent: it stays UNKNOWN and keeps what it holds (appB.2 and
	// drvU, RUNNING again) until the heartbeat service judges it.
	want := map[string]int{"w1": 2 + 3 + 1, "w2": 5, "w3": 7 + 1}
	for wid := range snap.Workers {
		if got[wid] != want[wid] {
			t.Errorf("worker %s uses %d cores after recovery, want %d", wid, got[wid], want[wid])
		}
		if got[wid] < 0 {
			t.Errorf("worker %s uses negative cores %d", wid, got[wid])
		}
	}
	// A next epoch hearing the same answers changes no executor: idempotent.
	for _, w := range after.Workers {
		if w.State == schemas.WorkerAlive {
			w.State = U
		}
	}
	if again := Reconcile(after, reports, nil); len(again.Executors) != 0 {
		t.Errorf("second reconcile changed executors: %q", describe(again))
	}
}
