package schemas

// WorkerState is the life cycle of a worker record in stoker-workers.
type WorkerState string

const (
	// WorkerAlive: registered and heartbeating.
	WorkerAlive WorkerState = "ALIVE"
	// WorkerDead: missed heartbeats for the worker timeout, or did not answer recovery.
	WorkerDead WorkerState = "DEAD"
	// WorkerDecommissioned: the agent said it was leaving (SIGTERM).
	WorkerDecommissioned WorkerState = "DECOMMISSIONED"
	// WorkerUnknown: a new scheduler epoch is recovering and has not heard from it yet.
	WorkerUnknown WorkerState = "UNKNOWN"
)

// Usable reports whether executors and drivers may be placed on the worker.
func (s WorkerState) Usable() bool { return s == WorkerAlive }

// Gone reports whether the worker record is only kept for history.
func (s WorkerState) Gone() bool { return s == WorkerDead || s == WorkerDecommissioned }

// DriverState is the life cycle of a driver record in stoker-drivers.
type DriverState string

const (
	DriverSubmitted   DriverState = "SUBMITTED"
	DriverRunning     DriverState = "RUNNING"
	DriverRelaunching DriverState = "RELAUNCHING"
	DriverFinished    DriverState = "FINISHED"
	DriverFailed      DriverState = "FAILED"
	DriverKilled      DriverState = "KILLED"
	DriverError       DriverState = "ERROR"
	DriverUnknown     DriverState = "UNKNOWN"
)

// Terminal reports whether the driver will never run again.
func (s DriverState) Terminal() bool {
	switch s {
	case DriverFinished, DriverFailed, DriverKilled, DriverError:
		return true
	}
	return false
}

// AppState is the life cycle of an application record in stoker-apps.
type AppState string

const (
	AppWaiting  AppState = "WAITING"
	AppRunning  AppState = "RUNNING"
	AppFinished AppState = "FINISHED"
	AppFailed   AppState = "FAILED"
	AppKilled   AppState = "KILLED"
	AppUnknown  AppState = "UNKNOWN"
)

// Terminal reports whether the application has ended.
func (s AppState) Terminal() bool {
	return s == AppFinished || s == AppFailed || s == AppKilled
}

// ExecutorState is the life cycle of an executor record in stoker-executors.
type ExecutorState string

const (
	// ExecutorLaunching: placed by the scheduler, launch sent or about to be.
	ExecutorLaunching ExecutorState = "LAUNCHING"
	// ExecutorRunning: the agent started the process.
	ExecutorRunning ExecutorState = "RUNNING"
	// ExecutorExited: the process exited with code 0, or was asked to stop by its app ending.
	ExecutorExited ExecutorState = "EXITED"
	// ExecutorFailed: the process exited non-zero, or could not be started.
	ExecutorFailed ExecutorState = "FAILED"
	// ExecutorKilled: killed on request.
	ExecutorKilled ExecutorState = "KILLED"
	// ExecutorLost: its worker died or did not answer recovery.
	ExecutorLost ExecutorState = "LOST"
)

// Terminal reports whether the executor has ended.
func (s ExecutorState) Terminal() bool {
	switch s {
	case ExecutorExited, ExecutorFailed, ExecutorKilled, ExecutorLost:
		return true
	}
	return false
}

// Holds reports whether the executor holds its cores and memory on its worker.
func (s ExecutorState) Holds() bool { return s == ExecutorLaunching || s == ExecutorRunning }

// Holds reports whether a driver in this state holds cores and memory on its
// worker (RELAUNCHING: the agent restarts a supervised driver in place).
func (s DriverState) Holds() bool { return s == DriverRunning || s == DriverRelaunching }

// ClusterState is the scheduler's phase for an epoch.
type ClusterState string

const (
	// ClusterRecovering: a new epoch is reconciling; nothing is scheduled.
	ClusterRecovering ClusterState = "RECOVERING"
	// ClusterAlive: recovery for the epoch completed; the scheduler schedules.
	ClusterAlive ClusterState = "ALIVE"
	// ClusterStandby: no leader holds the lease.
	ClusterStandby ClusterState = "STANDBY"
)
