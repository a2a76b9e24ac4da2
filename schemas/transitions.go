package schemas

import "slices"

// The state machines of workers, drivers, applications and executors: one
// rule per (state, event), written once here and used by every writer
// (registration, heartbeat, scheduler, recovery). A writer asks Next and
// writes what it says, or nothing when the machine refuses; who may send
// which event is docs/contract.md's "who writes what".
//
// Each machine is a table event → (the states it leaves from, the state it
// reaches). A state an event does not name refuses it, so a terminal state
// refuses everything by leaving every event's from-list.

// rule is one event of a machine: the states it may leave and where it goes.
type rule[S ~string] struct {
	from []S
	to   S
}

func next[S, E ~string](rules map[E]rule[S], s S, e E) (S, bool) {
	r, ok := rules[e]
	if !ok {
		return s, false
	}
	for _, f := range r.from {
		if f == s {
			return r.to, true
		}
	}
	return s, false
}

// ---- workers ------------------------------------------------------------

// WorkerEvent is something that happens to a worker.
type WorkerEvent string

const (
	// WorkerEvRegistered: an agent registered (first time, again after
	// DEAD/DECOMMISSIONED/UNKNOWN, or a restarted agent replacing an ALIVE one).
	WorkerEvRegistered WorkerEvent = "registered"
	// WorkerEvLeft: the agent said it is leaving.
	WorkerEvLeft WorkerEvent = "left"
	// WorkerEvTimedOut: no heartbeat for the worker timeout.
	WorkerEvTimedOut WorkerEvent = "timed-out"
	// WorkerEvRecovering: a new epoch asks it to answer.
	WorkerEvRecovering WorkerEvent = "recovering"
	// WorkerEvAnswered: it answered recovery (or a failed recovery restores it).
	WorkerEvAnswered WorkerEvent = "answered"
	// WorkerEvSilent: it did not answer recovery.
	WorkerEvSilent WorkerEvent = "silent"
	// WorkerEvDrained: a draining worker holds nothing any more (the
	// scheduler's write at the end of a drain).
	WorkerEvDrained WorkerEvent = "drained"
)

var workerRules = map[WorkerEvent]rule[WorkerState]{
	WorkerEvRegistered: {[]WorkerState{WorkerAlive, WorkerDead, WorkerDecommissioned, WorkerUnknown}, WorkerAlive},
	WorkerEvLeft:       {[]WorkerState{WorkerAlive, WorkerUnknown}, WorkerDecommissioned},
	WorkerEvTimedOut:   {[]WorkerState{WorkerAlive}, WorkerDead},
	WorkerEvRecovering: {[]WorkerState{WorkerAlive}, WorkerUnknown},
	WorkerEvAnswered:   {[]WorkerState{WorkerUnknown}, WorkerAlive},
	WorkerEvSilent:     {[]WorkerState{WorkerUnknown}, WorkerDead},
	WorkerEvDrained:    {[]WorkerState{WorkerAlive}, WorkerDecommissioned},
}

// Next is the worker's state after e, or false if the state refuses e.
func (s WorkerState) Next(e WorkerEvent) (WorkerState, bool) { return next(workerRules, s, e) }

// WorkerStates lists every worker state; WorkerEvents every event.
func WorkerStates() []WorkerState {
	return []WorkerState{WorkerAlive, WorkerDead, WorkerDecommissioned, WorkerUnknown}
}

func WorkerEvents() []WorkerEvent {
	return []WorkerEvent{WorkerEvRegistered, WorkerEvLeft, WorkerEvTimedOut, WorkerEvRecovering, WorkerEvAnswered, WorkerEvSilent, WorkerEvDrained}
}

// ---- drivers ------------------------------------------------------------

// DriverEvent is something that happens to a driver.
type DriverEvent string

const (
	// DriverEvPlaced: the scheduler placed it on a worker.
	DriverEvPlaced DriverEvent = "placed"
	// DriverEvUnacknowledged: the launch command got no answer; the driver
	// waits to be placed again.
	DriverEvUnacknowledged DriverEvent = "unacknowledged"
	// DriverEvKilledWaiting: killed on request before it was placed.
	DriverEvKilledWaiting DriverEvent = "killed-waiting"
	// DriverEvRunning .. DriverEvErrored: its agent says so (a state report,
	// a registration or a recovery answer), or a failed recovery restores it.
	DriverEvRunning     DriverEvent = "running"
	DriverEvRelaunching DriverEvent = "relaunching"
	DriverEvFinished    DriverEvent = "finished"
	DriverEvFailed      DriverEvent = "failed"
	DriverEvKilled      DriverEvent = "killed"
	// DriverEvErrored: the agent could not start it (a refused launch or
	// its ERROR report).
	DriverEvErrored DriverEvent = "errored"
	// DriverEvWorkerLost .. KillRequested: its worker is gone (DEAD,
	// DECOMMISSIONED, restarted without it, silent in recovery). Which of
	// the three applies is LostDriverEvent's to say.
	DriverEvWorkerLost              DriverEvent = "worker-lost"
	DriverEvWorkerLostSupervised    DriverEvent = "worker-lost-supervised"
	DriverEvWorkerLostKillRequested DriverEvent = "worker-lost-kill-requested"
	// DriverEvRecovering: a new epoch asks its worker about it.
	DriverEvRecovering DriverEvent = "recovering"
)

