package recovery

import (
	"fmt"
	"maps"
	"slices"

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
//   - an UNKNOWN worker that did not answer stays UNKNOWN: silence to one
//     request is not death (a slow write, a lost answer, a partition that
//     heals). Its executors keep their records and its drivers go back to
//     RUNNING; the heartbeat service judges it as it judges every worker
//     (a heartbeat sends the agent through registration, which reconciles
//     and makes it ALIVE; silence for the worker timeout makes it DEAD and
//     the scheduler then loses what it held);
//   - a driver still UNKNOWN on no silent worker is relaunched (SUBMITTED,
//     no worker) if supervised, KILLED if a kill was requested, ERROR
//     otherwise;
//   - an UNKNOWN app whose driver answered is RUNNING if one of its
//     executors still holds resources, WAITING otherwise; one whose driver
//     did not answer stays UNKNOWN, for the heartbeat service to judge by
//     its driver's heartbeats (FINISHED after the worker timeout of
//     silence, back to RUNNING or WAITING on a heartbeat).
func Reconcile(snap Snapshot, reports map[string]*schemas.WorkerReport, appAcks map[string]bool) Result {
	r := &reconciler{snap: snap, final: map[string]schemas.ExecutorState{}, driversOn: map[string][]string{},
		adopted: map[string]bool{}, decided: map[string]bool{}}
	for k, x := range snap.Executors {
		r.final[k] = x.State
	}
	for _, id := range slices.Sorted(maps.Keys(snap.Drivers)) {
		wid := snap.Drivers[id].WorkerID
		r.driversOn[wid] = append(r.driversOn[wid], id)
	}
	for _, wid := range slices.Sorted(maps.Keys(snap.Workers)) {
		if snap.Workers[wid].State != schemas.WorkerUnknown {
			continue
		}
		if rep := reports[wid]; rep != nil {
			r.answered(wid, rep)
		} else {
			r.silent(wid)
		}
	}
	r.unconfirmedDrivers()
	r.apps(appAcks)
	return r.res
}

// reconciler is one Reconcile call's working state.
type reconciler struct {
	snap      Snapshot
	res       Result
	final     map[string]schemas.ExecutorState // executor states after the changes decided here
	driversOn map[string][]string              // worker id → driver ids, sorted
	adopted   map[string]bool                  // drivers confirmed running by their worker
	decided   map[string]bool                  // drivers whose fate a worker change carries
}

func (r *reconciler) why(format string, args ...any) string {
	return fmt.Sprintf(format, args...) + fmt.Sprintf(" recovery for epoch %d", r.snap.Epoch)
}

// silent: the worker stays UNKNOWN for the heartbeat service to judge;
// what it holds is left as recorded, and its drivers, which no worker can
// confirm or lose yet, go back to RUNNING so that they keep holding their
// resources and follow their worker's fate (the scheduler's lost-driver
// rule if it dies, registration's reconciliation if it comes back).
func (r *reconciler) silent(wid string) {
	for _, id := range r.driversOn[wid] {
		d := r.snap.Drivers[id]
		if d.State != schemas.DriverUnknown {
			continue
		}
		to, ok := d.State.Next(schemas.DriverEvRunning)
		if !ok {
			continue
		}
		r.res.Drivers = append(r.res.Drivers, DriverChange{ID: id, FromWorker: wid, From: d.State, To: to,
			WorkerID: wid, PID: d.PID, Message: r.why("worker %s did not answer; left to its heartbeats after", wid)})
		r.decided[id] = true
	}
}

// answered: the worker is ALIVE; its report confirms, ends or kills.
func (r *reconciler) answered(wid string, rep *schemas.WorkerReport) {
	alive, _ := schemas.WorkerUnknown.Next(schemas.WorkerEvAnswered)
	r.res.Workers = append(r.res.Workers, WorkerChange{ID: wid, From: schemas.WorkerUnknown, To: alive,
		Reason: r.why("answered")})
	for _, k := range schemas.UnreportedExecutors(wid, r.snap.Executors, rep.Executors) {
		r.res.Executors = append(r.res.Executors, lose(r.snap.Executors[k], k, r.why("worker %s did not report it in", wid)))
		r.final[k] = schemas.ExecutorLost
	}
	for _, re := range rep.Executors {
		r.reportedExecutor(wid, re)
	}
	for _, rd := range rep.Drivers {
		r.reportedDriver(wid, rd)
	}
}

// reportedExecutor: RUNNING confirms the record (with its pid); ended while
// the master was away ends it (the agent's state report, retried until
// acked, carries the exit code); running but unknown, placed elsewhere or
// recorded ended is killed.
func (r *reconciler) reportedExecutor(wid string, re schemas.RunningExecutor) {
	k := schemas.ExecutorKey(re.AppID, re.ExecutorID)
	x := r.snap.Executors[k]
	var why string
	switch {
	case x == nil:
		why = "unknown to the cluster"
	case x.WorkerID != wid:
		why = fmt.Sprintf("placed on worker %s", x.WorkerID)
	default:
		ev := schemas.ExecutorEvRunning // what an agent lists runs, whatever state it says
		if re.State.Terminal() {
			ev = schemas.ExecutorReported(re.State)
		}
		to, ok := x.State.Next(ev)
		if !ok {
			why = fmt.Sprintf("recorded %s", x.State)
			break
		}
		if to == x.State && (re.PID <= 0 || re.PID == x.PID) {
			return
		}
		c := ExecutorChange{Key: k, WorkerID: wid, From: x.State, To: to, Message: r.why("confirmed in")}
		if to == schemas.ExecutorRunning {
			c.PID = re.PID
		} else {
			c.Message = r.why("reported %s in", to)
		}
		r.res.Executors = append(r.res.Executors, c)
		r.final[k] = to
		return
	}
	if re.State.Terminal() {
		return // nothing runs to kill
	}
	r.res.Kills = append(r.res.Kills, KillCommand{WorkerID: wid, Kill: schemas.Kill{Epoch: r.snap.Epoch, AppID: re.AppID,
		ExecutorID: re.ExecutorID, Reason: fmt.Sprintf("executor %s %s (recovery for epoch %d)", k, why, r.snap.Epoch)}})
}

// reportedDriver: a driver recorded on this worker is adopted (RUNNING or
// RELAUNCHING as reported); one unknown, placed elsewhere or ended is killed.
func (r *reconciler) reportedDriver(wid string, rd schemas.RunningDriver) {
	if rd.State.Terminal() {
		return
	}
	d := r.snap.Drivers[rd.DriverID]
	var why string
	switch {
	case d == nil:
		why = "unknown to the cluster"
	case d.WorkerID != wid:
		why = fmt.Sprintf("placed on worker %q", d.WorkerID)
	case d.State.Terminal():
		why = fmt.Sprintf("recorded %s", d.State)
	default:
		r.adopted[d.ID] = true
		ev := schemas.DriverEvRunning
		if rd.State == schemas.DriverRelaunching {
			ev = schemas.DriverEvRelaunching
		}
		if to, ok := d.State.Next(ev); ok && (d.State != to || (rd.PID > 0 && rd.PID != d.PID)) {
			r.res.Drivers = append(r.res.Drivers, DriverChange{ID: d.ID, FromWorker: wid, From: d.State, To: to,
				WorkerID: wid, PID: rd.PID, Message: r.why("confirmed in")})
		}
		return
	}
	r.res.Kills = append(r.res.Kills, KillCommand{WorkerID: wid, Kill: schemas.Kill{Epoch: r.snap.Epoch, DriverID: rd.DriverID,
		Reason: fmt.Sprintf("driver %s %s (recovery for epoch %d)", rd.DriverID, why, r.snap.Epoch)}})
}

// unconfirmedDrivers: a driver still UNKNOWN that no worker adopted meets
// the lost-driver rule.
func (r *reconciler) unconfirmedDrivers() {
	for _, id := range slices.Sorted(maps.Keys(r.snap.Drivers)) {
		d := r.snap.Drivers[id]
		if d.State != schemas.DriverUnknown || r.adopted[id] || r.decided[id] {
			continue
		}
		why := r.why("no worker reported it in")
		if d.WorkerID == "" {
			why = r.why("not placed on any worker in")
		}
		r.res.Drivers = append(r.res.Drivers, lostDriver(d, why))
	}
}

// apps: an UNKNOWN app whose driver answered is RUNNING if one of its
// executors still holds resources, WAITING otherwise; left UNKNOWN if silent.
func (r *reconciler) apps(acks map[string]bool) {
	holds := map[string]bool{}
	for k, st := range r.final {
		if st.Holds() {
			holds[r.snap.Executors[k].AppID] = true
		}
	}
	for _, id := range slices.Sorted(maps.Keys(r.snap.Apps)) {
		a := r.snap.Apps[id]
		if a.State != schemas.AppUnknown {
			continue
		}
		if !acks[id] {
			continue // left UNKNOWN: the heartbeat service judges it
		}
		ev, msg := schemas.AppEvAnsweredWaiting, r.why("driver answered")+"; no executor left"
		switch {
		case holds[id]:
			ev, msg = schemas.AppEvAnsweredRunning, r.why("driver answered")
		}
		to, _ := a.State.Next(ev)
		r.res.Apps = append(r.res.Apps, AppChange{ID: id, From: a.State, To: to, Message: msg})
	}
}

// lostDriver is the lost-driver rule (schemas.LoseDriver) as a change.
func lostDriver(d *schemas.Driver, why string) DriverChange {
	next, _ := schemas.LoseDriver(*d, why)
	return DriverChange{ID: d.ID, FromWorker: d.WorkerID, From: d.State, To: next.State,
		WorkerID: next.WorkerID, Message: next.Message}
}

// lose is an executor's LOST change.
func lose(x *schemas.Executor, key, why string) ExecutorChange {
	to, _ := x.State.Next(schemas.ExecutorEvLost)
	return ExecutorChange{Key: key, WorkerID: x.WorkerID, From: x.State, To: to, Message: why}
}
