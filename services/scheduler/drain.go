package scheduler

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/stoker/stoker/schemas"
)

// reconcileDrains carries out the drains (Worker.Drain; Spark's worker
// decommissioning, Nomad's node drain, kubectl drain), one pass at a time
// and from the records alone, so a new leader continues a drain where the
// last one left it:
//
//   - a draining worker gets no new placements (Worker.Placeable), and its
//     executors do not count against their app's cores (newPass), so
//     placeApp places replacements on other workers;
//   - an executor on a draining worker is killed only once its app has a
//     replacement RUNNING elsewhere: the kills allowed are the app's
//     executors RUNNING on live, not draining workers plus those still on
//     draining ones, beyond what the app wants (drainKills). An app whose
//     replacement finds no room keeps its executor until the deadline;
//   - a supervised driver is relaunched elsewhere (requeued, placed in the
//     same pass when a worker has room) and its process here killed; other
//     drivers stay until the deadline;
//   - at Drain.Deadline everything still on the worker is killed;
//   - a draining worker on which nothing holds resources any more is
//     DECOMMISSIONED.
func (st *pass) reconcileDrains() {
	var ids []string
	for id, w := range st.s.Workers {
		if w.Draining() {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return
	}
	slices.Sort(ids)
	now := st.o.Now
	if now.IsZero() {
		now = time.Now()
	}
	execs := map[string][]*schemas.Executor{} // holding, by draining worker
	for _, e := range st.s.Executors {
		if e.State.Holds() && st.draining(e.WorkerID) {
			execs[e.WorkerID] = append(execs[e.WorkerID], e)
		}
	}
	drivers := map[string][]*schemas.Driver{}
	for _, d := range st.s.Drivers {
		if d.State.Holds() && d.WorkerID != "" && st.draining(d.WorkerID) {
			drivers[d.WorkerID] = append(drivers[d.WorkerID], d)
		}
	}
	byApp := map[string][]*schemas.Executor{} // still to replace, on workers before their deadline
	for _, wid := range ids {
		w := st.s.Workers[wid]
		if to, ok := w.State.Next(schemas.WorkerEvDrained); ok && len(execs[wid]) == 0 && len(drivers[wid]) == 0 {
			st.p.WorkerUpdates = append(st.p.WorkerUpdates, WorkerUpdate{
				WorkerID: wid, Instance: w.Instance, From: w.State, State: to,
				Reason: "drained: nothing runs on it any more",
			})
			continue
		}
		if !now.Before(w.Drain.Deadline) {
			why := fmt.Sprintf("drain deadline of worker %s passed", wid)
			for _, e := range execs[wid] {
				st.drainKill(wid, schemas.Kill{AppID: e.AppID, ExecutorID: e.ID, Reason: why},
					fmt.Sprintf("killing executor %s: %s", e.Key(), why))
			}
			for _, d := range drivers[wid] {
				st.drainKill(wid, schemas.Kill{DriverID: d.ID, Reason: why}, fmt.Sprintf("killing driver %s: %s", d.ID, why))
			}
			continue
		}
		for _, d := range drivers[wid] {
			st.relaunchDrained(wid, d)
		}
		for _, e := range execs[wid] {
			byApp[e.AppID] = append(byApp[e.AppID], e)
		}
	}
	for _, appID := range slices.Sorted(maps.Keys(byApp)) {
		a := st.s.Apps[appID]
		if a == nil || st.appDone[appID] {
			continue // reconcileExecutors kills what an ended app left
		}
		if _, ok := a.State.Next(schemas.AppEvPlaced); !ok {
			continue // ended, or UNKNOWN: recovery's
		}
		st.drainApp(a, byApp[appID])
	}
}

// drainApp kills as many of app a's executors on draining workers (on)
// as it has replacements RUNNING elsewhere.
func (st *pass) drainApp(a *schemas.App, on []*schemas.Executor) {
	var left []*schemas.Executor // not being killed already
	killing := 0
	for _, e := range on {
		if _, sent := killSent(st.s.Killing, schemas.Kill{AppID: e.AppID, ExecutorID: e.ID}); sent {
			killing++
			continue
		}
		left = append(left, e)
	}
	if len(left) == 0 {
		return
	}
	running, fresh := 0, 0
	since := st.earliestDrain(on)
	for _, e := range st.s.Executors {
		if e.AppID != a.ID || e.State != schemas.ExecutorRunning || !st.alive(e.WorkerID) || st.draining(e.WorkerID) {
			continue
		}
		running++
		if !e.CreatedAt.IsZero() && !e.CreatedAt.Before(since) {
			fresh++
		}
	}
	n := drainKills(st.drainTarget(a), running, len(left), fresh, killing+st.drainedEnded(a.ID, since))
	if n <= 0 {
		return
	}
	// LAUNCHING ones first (nothing lost), then the earliest deadline,
	// then the newest.
	slices.SortFunc(left, func(x, y *schemas.Executor) int {
		if xl, yl := x.State == schemas.ExecutorLaunching, y.State == schemas.ExecutorLaunching; xl != yl {
			if xl {
				return -1
			}
			return 1
		}
		if c := st.s.Workers[x.WorkerID].Drain.Deadline.Compare(st.s.Workers[y.WorkerID].Drain.Deadline); c != 0 {
			return c
		}
		if c := cmp.Compare(x.WorkerID, y.WorkerID); c != 0 {
			return c
		}
		return cmp.Compare(y.ID, x.ID)
	})
	for _, e := range left[:min(n, len(left))] {
		why := fmt.Sprintf("worker %s is draining; app %s has %d executors RUNNING on other workers", e.WorkerID, a.ID, running)
		st.drainKill(e.WorkerID, schemas.Kill{AppID: a.ID, ExecutorID: e.ID, Reason: why},
			fmt.Sprintf("killing executor %s: replaced (%d executors of %s RUNNING on other workers)", e.Key(), running, a.ID))
	}
}

// unbounded is drainTarget's answer for an app with no cap.
const unbounded = math.MaxInt

// drainTarget is how many executors app a wants: its requested total
// (dynamic allocation) within its core cap, less the cores of run-once
// executors already done; unbounded without a cap.
func (st *pass) drainTarget(a *schemas.App) int {
	per := a.Executor.Cores
	if per <= 0 {
		return unbounded
	}
	t := unbounded
	if limit := coreCap(a, st.o.DefaultCores); limit > 0 {
		t = max(limit-st.appDoneCores[a.ID], 0) / per
	}
	if n := a.RequestedExecutors; n != nil {
		t = min(t, max(*n, 0))
	}
	return t
}

// drainKills is the pure rule of a drain's executor kills for one app:
// with a target (capped app), the executors RUNNING elsewhere plus those
// left on draining workers beyond the target; without one, the executors
// created since the drain began and RUNNING elsewhere (replacements) less
// the draining ones already killed or ended since (each used one up).
// Never more than left, never negative.
func drainKills(target, runningElsewhere, left, fresh, spent int) int {
	n := fresh - spent
	if target != unbounded {
		n = runningElsewhere + left - target
	}
	return max(min(n, left), 0)
}

// earliestDrain is the earliest start of the drains of the workers es are on.
func (st *pass) earliestDrain(es []*schemas.Executor) time.Time {
	var t time.Time
	for _, e := range es {
		if d := st.s.Workers[e.WorkerID].Drain; t.IsZero() || d.Since.Before(t) {
			t = d.Since
		}
	}
	return t
}

// drainedEnded counts app's executors on draining workers that ended since.
func (st *pass) drainedEnded(appID string, since time.Time) int {
	n := 0
	for _, e := range st.s.Executors {
		if e.AppID == appID && !e.State.Holds() && st.draining(e.WorkerID) && !e.UpdatedAt.Before(since) {
			n++
		}
	}
	return n
}

// relaunchDrained moves a supervised driver off a draining worker:
// requeued (placeDrivers places it elsewhere, in this pass if a worker has
// room) and its process here killed. Other drivers stay until the deadline.
func (st *pass) relaunchDrained(wid string, d *schemas.Driver) {
	if !d.Supervise || d.KillRequested {
		return
	}
	if _, done := st.driverNext[d.ID]; done {
		return
	}
	why := fmt.Sprintf("worker %s is draining; relaunched elsewhere", wid)
	next, ok := schemas.LoseDriver(*d, why)
	if !ok || next.State != schemas.DriverSubmitted {
		return
	}
	st.requeued[d.ID] = len(st.p.DriverUpdates)
	st.driverNext[d.ID] = next.State
	st.p.DriverUpdates = append(st.p.DriverUpdates, DriverUpdate{DriverID: d.ID, From: d.State, FromWorker: wid,
		State: next.State, WorkerID: next.WorkerID, Message: next.Message})
	st.drainKill(wid, schemas.Kill{DriverID: d.ID, Reason: why}, fmt.Sprintf("killing driver %s: relaunched elsewhere", d.ID))
}

// drainKill plans a kill that is a step of a drain (an event once sent).
func (st *pass) drainKill(wid string, k schemas.Kill, event string) {
	if _, sent := killSent(st.s.Killing, k); sent {
		return
	}
	st.p.Kills = append(st.p.Kills, KillCmd{WorkerID: wid, Kill: k, Drain: event})
}