// onWorker: the states in which a driver is on a worker, as recorded or
// as recovery is asking about it.
var onWorker = []DriverState{DriverRunning, DriverRelaunching, DriverUnknown}

var driverRules = map[DriverEvent]rule[DriverState]{
	DriverEvPlaced:                  {[]DriverState{DriverSubmitted}, DriverRunning},
	DriverEvUnacknowledged:          {[]DriverState{DriverRunning}, DriverSubmitted},
	DriverEvKilledWaiting:           {[]DriverState{DriverSubmitted}, DriverKilled},
	DriverEvRunning:                 {onWorker, DriverRunning},
	DriverEvRelaunching:             {onWorker, DriverRelaunching},
	DriverEvFinished:                {onWorker, DriverFinished},
	DriverEvFailed:                  {onWorker, DriverFailed},
	DriverEvKilled:                  {onWorker, DriverKilled},
	DriverEvErrored:                 {onWorker, DriverError},
	DriverEvWorkerLost:              {onWorker, DriverError},
	DriverEvWorkerLostSupervised:    {onWorker, DriverSubmitted},
	DriverEvWorkerLostKillRequested: {onWorker, DriverKilled},
	DriverEvRecovering:              {[]DriverState{DriverRunning, DriverRelaunching}, DriverUnknown},
}

// Next is the driver's state after e, or false if the state refuses e.
func (s DriverState) Next(e DriverEvent) (DriverState, bool) { return next(driverRules, s, e) }

// DriverReported is the event of a state an agent reports for a driver
// ("" for a state agents do not report).
func DriverReported(s DriverState) DriverEvent {
	switch s {
	case DriverRunning:
		return DriverEvRunning
	case DriverRelaunching:
		return DriverEvRelaunching
	case DriverFinished:
		return DriverEvFinished
	case DriverFailed:
		return DriverEvFailed
	case DriverKilled:
		return DriverEvKilled
	case DriverError:
		return DriverEvErrored
	}
	return ""
}

// LostDriverEvent is the one rule for a driver whose worker is lost: KILLED
// if a kill was requested, relaunched (SUBMITTED) if supervised, else ERROR
// (Spark's master: relaunchDriver or removeDriver(ERROR)).
func LostDriverEvent(d *Driver) DriverEvent {
	switch {
	case d.KillRequested:
		return DriverEvWorkerLostKillRequested
	case d.Supervise:
		return DriverEvWorkerLostSupervised
	}
	return DriverEvWorkerLost
}

// LoseDriver applies LostDriverEvent to d: the record as it must be written,
// or false if d is not on a worker. A relaunched driver names no worker (the
// scheduler places it again); an ended one keeps naming the worker it ran
// on, as history. The process is gone either way (no PID). why says what
// happened to the worker; the message adds what happens to the driver.
func LoseDriver(d Driver, why string) (Driver, bool) {
	to, ok := d.State.Next(LostDriverEvent(&d))
	if !ok {
		return d, false
	}
	d.State, d.PID = to, 0
	switch to {
	case DriverSubmitted:
		d.WorkerID = ""
		d.Message = "relaunching: " + why
	case DriverKilled:
		d.Message = "killed: " + why
	default:
		d.Message = why
	}
	return d, true
}

// DriverStates lists every driver state; DriverEvents every event.
func DriverStates() []DriverState {
	return []DriverState{DriverSubmitted, DriverRunning, DriverRelaunching, DriverFinished,
		DriverFailed, DriverKilled, DriverError, DriverUnknown}
}

func DriverEvents() []DriverEvent {
	return []DriverEvent{DriverEvPlaced, DriverEvUnacknowledged, DriverEvKilledWaiting,
		DriverEvRunning, DriverEvRelaunching, DriverEvFinished, DriverEvFailed, DriverEvKilled, DriverEvErrored,
		DriverEvWorkerLost, DriverEvWorkerLostSupervised, DriverEvWorkerLostKillRequested, DriverEvRecovering}
}

// ---- applications -------------------------------------------------------

// AppEvent is something that happens to an application.
type AppEvent string

