package schemas

import (
	"fmt"
	"time"
)

// Versioned type names. A breaking change to a type gets a new version.
const (
	TypeRegisterWorker    = "io.stoker.v1.register_worker"
	TypeWorkerRegistered  = "io.stoker.v1.worker_registered"
	TypeHeartbeat         = "io.stoker.v1.heartbeat"
	TypeReregister        = "io.stoker.v1.reregister"
	TypeWorkerLeaving     = "io.stoker.v1.worker_leaving"
	TypeAck               = "io.stoker.v1.ack"
	TypeWorker            = "io.stoker.v1.worker"
	TypeDriver            = "io.stoker.v1.driver"
	TypeApp               = "io.stoker.v1.app"
	TypeExecutor          = "io.stoker.v1.executor"
	TypeLease             = "io.stoker.v1.lease"
	TypeCluster           = "io.stoker.v1.cluster"
	TypeLaunchExecutor    = "io.stoker.v1.launch_executor"
	TypeLaunchDriver      = "io.stoker.v1.launch_driver"
	TypeKill              = "io.stoker.v1.kill"
	TypeMasterChanged     = "io.stoker.v1.master_changed"
	TypeWorkerReport      = "io.stoker.v1.worker_report"
	TypeStateChange       = "io.stoker.v1.state_change"
	TypeStateAck          = "io.stoker.v1.state_ack"
	TypeSubmitDriver      = "io.stoker.v1.submit_driver"
	TypeSubmitDriverReply = "io.stoker.v1.submit_driver_reply"
	TypeRegisterApp       = "io.stoker.v1.register_app"
	TypeAppRegistered     = "io.stoker.v1.app_registered"
	TypeUnregisterApp     = "io.stoker.v1.unregister_app"
	TypeKillRequest       = "io.stoker.v1.kill_request"
	TypeAppHeartbeat      = "io.stoker.v1.app_heartbeat"
	TypeListRequest       = "io.stoker.v1.list_request"
	TypeWorkerList        = "io.stoker.v1.worker_list"
	TypeDriverList        = "io.stoker.v1.driver_list"
	TypeAppList           = "io.stoker.v1.app_list"
	TypeStatus            = "io.stoker.v1.status"
	TypeLogsRequest       = "io.stoker.v1.logs_request"
	TypeLogsReply         = "io.stoker.v1.logs_reply"
	TypeEvent             = "io.stoker.v1.event"
	TypeLeaseBeat         = "io.stoker.v1.lease_beat"
	TypeAgentPresence     = "io.stoker.v1.agent_presence"
)

// Base is embedded first in every wire type: the versioned type name.
type Base struct {
	Type string `json:"type,omitempty"`
}

// SetType stamps the versioned type name; encoders call it through Typed.
func (b *Base) SetType(t string) { b.Type = t }

// GotType is the type name the message arrived with ("" if the sender omitted it).
func (b *Base) GotType() string { return b.Type }

// Typed is implemented by every wire type.
type Typed interface {
	WireType() string
	SetType(string)
	GotType() string
}

// ---- Worker registration and liveness ----------------------------------

// RegisterWorker is sent by an agent on stoker.worker.<wid>.register.
type RegisterWorker struct {
	Base
	WorkerID string `json:"worker_id"`
	// Instance is random per agent process: the same instance registering
	// again is a network blip (acknowledged), a new instance is a restart.
	Instance string `json:"instance"`
	Host     string `json:"host"`
	Cores    int    `json:"cores"`
	MemoryMB int64  `json:"memory_mb"`
	WorkDir  string `json:"work_dir,omitempty"`
	// PID is the agent's process id and Since when the instance started:
	// a registration from an instance older than the ALIVE one holding the
	// worker id is refused (the older one was replaced; docs/contract.md,
	// "one worker id, one live agent").
	PID   int       `json:"pid,omitempty"`
	Since time.Time `json:"since"`
	// Executors and drivers the agent still runs (after a bus restart or a
	// re-register request), so the cluster does not forget them.
	Executors []RunningExecutor `json:"executors,omitempty"`
	Drivers   []RunningDriver   `json:"drivers,omitempty"`
}

func (*RegisterWorker) WireType() string { return TypeRegisterWorker }

// RunningExecutor is an agent's account of one executor it runs.
type RunningExecutor struct {
	AppID      string        `json:"app_id"`
	ExecutorID int           `json:"executor_id"`
	Cores      int           `json:"cores"`
	MemoryMB   int64         `json:"memory_mb"`
	State      ExecutorState `json:"state"`
	PID        int           `json:"pid,omitempty"`
}

