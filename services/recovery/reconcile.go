package recovery

import (
	"fmt"
	"sort"

	"github.com/stoker/stoker/schemas"
)

// Snapshot is what one epoch's recovery knows after marking records
// UNKNOWN (step 2): every live record, keyed as in KV. A worker, app or
// driver in state UNKNOWN is one recovery asked and waits to hear from.
type Snapshot struct {
	Epoch     uint64
	Workers   map[string]*schemas.Worker
	Apps      map[string]*schemas.App
	Drivers   map[string]*schemas.Driver
	Executors map[string]*schemas.Executor // key "<appid>.<execid>"
}

// Result lists the record changes and kill commands that end a recovery.
// Every change names the state it expects to find (From, and the worker for
// executors and drivers): the applier skips a change whose record moved on
// meanwhile (a worker re-registered, an agent reported a state change), so
// recovery never overwrites news with its older picture.
type Result struct {
	Workers   []WorkerChange
	Executors []ExecutorChange
	Drivers   []DriverChange
	Apps      []AppChange
	Kills     []KillCommand
}

// WorkerChange moves a worker out of UNKNOWN.
type WorkerChange struct {
	ID     string
	From   schemas.WorkerState
	To     schemas.WorkerState
	Reason string
	// Executors and Drivers are consequences applied only if this change
	// was: a worker that re-registered instead of going DEAD keeps what
	// registration recorded for its processes.
	Executors []ExecutorChange
	Drivers   []DriverChange
}

// ExecutorChange moves one executor record.
type ExecutorChange struct {
	Key      string
	WorkerID string // the worker the record must still name
	From     schemas.ExecutorState
	To       schemas.ExecutorState
	PID      int // set when > 0
	Message  string
}

// DriverChange moves one driver record.
type DriverChange struct {
	ID         string
	FromWorker string // the worker the record must still name
	From       schemas.DriverState
	To         schemas.DriverState
	WorkerID   string // the worker the record names afterwards ("" to relaunch)
	PID        int
	Message    string
}

// AppChange moves an application out of UNKNOWN.
type AppChange struct {
	ID      string
	From    schemas.AppState
	To      schemas.AppState
	Message string
}

// KillCommand is a kill to send to an agent that reported a process the
// cluster has already replaced or ended.
type KillCommand struct {
	WorkerID string
	Kill     schemas.Kill
}