const (
	// AppEvPlaced: the scheduler placed executors for it.
	AppEvPlaced AppEvent = "placed"
	// AppEvFinished: its driver finished or unregistered it, every
	// executor of a run-once app exited 0, or its driver fell silent.
	AppEvFinished AppEvent = "finished"
	// AppEvFailed: its driver failed or ended in error, or its executors
	// failed max-executor-retries times in a row.
	AppEvFailed AppEvent = "failed"
	// AppEvKilled: killed on request, or its driver was.
	AppEvKilled AppEvent = "killed"
	// AppEvRecovering: a new epoch asks its driver.
	AppEvRecovering AppEvent = "recovering"
	// AppEvAnsweredRunning / Waiting: its driver answered recovery (or a
	// failed recovery restores it), with or without executors holding
	// resources.
	AppEvAnsweredRunning AppEvent = "answered-running"
	AppEvAnsweredWaiting AppEvent = "answered-waiting"
)

var appLive = []AppState{AppWaiting, AppRunning, AppUnknown}

var appRules = map[AppEvent]rule[AppState]{
	AppEvPlaced:          {[]AppState{AppWaiting, AppRunning}, AppRunning},
	AppEvFinished:        {appLive, AppFinished},
	AppEvFailed:          {appLive, AppFailed},
	AppEvKilled:          {appLive, AppKilled},
	AppEvRecovering:      {[]AppState{AppWaiting, AppRunning}, AppUnknown},
	AppEvAnsweredRunning: {[]AppState{AppUnknown}, AppRunning},
	AppEvAnsweredWaiting: {[]AppState{AppUnknown}, AppWaiting},
}

// Next is the application's state after e, or false if the state refuses e.
func (s AppState) Next(e AppEvent) (AppState, bool) { return next(appRules, s, e) }

// AppEnded is the event that ends an application in state s (FINISHED,
// FAILED or KILLED; "" for any other state).
func AppEnded(s AppState) AppEvent {
	switch s {
	case AppFinished:
		return AppEvFinished
	case AppFailed:
		return AppEvFailed
	case AppKilled:
		return AppEvKilled
	}
	return ""
}

// AppAfterDriver is the event an application takes when its driver ended
// in state d ("" while the driver has not ended).
func AppAfterDriver(d DriverState) AppEvent {
	switch d {
	case DriverFinished:
		return AppEvFinished
	case DriverFailed, DriverError:
		return AppEvFailed
	case DriverKilled:
		return AppEvKilled
	}
	return ""
}

// AppStates lists every application state; AppEvents every event.
func AppStates() []AppState {
	return []AppState{AppWaiting, AppRunning, AppFinished, AppFailed, AppKilled, AppUnknown}
}

func AppEvents() []AppEvent {
	return []AppEvent{AppEvPlaced, AppEvFinished, AppEvFailed, AppEvKilled, AppEvRecovering,
		AppEvAnsweredRunning, AppEvAnsweredWaiting}
}

// ---- executors ----------------------------------------------------------

// ExecutorEvent is something that happens to an executor.
type ExecutorEvent string

const (
	// ExecutorEvRunning .. Killed: its agent says so (a state report, a
	// registration or a recovery answer).
	ExecutorEvRunning ExecutorEvent = "running"
	ExecutorEvExited  ExecutorEvent = "exited"
	ExecutorEvFailed  ExecutorEvent = "failed"
	ExecutorEvKilled  ExecutorEvent = "killed"
	// ExecutorEvLaunchFailed: the agent refused the launch (it could not
	// start the process).
	ExecutorEvLaunchFailed ExecutorEvent = "launch-failed"
	// ExecutorEvLaunchLost: the launch says nothing of the executor: not
	// acknowledged in time, nobody answered it, an agent's fence refused
	// it, or it was not sent. Like launch-failed, only a record still
	// LAUNCHING takes it: once the agent has reported it RUNNING, the
	// launch evidently arrived, and a late timeout must not end an
	// executor that runs (it would be replaced and run twice).
	ExecutorEvLaunchLost ExecutorEvent = "launch-lost"
	// ExecutorEvLost: its worker is gone, or answered without it.
	ExecutorEvLost ExecutorEvent = "lost"
)

var holding = []ExecutorState{ExecutorLaunching, ExecutorRunning}

var executorRules = map[ExecutorEvent]rule[ExecutorState]{
	ExecutorEvRunning:      {holding, ExecutorRunning},
	ExecutorEvExited:       {holding, ExecutorExited},
	ExecutorEvFailed:       {holding, ExecutorFailed},
	ExecutorEvKilled:       {holding, ExecutorKilled},
	ExecutorEvLaunchFailed: {[]ExecutorState{ExecutorLaunching}, ExecutorFailed},
	ExecutorEvLaunchLost:   {[]ExecutorState{ExecutorLaunching}, ExecutorLost},
	ExecutorEvLost:         {holding, ExecutorLost},
}