// RunningDriver is an agent's account of one driver it runs.
type RunningDriver struct {
	DriverID string      `json:"driver_id"`
	Cores    int         `json:"cores"`
	MemoryMB int64       `json:"memory_mb"`
	State    DriverState `json:"state"`
	PID      int         `json:"pid,omitempty"`
	Attempt  int         `json:"attempt,omitempty"`
}

// WorkerRegistered answers RegisterWorker.
type WorkerRegistered struct {
	Base
	WorkerID string `json:"worker_id"`
	// Duplicate is true when the same agent instance was already registered
	// and ALIVE: a repeated request after a network blip. Not an error.
	Duplicate bool `json:"duplicate,omitempty"`
	// Replaced names the previous state of a record that this registration
	// replaced (DEAD, UNKNOWN, DECOMMISSIONED, or ALIVE for a restarted agent).
	Replaced            WorkerState `json:"replaced,omitempty"`
	HeartbeatIntervalMS int64       `json:"heartbeat_interval_ms"`
	// Epoch is the current scheduler epoch, 0 if none is known.
	Epoch uint64 `json:"epoch,omitempty"`
	// KillExecutors ("<appid>.<execid>") and KillDrivers name processes the
	// agent listed as running that the cluster has already replaced or
	// ended: the agent kills them.
	KillExecutors []string `json:"kill_executors,omitempty"`
	KillDrivers   []string `json:"kill_drivers,omitempty"`
}

func (*WorkerRegistered) WireType() string { return TypeWorkerRegistered }

// Heartbeat is published by an agent on stoker.worker.<wid>.heartbeat with a
// reply subject; the heartbeat service answers only to ask for re-registration.
type Heartbeat struct {
	Base
	WorkerID string `json:"worker_id"`
	Instance string `json:"instance"`
	Seq      uint64 `json:"seq,omitempty"`
}

func (*Heartbeat) WireType() string { return TypeHeartbeat }

// Reregister tells an agent that the cluster does not know it as ALIVE.
type Reregister struct {
	Base
	WorkerID string `json:"worker_id"`
	Reason   string `json:"reason"`
}

func (*Reregister) WireType() string { return TypeReregister }

// WorkerLeaving is sent by an agent shutting down on purpose.
type WorkerLeaving struct {
	Base
	WorkerID string `json:"worker_id"`
	Instance string `json:"instance"`
}

func (*WorkerLeaving) WireType() string { return TypeWorkerLeaving }

// AgentPresence answers a request on stoker.worker.<wid>.ping: the live
// agent instance that holds the worker id. A starting agent asks before it
// acts on commands and refuses to start if an older instance answers.
type AgentPresence struct {
	Base
	WorkerID string    `json:"worker_id"`
	Instance string    `json:"instance"`
	Host     string    `json:"host"`
	PID      int       `json:"pid,omitempty"`
	Since    time.Time `json:"since"`
	WorkDir  string    `json:"work_dir,omitempty"`
}

func (*AgentPresence) WireType() string { return TypeAgentPresence }

// OlderThan orders agent instances by start time, then instance nonce: of
// two live instances under one worker id, the older one keeps it.
func (p *AgentPresence) OlderThan(q *AgentPresence) bool {
	if !p.Since.Equal(q.Since) {
		return p.Since.Before(q.Since)
	}
	return p.Instance < q.Instance
}

// String names the instance for an error message.
func (p *AgentPresence) String() string {
	return fmt.Sprintf("on host %s (pid %d, since %s, instance %s, work dir %s)",
		p.Host, p.PID, p.Since.UTC().Format(time.RFC3339), p.Instance, p.WorkDir)
}

// Ack is the generic positive answer.
type Ack struct {
	Base
	OK      bool   `json:"ok"`
	Message string `json:"message,omitempty"`
}

func (*Ack) WireType() string { return TypeAck }

// ---- KV records ---------------------------------------------------------