// Reconcile decides how recovery ends, from the snapshot, the reports of the
// workers that answered (keyed by worker id) and the applications whose
// driver acknowledged the new master. It is pure: no clock, no network.
//
// Rules (docs/contract.md, Spark's completeRecovery):
//   - an UNKNOWN worker that answered is ALIVE again; its executors and
//     drivers are reconciled with its report: reported and recorded on it →
//     RUNNING; recorded as holding resources on it but not reported → LOST;
//     reported but missing, ended or placed elsewhere → killed;
//   - an UNKNOWN worker that did not answer is DEAD; the executors holding
//     resources on it are LOST;
//   - a driver still UNKNOWN is relaunched (SUBMITTED, no worker) if
//     supervised, KILLED if a kill was requested, ERROR otherwise;
//   - an UNKNOWN app whose driver answered is RUNNING if one of its
//     executors still holds resources, WAITING otherwise; one whose driver
//     did not answer is FINISHED.
func Reconcile(snap Snapshot, reports map[string]*schemas.WorkerReport, appAcks map[string]bool) Result {
	var res Result
	e := snap.Epoch

	// Executor states after the changes decided here (for the apps' verdict).
	final := make(map[string]schemas.ExecutorState, len(snap.Executors))
	execsOn := map[string][]string{}
	for _, k := range sortedKeys(snap.Executors) {
		x := snap.Executors[k]
		final[k] = x.State
		execsOn[x.WorkerID] = append(execsOn[x.WorkerID], k)
	}
	driversOn := map[string][]string{}
	for _, id := range sortedKeys(snap.Drivers) {
		driversOn[snap.Drivers[id].WorkerID] = append(driversOn[snap.Drivers[id].WorkerID], id)
	}
	adopted := map[string]bool{} // drivers confirmed running by their worker
	decided := map[string]bool{} // drivers whose fate a worker change carries

	for _, wid := range sortedKeys(snap.Workers) {
		w := snap.Workers[wid]
		if w.State != schemas.WorkerUnknown {
			continue
		}
		rep := reports[wid]
		if rep == nil {
			wc := WorkerChange{ID: wid, From: schemas.WorkerUnknown, To: schemas.WorkerDead,
				Reason: fmt.Sprintf("did not answer recovery for epoch %d", e)}
			for _, k := range execsOn[wid] {
				x := snap.Executors[k]
				if !x.State.Holds() {
					continue
				}
				wc.Executors = append(wc.Executors, ExecutorChange{Key: k, WorkerID: wid, From: x.State,
					To: schemas.ExecutorLost, Message: fmt.Sprintf("worker %s did not answer recovery for epoch %d", wid, e)})
				final[k] = schemas.ExecutorLost
			}
			for _, id := range driversOn[wid] {
				if d := snap.Drivers[id]; d.State == schemas.DriverUnknown {
					wc.Drivers = append(wc.Drivers, lostDriver(d, fmt.Sprintf("worker %s did not answer recovery for epoch %d", wid, e)))
					decided[id] = true
				}
			}
			res.Workers = append(res.Workers, wc)
			continue
		}

		res.Workers = append(res.Workers, WorkerChange{ID: wid, From: schemas.WorkerUnknown, To: schemas.WorkerAlive,
			Reason: fmt.Sprintf("answered recovery for epoch %d", e)})

		reported := make(map[string]schemas.RunningExecutor, len(rep.Executors))
		for _, re := range rep.Executors {
			reported[schemas.ExecutorKey(re.AppID, re.ExecutorID)] = re
		}
		for _, k := range execsOn[wid] {
			x := snap.Executors[k]
			if !x.State.Holds() {
				continue
			}
			re, ok := reported[k]
			switch {
			case !ok:
				res.Executors = append(res.Executors, ExecutorChange{Key: k, WorkerID: wid, From: x.State,
					To: schemas.ExecutorLost, Message: fmt.Sprintf("worker %s did not report it in recovery for epoch %d", wid, e)})
				final[k] = schemas.ExecutorLost
			case re.State.Terminal():
				// Ended while the master was away; the agent's state report
				// (retried until acked) carries the exit code.
				res.Executors = append(res.Executors, ExecutorChange{Key: k, WorkerID: wid, From: x.State,
					To: re.State, Message: fmt.Sprintf("reported %s in recovery for epoch %d", re.State, e)})
				final[k] = re.State
			case x.State != schemas.ExecutorRunning || (re.PID > 0 && re.PID != x.PID):
				res.Executors = append(res.Executors, ExecutorChange{Key: k, WorkerID: wid, From: x.State,
					To: schemas.ExecutorRunning, PID: re.PID, Message: fmt.Sprintf("confirmed in recovery for epoch %d", e)})
				final[k] = schemas.ExecutorRunning
			}
		}
		for _, re := range rep.Executors {
			if re.State.Terminal() {
				continue
			}
			k := schemas.ExecutorKey(re.AppID, re.ExecutorID)
			x := snap.Executors[k]
			var why string
			switch {
			case x == nil:
				why = "unknown to the cluster"
			case x.WorkerID != wid:
				why = fmt.Sprintf("placed on worker %s", x.WorkerID)
			case x.State.Terminal():
				why = fmt.Sprintf("recorded %s", x.State)
			default:
				continue
			}
			res.Kills = append(res.Kills, KillCommand{WorkerID: wid, Kill: schemas.Kill{Epoch: e, AppID: re.AppID,
				ExecutorID: re.ExecutorID, Reason: fmt.Sprintf("executor %s %s (recovery for epoch %d)", k, why, e)}})
		}

		for _, rd := range rep.Drivers {
			if rd.State.Terminal() {
				continue
			}
			d := snap.Drivers[rd.DriverID]
			var why string
			switch {
			case d == nil:
				why = "unknown to the cluster"
			case d.WorkerID != wid:
				why = fmt.Sprintf("placed on worker %q", d.WorkerID)
			case d.State.Terminal():
				why = fmt.Sprintf("recorded %s", d.State)
			default:
				adopted[d.ID] = true
				to := schemas.DriverRunning
				if rd.State == schemas.DriverRelaunching {
					to = schemas.DriverRelaunching
				}
				if d.State != to || (rd.PID > 0 && rd.PID != d.PID) {
					res.Drivers = append(res.Drivers, DriverChange{ID: d.ID, FromWorker: wid, From: d.State, To: to,
						WorkerID: wid, PID: rd.PID, Message: fmt.Sprintf("confirmed in recovery for epoch %d", e)})
				}
				continue
			}
			res.Kills = append(res.Kills, KillCommand{WorkerID: wid, Kill: schemas.Kill{Epoch: e, DriverID: rd.DriverID,
				Reason: fmt.Sprintf("driver %s %s (recovery for epoch %d)", rd.DriverID, why, e)}})
		}
	}

	for _, id := range sortedKeys(snap.Drivers) {
		d := snap.Drivers[id]
		if d.State != schemas.DriverUnknown || adopted[id] || decided[id] {
			continue
		}
		why := fmt.Sprintf("no worker reported it in recovery for epoch %d", e)
		if d.WorkerID == "" {
			why = fmt.Sprintf("not placed on any worker in recovery for epoch %d", e)
		}
		res.Drivers = append(res.Drivers, lostDriver(d, why))
	}

	holds := map[string]bool{}
	for k, st := range final {
		if st.Holds() {
			holds[snap.Executors[k].AppID] = true
		}
	}
	for _, id := range sortedKeys(snap.Apps) {
		a := snap.Apps[id]
		if a.State != schemas.AppUnknown {
			continue
		}
		switch {
		case !appAcks[id]:
			res.Apps = append(res.Apps, AppChange{ID: id, From: schemas.AppUnknown, To: schemas.AppFinished,
				Message: fmt.Sprintf("driver did not answer recovery for epoch %d", e)})
		case holds[id]:
			res.Apps = append(res.Apps, AppChange{ID: id, From: schemas.AppUnknown, To: schemas.AppRunning,
				Message: fmt.Sprintf("driver answered recovery for epoch %d", e)})
		default:
			res.Apps = append(res.Apps, AppChange{ID: id, From: schemas.AppUnknown, To: schemas.AppWaiting,
				Message: fmt.Sprintf("driver answered recovery for epoch %d; no executor left", e)})
		}
	}
	return res
}

// lostDriver decides the fate of a driver no worker confirmed.
func lostDriver(d *schemas.Driver, why string) DriverChange {
	// An ended driver keeps naming the worker it ran on (history); a
	// relaunched one names none until the scheduler places it.
	c := DriverChange{ID: d.ID, FromWorker: d.WorkerID, From: d.State, WorkerID: d.WorkerID, Message: why}
	switch {
	case d.KillRequested:
		c.To = schemas.DriverKilled
	case d.Supervise:
		c.To = schemas.DriverSubmitted // relaunch: the scheduler places it again
		c.WorkerID = ""
		c.Message = why + "; relaunching (supervised)"
	default:
		c.To = schemas.DriverError
	}
	return c
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