// Next is the executor's state after e, or false if the state refuses e.
func (s ExecutorState) Next(e ExecutorEvent) (ExecutorState, bool) { return next(executorRules, s, e) }

// ExecutorReported is the event of a state an agent reports for an
// executor ("" for a state agents do not report).
func ExecutorReported(s ExecutorState) ExecutorEvent {
	switch s {
	case ExecutorRunning:
		return ExecutorEvRunning
	case ExecutorExited:
		return ExecutorEvExited
	case ExecutorFailed:
		return ExecutorEvFailed
	case ExecutorKilled:
		return ExecutorEvKilled
	}
	return ""
}

// ExecutorStates lists every executor state; ExecutorEvents every event.
func ExecutorStates() []ExecutorState {
	return []ExecutorState{ExecutorLaunching, ExecutorRunning, ExecutorExited, ExecutorFailed, ExecutorKilled, ExecutorLost}
}

func ExecutorEvents() []ExecutorEvent {
	return []ExecutorEvent{ExecutorEvRunning, ExecutorEvExited, ExecutorEvFailed, ExecutorEvKilled,
		ExecutorEvLaunchFailed, ExecutorEvLaunchLost, ExecutorEvLost}
}

// ---- the rules around the machines --------------------------------------

// UnreportedExecutors is the one rule for "held by the worker but not
// reported": the keys (sorted) of the executors recorded as holding
// resources on worker wid that the worker's own list (a registration or a
// recovery answer) does not name. The worker no longer runs them: LOST.
func UnreportedExecutors(wid string, recorded map[string]*Executor, listed []RunningExecutor) []string {
	named := make(map[string]bool, len(listed))
	for _, re := range listed {
		named[ExecutorKey(re.AppID, re.ExecutorID)] = true
	}
	var out []string
	for k, x := range recorded {
		if x.WorkerID == wid && x.State.Holds() && !named[k] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// Usage is what the executors and drivers placed on one worker hold.
type Usage struct {
	Cores     int
	MemoryMB  int64
	Executors int // executors that hold resources (LAUNCHING, RUNNING)
	Drivers   int // drivers that hold resources (RUNNING, RELAUNCHING)
	// Resources are the custom resource addresses held (nil if none).
	Resources Resources
}

// addAddrs adds held addresses to w.Resources.
func (w *Usage) addAddrs(r Resources) {
	if len(r) == 0 {
		return
	}
	if w.Resources == nil {
		w.Resources = Resources{}
	}
	for name, addrs := range r {
		w.Resources[name] = append(w.Resources[name], addrs...)
		SortAddresses(w.Resources[name])
	}
}

// Usages is the resource accounting of a cluster: worker id → Usage. Used
// cores and memory are never stored; every reader derives them with Add*,
// counting only records whose state Holds() and that name a worker.
type Usages map[string]Usage

// AddExecutor counts e if it holds resources on a worker.
func (u Usages) AddExecutor(e *Executor) {
	if e.WorkerID == "" || !e.State.Holds() {
		return
	}
	w := u[e.WorkerID]
	w.Cores += e.Cores
	w.MemoryMB += e.MemoryMB
	w.Executors++
	w.addAddrs(e.Resources)
	u[e.WorkerID] = w
}

// AddDriver counts d if it holds resources on a worker.
func (u Usages) AddDriver(d *Driver) {
	if d.WorkerID == "" || !d.State.Holds() {
		return
	}
	w := u[d.WorkerID]
	w.Cores += d.Cores
	w.MemoryMB += d.MemoryMB
	w.Drivers++
	w.addAddrs(d.Resources)
	u[d.WorkerID] = w
}

// NextTerm is the term of the leadership after c's: one more than c's, 1
// with no record.
func (c *Cluster) NextTerm() uint64 {
	if c == nil {
		return 1
	}
	return c.Term + 1
}

// LeaderTerm is the term of the leadership with epoch, as the cluster
// record c says: c's term when c is that epoch's, the next term when
// recovery has not claimed the epoch yet (c older), c's when c is newer (a
// lease read before the record).
func LeaderTerm(c *Cluster, epoch uint64) uint64 {
	switch {
	case c == nil:
		return 1
	case c.Epoch < epoch:
		return c.NextTerm()
	}
	return max(c.Term, 1)
}

// EpochOf is a lease's epoch: the revision that created the lease key,
// carried in the value from the first renewal on, else the entry's own
// revision rev (a lease not renewed yet).
func (l *Lease) EpochOf(rev uint64) uint64 {
	if l.Epoch != 0 {
		return l.Epoch
	}
	return rev
}