// Worker is the record in stoker-workers, keyed by worker id.
// Used cores and memory are not stored: they are derived from the executors
// and drivers that hold resources on the worker, so they can never drift or
// go negative after a failover.
type Worker struct {
	Base
	ID           string      `json:"id"`
	Instance     string      `json:"instance"`
	Host         string      `json:"host"`
	Cores        int         `json:"cores"`
	MemoryMB     int64       `json:"memory_mb"`
	State        WorkerState `json:"state"`
	RegisteredAt time.Time   `json:"registered_at"`
	UpdatedAt    time.Time   `json:"updated_at"`
	// PID and Since are the registered agent instance's process id and
	// start time (see RegisterWorker); WorkDir its work dir, where the logs
	// of what it ran stay.
	PID     int       `json:"pid,omitempty"`
	Since   time.Time `json:"since"`
	WorkDir string    `json:"work_dir,omitempty"`
	// Epoch is the scheduler epoch under which the record was last confirmed.
	Epoch  uint64 `json:"epoch,omitempty"`
	Reason string `json:"reason,omitempty"`
}

func (*Worker) WireType() string { return TypeWorker }

// Driver is the record in stoker-drivers, keyed by driver id.
type Driver struct {
	Base
	ID          string      `json:"id"`
	Name        string      `json:"name,omitempty"`
	Command     []string    `json:"command"`
	Env         []string    `json:"env,omitempty"`
	Cores       int         `json:"cores"`
	MemoryMB    int64       `json:"memory_mb"`
	Supervise   bool        `json:"supervise"`
	State       DriverState `json:"state"`
	WorkerID    string      `json:"worker_id,omitempty"`
	Attempts    int         `json:"attempts"`
	ExitCode    *int        `json:"exit_code,omitempty"`
	PID         int         `json:"pid,omitempty"`
	Message     string      `json:"message,omitempty"`
	SubmittedAt time.Time   `json:"submitted_at"`
	UpdatedAt   time.Time   `json:"updated_at"`
	// KillRequested is set by `stoker kill`; the scheduler kills the process
	// and the driver ends KILLED.
	KillRequested bool `json:"kill_requested,omitempty"`
}

func (*Driver) WireType() string { return TypeDriver }

// ExecutorSpec says what each executor of an application runs.
type ExecutorSpec struct {
	Command  []string `json:"command"`
	Env      []string `json:"env,omitempty"`
	Cores    int      `json:"cores"`
	MemoryMB int64    `json:"memory_mb"`
}

// App is the record in stoker-apps, keyed by app id.
type App struct {
	Base
	ID       string       `json:"id"`
	Name     string       `json:"name"`
	DriverID string       `json:"driver_id,omitempty"`
	Executor ExecutorSpec `json:"executor"`
	// MaxCores caps the cores granted over all executors; 0 means no cap.
	MaxCores int `json:"max_cores,omitempty"`
	// RunOnce: each executor runs its command once (`stoker run`). One that
	// exits 0 is done and not replaced; the app FINISHES when executors
	// worth MaxCores have all exited 0. Failed ones are replaced as usual.
	RunOnce bool     `json:"run_once,omitempty"`
	State   AppState `json:"state"`
	// ConsecutiveFailures counts executor failures since the last executor
	// that reached RUNNING; at max-executor-retries with none running the
	// app is FAILED.
	ConsecutiveFailures int `json:"consecutive_failures"`
	// NextExecutorID is the id the scheduler gives the next executor.
	NextExecutorID int       `json:"next_executor_id"`
	SubmittedAt    time.Time `json:"submitted_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	Message        string    `json:"message,omitempty"`
}

func (*App) WireType() string { return TypeApp }

// Executor is the record in stoker-executors, keyed "<appid>.<execid>".
type Executor struct {
	Base
	AppID    string        `json:"app_id"`
	ID       int           `json:"id"`
	WorkerID string        `json:"worker_id"`
	Cores    int           `json:"cores"`
	MemoryMB int64         `json:"memory_mb"`
	State    ExecutorState `json:"state"`
	ExitCode *int          `json:"exit_code,omitempty"`
	PID      int           `json:"pid,omitempty"`
	Epoch    uint64        `json:"epoch,omitempty"`
	Message  string        `json:"message,omitempty"`
	// Error is why the launch failed (the agent could not start the
	// process, or never acknowledged): such an executor has no log.
	Error     string    `json:"error,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (*Executor) WireType() string { return TypeExecutor }

// Key is the executor's key in stoker-executors.
func (e *Executor) Key() string { return ExecutorKey(e.AppID, e.ID) }

// Lease is the value of stoker-leader/<name>. The epoch is the KV revision
// that created the key; renewals carry it forward in Epoch.
type Lease struct {
	Base
	Holder  string    `json:"holder"`
	Epoch   uint64    `json:"epoch,omitempty"`
	Since   time.Time `json:"since"`
	Renewed time.Time `json:"renewed"`
}

func (*Lease) WireType() string { return TypeLease }

// Cluster is the value of stoker-cluster/state: the phase of the current epoch.
type Cluster struct {
	Base
	Epoch  uint64       `json:"epoch"`
	Leader string       `json:"leader"`
	State  ClusterState `json:"state"`
	Since  time.Time    `json:"since"`
	// Recoverer is the recovery instance that claimed the epoch.
	Recoverer string `json:"recoverer,omitempty"`
	// Message says why recovery ended as it did (timeouts, errors).
	Message string `json:"message,omitempty"`
}

func (*Cluster) WireType() string { return TypeCluster }

// LeaseBeat is published by the lease holder on stoker.leader.<name>.beat
// between renewals so standbys notice its death faster than the lease TTL.
type LeaseBeat struct {
	Base
	Holder string `json:"holder"`
	Epoch  uint64 `json:"epoch"`
}

func (*LeaseBeat) WireType() string { return TypeLeaseBeat }

// ---- Commands to agents -----------------------------------------------

// LaunchExecutor is sent on stoker.worker.<wid>.cmd.launch.
type LaunchExecutor struct {
	Base
	Epoch      uint64   `json:"epoch"`
	AppID      string   `json:"app_id"`
	ExecutorID int      `json:"executor_id"`
	Command    []string `json:"command"`
	Env        []string `json:"env,omitempty"`
	Cores      int      `json:"cores"`
	MemoryMB   int64    `json:"memory_mb"`
	// Creds is the app's credential (a .creds file's text, role app, name
	// AppID) the agent gives the executor as STOKER_CREDS. Empty on a bus
	// without authentication.
	Creds string `json:"creds,omitempty"`
}

func (*LaunchExecutor) WireType() string { return TypeLaunchExecutor }

// LaunchDriver is sent on stoker.worker.<wid>.cmd.launch-driver.
type LaunchDriver struct {
	Base
	Epoch     uint64   `json:"epoch"`
	DriverID  string   `json:"driver_id"`
	Command   []string `json:"command"`
	Env       []string `json:"env,omitempty"`
	Cores     int      `json:"cores"`
	MemoryMB  int64    `json:"memory_mb"`
	Supervise bool     `json:"supervise"`
	Attempt   int      `json:"attempt"`
	// AppID is the app id reserved for this driver run, and Creds its app
	// credential: the driver registers that id (STOKER_APP_ID) on
	// stoker.app.<AppID>.register. Both empty on a bus without
	// authentication (the driver registers through stoker.api.apps.register).
	AppID string `json:"app_id,omitempty"`
	Creds string `json:"creds,omitempty"`
}

func (*LaunchDriver) WireType() string { return TypeLaunchDriver }

// Kill is sent on stoker.worker.<wid>.cmd.kill. Exactly one of DriverID or
// AppID (with ExecutorID) names the target.
type Kill struct {
	Base
	Epoch      uint64 `json:"epoch"`
	DriverID   string `json:"driver_id,omitempty"`
	AppID      string `json:"app_id,omitempty"`
	ExecutorID int    `json:"executor_id,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

func (*Kill) WireType() string { return TypeKill }

// MasterChanged is sent on stoker.worker.<wid>.cmd.master and
// stoker.app.<appid>.master at the start of each epoch's recovery.
type MasterChanged struct {
	Base
	Epoch  uint64 `json:"epoch"`
	Leader string `json:"leader"`
}

func (*MasterChanged) WireType() string { return TypeMasterChanged }

// WorkerReport answers MasterChanged: what the agent runs now.
type WorkerReport struct {
	Base
	WorkerID  string            `json:"worker_id"`
	Instance  string            `json:"instance"`
	Epoch     uint64            `json:"epoch"`
	Executors []RunningExecutor `json:"executors,omitempty"`
	Drivers   []RunningDriver   `json:"drivers,omitempty"`
}

func (*WorkerReport) WireType() string { return TypeWorkerReport }

// StateChange is sent by an agent on stoker.worker.<wid>.state for every
// executor or driver state change; it is retried until acknowledged.
type StateChange struct {
	Base
	WorkerID   string `json:"worker_id"`
	Instance   string `json:"instance,omitempty"`
	AppID      string `json:"app_id,omitempty"`
	ExecutorID int    `json:"executor_id,omitempty"`
	DriverID   string `json:"driver_id,omitempty"`
	// State is an ExecutorState for executors, a DriverState for drivers.
	State    string `json:"state"`
	ExitCode *int   `json:"exit_code,omitempty"`
	PID      int    `json:"pid,omitempty"`
	Attempt  int    `json:"attempt,omitempty"`
	Message  string `json:"message,omitempty"`
	// Error is why the process could not be started (it has no pid and no
	// log); an executor record keeps it in its own Error.
	Error string    `json:"error,omitempty"`
	At    time.Time `json:"at"`
}

func (*StateChange) WireType() string { return TypeStateChange }

// StateAck answers StateChange. Kill asks the agent to kill the process: the
// cluster already replaced it or ended its app.
type StateAck struct {
	Base
	Kill   bool   `json:"kill,omitempty"`
	Reason string `json:"reason,omitempty"`
}

func (*StateAck) WireType() string { return TypeStateAck }

// LogsRequest is sent on stoker.worker.<wid>.logs.
type LogsRequest struct {
	Base
	// ID is a driver id or "<appid>.<execid>".
	ID     string `json:"id"`
	Stderr bool   `json:"stderr,omitempty"`
	// MaxBytes bounds the tail returned; 0 means the default (1 MiB).
	MaxBytes int `json:"max_bytes,omitempty"`
}

func (*LogsRequest) WireType() string { return TypeLogsRequest }

// LogsReply carries the tail of a log file.
type LogsReply struct {
	Base
	ID        string `json:"id"`
	Data      []byte `json:"data"`
	Truncated bool   `json:"truncated,omitempty"`
}

func (*LogsReply) WireType() string { return TypeLogsReply }

// ---- Client API ---------------------------------------------------------

// SubmitDriver is sent on stoker.api.drivers.submit.
type SubmitDriver struct {
	Base
	Name      string   `json:"name,omitempty"`
	Command   []string `json:"command"`
	Env       []string `json:"env,omitempty"`
	Cores     int      `json:"cores"`
	MemoryMB  int64    `json:"memory_mb"`
	Supervise bool     `json:"supervise,omitempty"`
}

func (*SubmitDriver) WireType() string { return TypeSubmitDriver }

// SubmitDriverReply answers SubmitDriver.
type SubmitDriverReply struct {
	Base
	DriverID string `json:"driver_id"`
	// Warning is set when no registered worker can hold the driver today;
	// it is accepted and waits, as Spark's are.
	Warning string `json:"warning,omitempty"`
}

func (*SubmitDriverReply) WireType() string { return TypeSubmitDriverReply }

// RegisterApp is sent on stoker.api.apps.register by a driver (or `stoker run`).
type RegisterApp struct {
	Base
	Name     string       `json:"name"`
	DriverID string       `json:"driver_id,omitempty"`
	Executor ExecutorSpec `json:"executor"`
	MaxCores int          `json:"max_cores,omitempty"`
	// RunOnce, as App.RunOnce; it needs MaxCores.
	RunOnce bool `json:"run_once,omitempty"`
	// AppID is set only on stoker.app.<appid>.register: the id reserved
	// for a driver at launch, equal to the subject's token.
	AppID string `json:"app_id,omitempty"`
}

func (*RegisterApp) WireType() string { return TypeRegisterApp }

// AppRegistered answers RegisterApp.
type AppRegistered struct {
	Base
	AppID               string `json:"app_id"`
	HeartbeatIntervalMS int64  `json:"heartbeat_interval_ms"`
	Warning             string `json:"warning,omitempty"`
}

func (*AppRegistered) WireType() string { return TypeAppRegistered }

// UnregisterApp is sent on stoker.api.apps.unregister when a driver ends its app.
type UnregisterApp struct {
	Base
	AppID string `json:"app_id"`
	// State is the final state: FINISHED (default) or FAILED.
	State   AppState `json:"state,omitempty"`
	Message string   `json:"message,omitempty"`
}

func (*UnregisterApp) WireType() string { return TypeUnregisterApp }

// KillRequest is sent on stoker.api.drivers.kill or stoker.api.apps.kill.
type KillRequest struct {
	Base
	ID string `json:"id"`
}

func (*KillRequest) WireType() string { return TypeKillRequest }

// AppHeartbeat is published by a driver on stoker.app.<appid>.heartbeat.
type AppHeartbeat struct {
	Base
	AppID string `json:"app_id"`
}

func (*AppHeartbeat) WireType() string { return TypeAppHeartbeat }

// ListRequest is sent on the stoker.api.*.list endpoints ({} lists all).
type ListRequest struct {
	Base
	// IDs restricts the answer to these ids when not empty.
	IDs []string `json:"ids,omitempty"`
}

func (*ListRequest) WireType() string { return TypeListRequest }

// WorkerView is a worker as clients see it: the record plus derived usage.
type WorkerView struct {
	ID           string      `json:"id"`
	Host         string      `json:"host"`
	State        WorkerState `json:"state"`
	Cores        int         `json:"cores"`
	MemoryMB     int64       `json:"memory_mb"`
	CoresUsed    int         `json:"cores_used"`
	MemoryUsedMB int64       `json:"memory_used_mb"`
	Executors    int         `json:"executors"`
	Drivers      int         `json:"drivers"`
	RegisteredAt time.Time   `json:"registered_at"`
	UpdatedAt    time.Time   `json:"updated_at"`
	// PID and Since are the registered agent instance's process id and
	// start time (see RegisterWorker); WorkDir its work dir, where the logs
	// of what it ran stay.
	PID     int       `json:"pid,omitempty"`
	Since   time.Time `json:"since"`
	WorkDir string    `json:"work_dir,omitempty"`
	Epoch   uint64    `json:"epoch,omitempty"`
}

// WorkerList answers stoker.api.workers.list.
type WorkerList struct {
	Base
	Workers []WorkerView `json:"workers"`
}

func (*WorkerList) WireType() string { return TypeWorkerList }

// DriverList answers stoker.api.drivers.list.
type DriverList struct {
	Base
	Drivers []Driver `json:"drivers"`
}

func (*DriverList) WireType() string { return TypeDriverList }

// ExecutorView is one executor inside an AppView.
type ExecutorView struct {
	ID       int           `json:"id"`
	WorkerID string        `json:"worker_id"`
	Cores    int           `json:"cores"`
	MemoryMB int64         `json:"memory_mb"`
	State    ExecutorState `json:"state"`
	ExitCode *int          `json:"exit_code,omitempty"`
	PID      int           `json:"pid,omitempty"`
	Message  string        `json:"message,omitempty"`
	// Error is why the executor could not be launched (it has no log).
	Error     string    `json:"error,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// AppView is an application as clients see it.
type AppView struct {
	ID                  string         `json:"id"`
	Name                string         `json:"name"`
	DriverID            string         `json:"driver_id,omitempty"`
	State               AppState       `json:"state"`
	CoresGranted        int            `json:"cores_granted"`
	MaxCores            int            `json:"max_cores,omitempty"`
	ExecutorCores       int            `json:"executor_cores"`
	ExecutorMemoryMB    int64          `json:"executor_memory_mb"`
	ConsecutiveFailures int            `json:"consecutive_failures"`
	SubmittedAt         time.Time      `json:"submitted_at"`
	Message             string         `json:"message,omitempty"`
	Executors           []ExecutorView `json:"executors"`
}

// AppList answers stoker.api.apps.list.
type AppList struct {
	Base
	Apps []AppView `json:"apps"`
}

func (*AppList) WireType() string { return TypeAppList }

// LeaderView names the current scheduler leader.
type LeaderView struct {
	ID    string    `json:"id"`
	Epoch uint64    `json:"epoch"`
	Since time.Time `json:"since"`
}

// Status answers stoker.api.status.
type Status struct {
	Base
	Leader  *LeaderView    `json:"leader"`
	State   ClusterState   `json:"state"`
	Workers map[string]int `json:"workers"`
	Apps    map[string]int `json:"apps"`
	Drivers map[string]int `json:"drivers"`
	// CoresTotal and CoresUsed are over ALIVE workers.
	CoresTotal    int   `json:"cores_total"`
	CoresUsed     int   `json:"cores_used"`
	MemoryTotalMB int64 `json:"memory_total_mb"`
	MemoryUsedMB  int64 `json:"memory_used_mb"`
	// Poisoned counts, by bucket, the stored records every reader skips
	// (undecodable, or breaking an invariant: schemas.Checker), and
	// PoisonedKeys names them; `stoker kv get` shows why, `stoker kv rm`
	// deletes one.
	Poisoned     map[string]int      `json:"poisoned,omitempty"`
	PoisonedKeys map[string][]string `json:"poisoned_keys,omitempty"`
}

func (*Status) WireType() string { return TypeStatus }

// Event is published on stoker.events.<kind>.<id> for every state change and
// kept in the stoker-events stream.
type Event struct {
	Base
	Kind    string    `json:"kind"` // worker, driver, app, executor, leader, cluster
	ID      string    `json:"id"`
	State   string    `json:"state"`
	Message string    `json:"message,omitempty"`
	At      time.Time `json:"at"`
}

func (*Event) WireType() string { return TypeEvent }
