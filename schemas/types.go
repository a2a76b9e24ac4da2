package schemas

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Versioned type names. A breaking change to a type gets a new version.
const (
	TypeRegisterWorker    = "io.stoker.v1.register_worker"
	TypeWorkerRegistered  = "io.stoker.v1.worker_registered"
	TypeHeartbeat         = "io.stoker.v1.heartbeat"
	TypeReregister        = "io.stoker.v1.reregister"
	TypeHeartbeatAck      = "io.stoker.v1.heartbeat_ack"
	TypeWorkerLeaving     = "io.stoker.v1.worker_leaving"
	TypeAck               = "io.stoker.v1.ack"
	TypeWorker            = "io.stoker.v1.worker"
	TypeDriver            = "io.stoker.v1.driver"
	TypeApp               = "io.stoker.v1.app"
	TypeExecutor          = "io.stoker.v1.executor"
	TypeLease             = "io.stoker.v1.lease"
	TypeCluster           = "io.stoker.v1.cluster"
	TypeLaunchExecutor    = "io.stoker.v1.launch_executor"
	TypeLaunchExecutors   = "io.stoker.v1.launch_executors"
	TypeLaunchAcks        = "io.stoker.v1.launch_acks"
	TypeLaunchDriver      = "io.stoker.v1.launch_driver"
	TypeKill              = "io.stoker.v1.kill"
	TypeMasterChanged     = "io.stoker.v1.master_changed"
	TypeWorkerReport      = "io.stoker.v1.worker_report"
	TypeStateChange       = "io.stoker.v1.state_change"
	TypeStateAck          = "io.stoker.v1.state_ack"
	TypeStateChanges      = "io.stoker.v1.state_changes"
	TypeStateAcks         = "io.stoker.v1.state_acks"
	TypeSubmitDriver      = "io.stoker.v1.submit_driver"
	TypeSubmitDriverReply = "io.stoker.v1.submit_driver_reply"
	TypeRegisterApp       = "io.stoker.v1.register_app"
	TypeAppRegistered     = "io.stoker.v1.app_registered"
	TypeUnregisterApp     = "io.stoker.v1.unregister_app"
	TypeKillRequest       = "io.stoker.v1.kill_request"
	TypeAppHeartbeat      = "io.stoker.v1.app_heartbeat"
	TypeListRequest       = "io.stoker.v1.list_request"
	TypeCordonRequest     = "io.stoker.v1.cordon_request"
	TypeDrainRequest      = "io.stoker.v1.drain_request"
	TypeWorkerList        = "io.stoker.v1.worker_list"
	TypeDriverList        = "io.stoker.v1.driver_list"
	TypeAppList           = "io.stoker.v1.app_list"
	TypeStatus            = "io.stoker.v1.status"
	TypeLogsRequest       = "io.stoker.v1.logs_request"
	TypeLogsReply         = "io.stoker.v1.logs_reply"
	TypeEvent             = "io.stoker.v1.event"
	TypeLeaseBeat         = "io.stoker.v1.lease_beat"
	TypeAgentPresence     = "io.stoker.v1.agent_presence"
	TypeExecutorRequest   = "io.stoker.v1.executor_request"
	TypeSchedulerStatus   = "io.stoker.v1.scheduler_status"
	TypeKillExecutors     = "io.stoker.v1.kill_executors"
	TypeKillAcks          = "io.stoker.v1.kill_acks"
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
	// Resources are the custom resources the worker offers, name →
	// addresses (--resource gpu=0,1,2,3, a discovery script, nvidia-smi);
	// Labels its placement labels (--label zone=a).
	Resources Resources `json:"resources,omitempty"`
	Labels    Labels    `json:"labels,omitempty"`
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
	// Decommissioned is true when the worker was drained (or left) while
	// this same agent instance runs: nothing was written, and the worker
	// stays DECOMMISSIONED until the agent restarts. Duplicate is true too.
	Decommissioned bool `json:"decommissioned,omitempty"`
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
	// Epoch is the highest scheduler epoch the agent has seen (0: none, or
	// an agent from before the field). An agent behind the epoch the
	// cluster recovered is asked to register again, which tells it.
	Epoch uint64 `json:"epoch,omitempty"`
}

func (*Heartbeat) WireType() string { return TypeHeartbeat }

// Reregister tells an agent that the cluster does not know it as ALIVE.
type Reregister struct {
	Base
	WorkerID string `json:"worker_id"`
	Reason   string `json:"reason"`
}

func (*Reregister) WireType() string { return TypeReregister }

// HeartbeatAck answers a heartbeat the heartbeat service accepted while it
// hears a quorum of the bus: the agent's proof that it is in contact with
// the cluster, not only with its NATS server (which may be cut off with a
// minority). An agent with --stop-after-disconnect counts from the last one.
type HeartbeatAck struct {
	Base
	WorkerID string `json:"worker_id"`
	Epoch    uint64 `json:"epoch,omitempty"` // the cluster's epoch as the service knows it
}

func (*HeartbeatAck) WireType() string { return TypeHeartbeatAck }

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
	// Code, in a batch's Ack refused, is the wire code the same command
	// alone would have been answered with as an error (409: a fence, such
	// as a stale command or an older epoch; 503: unknown epoch, stopping);
	// 0 for a refusal the command alone also answers with ok false (a
	// process that could not start).
	Code int `json:"code,omitempty"`
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
	// Resources and Labels as registered (RegisterWorker). Which addresses
	// are free is derived from the executors and drivers holding them.
	Resources Resources `json:"resources,omitempty"`
	Labels    Labels    `json:"labels,omitempty"`
	// Cordoned stops new placements on the worker (`stoker cordon`) while
	// what runs there keeps running. It is the operator's, not the agent's:
	// registration keeps it when the agent registers again, and recovery
	// never touches it; only `stoker uncordon` clears it.
	Cordoned bool `json:"cordoned,omitempty"`
	// Drain, when set, decommissions the worker (`stoker drain`, or the
	// agent on SIGTERM/SIGPWR with --drain-grace): nothing new is placed
	// there, the scheduler replaces each executor elsewhere before killing
	// it here, relaunches supervised drivers elsewhere, kills what is left
	// at Drain.Deadline, and writes the worker DECOMMISSIONED once nothing
	// holds resources on it. The state stays ALIVE meanwhile (the worker
	// beats, reports and answers recovery as any live worker); clients show
	// it as DECOMMISSIONING (Phase). Registration keeps it when the agent
	// registers again (unless the record was DECOMMISSIONED: a restarted
	// agent is a fresh worker), and recovery copies it with the record.
	Drain *Drain `json:"drain,omitempty"`
}

func (*Worker) WireType() string { return TypeWorker }

// Drain is a worker's decommissioning: since when, until when its work may
// stay (then it is killed), and who asked.
type Drain struct {
	Since    time.Time `json:"since"`
	Deadline time.Time `json:"deadline"`
	// By is "request" (stoker drain) or "agent" (the agent's own signal).
	By string `json:"by,omitempty"`
}

// PhaseDecommissioning is how clients show an ALIVE worker being drained.
// It is not a stored state: the record stays ALIVE with Drain set.
const PhaseDecommissioning = "DECOMMISSIONING"

// Placeable reports whether the scheduler may place new work on w: its
// state is usable, nobody cordoned it and it is not being drained.
func (w *Worker) Placeable() bool { return w.State.Usable() && !w.Cordoned && w.Drain == nil }

// Draining reports whether w is live and being drained.
func (w *Worker) Draining() bool { return w.State == WorkerAlive && w.Drain != nil }

// Phase is the state clients show: DECOMMISSIONING for a draining ALIVE
// worker, else the stored state.
func (w *Worker) Phase() string { return phase(w.State, w.Drain) }

func phase(s WorkerState, d *Drain) string {
	if s == WorkerAlive && d != nil {
		return PhaseDecommissioning
	}
	return string(s)
}

// Driver is the record in stoker-drivers, keyed by driver id.
type Driver struct {
	Base
	ID          string      `json:"id"`
	Name        string      `json:"name,omitempty"`
	Command     []string    `json:"command"`
	Env         []string    `json:"env,omitempty"`
	Artifacts   []Artifact  `json:"artifacts,omitempty"`
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
	// ResourceAmounts is what the driver needs of custom resources
	// (--driver-resource gpu=1); Resources the addresses it was given on
	// WorkerID while it holds them. Constraints are its placement rules
	// ("zone=a", "zone!=a").
	ResourceAmounts Amounts   `json:"resource_amounts,omitempty"`
	Resources       Resources `json:"resources,omitempty"`
	Constraints     []string  `json:"constraints,omitempty"`
}

func (*Driver) WireType() string { return TypeDriver }

// ExecutorSpec says what each executor of an application runs.
type ExecutorSpec struct {
	Command  []string `json:"command"`
	Env      []string `json:"env,omitempty"`
	Cores    int      `json:"cores"`
	MemoryMB int64    `json:"memory_mb"`
	// Resources is what each executor needs of custom resources
	// (--executor-resource gpu=1, Spark's spark.executor.resource.gpu.amount).
	Resources Amounts `json:"resources,omitempty"`
	// Artifacts are fetched from stoker-artifacts into each executor's dir.
	Artifacts []Artifact `json:"artifacts,omitempty"`
}

// App is the record in stoker-apps, keyed by app id.
type App struct {
	Base
	ID       string       `json:"id"`
	Name     string       `json:"name"`
	DriverID string       `json:"driver_id,omitempty"`
	Executor ExecutorSpec `json:"executor"`
	// MaxCores caps the cores granted over all executors (Spark's
	// spark.cores.max); 0 means the scheduler's --default-cores, no cap if 0.
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
	// FailedExecutors are the ids of the executors whose failure is in
	// ConsecutiveFailures, and FailuresFrom one more than the highest
	// executor id seen RUNNING (failures of earlier executors no longer
	// count): a failure is counted once per executor, whoever reports it
	// and however often (CountFailure, CountRunning).
	FailedExecutors []int `json:"failed_executors,omitempty"`
	FailuresFrom    int   `json:"failures_from,omitempty"`
	// NextExecutorID is the id the scheduler gives the next executor.
	NextExecutorID int       `json:"next_executor_id"`
	SubmittedAt    time.Time `json:"submitted_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	Message        string    `json:"message,omitempty"`
	// Constraints are the app's placement rules on worker labels for its
	// executors ("zone=a", "zone!=a").
	Constraints []string `json:"constraints,omitempty"`
	// RequestedExecutors, when set, is the number of executors the driver
	// asked for (the SDK's RequestTotalExecutors, Spark's dynamic
	// allocation): the scheduler places up to it, within MaxCores, and
	// kills executors beyond it. Unset: as many as MaxCores allows.
	RequestedExecutors *int `json:"requested_executors,omitempty"`
	// KillExecutors are executor ids the driver asked to kill (the SDK's
	// KillExecutors); the scheduler kills those still running.
	KillExecutors []int `json:"kill_executors,omitempty"`
}

func (*App) WireType() string { return TypeApp }

// CountFailure counts executor id's failure: once per executor, and only
// if no later executor has reached RUNNING (executor ids grow with each
// placement, so ids order the attempts). It reports whether the count
// changed. With CountRunning it is idempotent and order-free: a report
// retried after its writer died, or two writers counting the same
// failure, count it once.
func (a *App) CountFailure(id int) bool {
	if id < a.FailuresFrom || slices.Contains(a.FailedExecutors, id) {
		return false
	}
	a.FailedExecutors = append(a.FailedExecutors, id)
	// A count from before executor ids were kept is carried on.
	a.ConsecutiveFailures = max(a.ConsecutiveFailures+1, len(a.FailedExecutors))
	return true
}

// CountRunning records that executor id reached RUNNING: failures of
// earlier executors no longer count. It reports whether anything changed.
func (a *App) CountRunning(id int) bool {
	if id < a.FailuresFrom && a.ConsecutiveFailures == len(a.FailedExecutors) {
		return false
	}
	a.FailuresFrom = max(a.FailuresFrom, id+1)
	kept := a.FailedExecutors[:0:0]
	for _, f := range a.FailedExecutors {
		if f >= a.FailuresFrom {
			kept = append(kept, f)
		}
	}
	a.FailedExecutors, a.ConsecutiveFailures = kept, len(kept)
	return true
}

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
	// Resources are the custom resource addresses the executor was given
	// on WorkerID (held while its state Holds; recovery keeps them with
	// the record).
	Resources Resources `json:"resources,omitempty"`
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
	// Server and Client name the holder's NATS connection (the server's id
	// and the client id it gave the connection) when it last wrote the
	// lease: a standby that sees the server report that connection closed
	// takes over at once instead of waiting for missed beats. Empty from an
	// older holder: beats alone then.
	Server string `json:"server,omitempty"`
	Client uint64 `json:"client,omitempty"`
}

func (*Lease) WireType() string { return TypeLease }

// Cluster is the value of stoker-cluster/state: the phase of the current epoch.
type Cluster struct {
	Base
	// Epoch is the lease revision that won (fencing: it only grows, by
	// however many writes the lease bucket saw).
	Epoch uint64 `json:"epoch"`
	// Term counts leaderships for people: the record of each new epoch has
	// the previous record's term plus one (1 for the first). Absent in
	// records written before terms existed (read as 0).
	Term   uint64       `json:"term,omitempty"`
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

// SchedulerStatus answers stoker.leader.scheduler.status: the leading
// scheduler's pace of placement. Window is how many executors it lets be
// in flight at once (starting, and separately being killed): MaxInFlight
// when FlowTargetMS is 0 (a constant window), else the window that follows
// how late the launches and kills are reported (halved when most of a
// round is later than the target). Launching counts the executor records
// LAUNCHING in its view, Killing the kills it sent whose executors have
// not ended.
type SchedulerStatus struct {
	Base
	ID           string `json:"id"`
	Epoch        uint64 `json:"epoch"`
	Window       int    `json:"window"`
	MaxInFlight  int    `json:"max_in_flight"`
	FlowTargetMS int64  `json:"flow_target_ms"`
	Launching    int    `json:"launching"`
	Killing      int    `json:"killing"`
	// WindowRounds: rounds of samples taken; WindowCuts: those that
	// halved the window.
	WindowRounds uint64 `json:"window_rounds"`
	WindowCuts   uint64 `json:"window_cuts"`
	// Passes: scheduling passes run by this leader (Schedule calls).
	Passes uint64 `json:"passes"`
}

func (*SchedulerStatus) WireType() string { return TypeSchedulerStatus }

// ---- Commands to agents -----------------------------------------------

// LaunchExecutor is sent on stoker.worker.<wid>.cmd.launch.
type LaunchExecutor struct {
	Base
	Epoch      uint64   `json:"epoch"`
	AppID      string   `json:"app_id"`
	ExecutorID int      `json:"executor_id"`
	Command    []string `json:"command"`
	Env        []string `json:"env,omitempty"`
	// Artifacts to fetch (by digest) and link into the executor's dir.
	Artifacts []Artifact `json:"artifacts,omitempty"`
	Cores     int        `json:"cores"`
	MemoryMB  int64      `json:"memory_mb"`
	// Creds is the app's credential (a .creds file's text, role app, name
	// AppID) the agent gives the executor as STOKER_CREDS. Empty on a bus
	// without authentication.
	Creds string `json:"creds,omitempty"`
	// ValidUntil is the end of the sender's authority (its wall clock): a
	// scheduler sends a command only before its lease authority ends, and
	// an agent refuses one that arrives later than this plus a clock-skew
	// allowance (a command held in a partitioned link). Zero: no bound
	// (older senders).
	ValidUntil time.Time `json:"valid_until,omitempty"`
	// Resources are the addresses given to the executor, passed in its
	// environment (ResourceVars).
	Resources Resources `json:"resources,omitempty"`
}

func (*LaunchExecutor) WireType() string { return TypeLaunchExecutor }

// MaxLaunchBatch bounds the launches of one LaunchExecutors.
const MaxLaunchBatch = 64

// LaunchExecutors is sent on stoker.worker.<wid>.cmd.launch-executors:
// several executor launches for one agent in one command, each carried
// out exactly as if it had come alone on cmd.launch (its own epoch and
// ValidUntil fences, idempotent by key), in order. The answer is
// LaunchAcks, one Ack per launch in the same order: one refused launch
// does not refuse the others.
type LaunchExecutors struct {
	Base
	Launches []LaunchExecutor `json:"launches"`
}

func (*LaunchExecutors) WireType() string { return TypeLaunchExecutors }

// LaunchAcks answers LaunchExecutors: Acks[i] is launch i's answer (OK, or
// why it was refused, as cmd.launch's error would have said).
type LaunchAcks struct {
	Base
	Acks []Ack `json:"acks"`
}

func (*LaunchAcks) WireType() string { return TypeLaunchAcks }

// LaunchDriver is sent on stoker.worker.<wid>.cmd.launch-driver.
type LaunchDriver struct {
	Base
	Epoch    uint64   `json:"epoch"`
	DriverID string   `json:"driver_id"`
	Command  []string `json:"command"`
	Env      []string `json:"env,omitempty"`
	// Artifacts to fetch (by digest) and link into the driver's dir.
	Artifacts []Artifact `json:"artifacts,omitempty"`
	Cores     int        `json:"cores"`
	MemoryMB  int64      `json:"memory_mb"`
	Supervise bool       `json:"supervise"`
	Attempt   int        `json:"attempt"`
	// AppID is the app id reserved for this driver run, and Creds its app
	// credential: the driver registers that id (STOKER_APP_ID) on
	// stoker.app.<AppID>.register. Both empty on a bus without
	// authentication (the driver registers through stoker.api.apps.register).
	AppID string `json:"app_id,omitempty"`
	Creds string `json:"creds,omitempty"`
	// ValidUntil is the end of the sender's authority (its wall clock): a
	// scheduler sends a command only before its lease authority ends, and
	// an agent refuses one that arrives later than this plus a clock-skew
	// allowance (a command held in a partitioned link). Zero: no bound
	// (older senders).
	ValidUntil time.Time `json:"valid_until,omitempty"`
	// Resources are the addresses given to the driver (ResourceVars).
	Resources Resources `json:"resources,omitempty"`
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
	// ValidUntil is the end of the sender's authority (its wall clock): a
	// scheduler sends a command only before its lease authority ends, and
	// an agent refuses one that arrives later than this plus a clock-skew
	// allowance (a command held in a partitioned link). Zero: no bound
	// (older senders).
	ValidUntil time.Time `json:"valid_until,omitempty"`
}

func (*Kill) WireType() string { return TypeKill }

// MaxKillBatch bounds the kills of one KillExecutors.
const MaxKillBatch = 64

// KillExecutors is sent on stoker.worker.<wid>.cmd.kill-executors: several
// kills (executors or drivers) for one agent in one command, each carried
// out exactly as if it had come alone on cmd.kill (its own epoch and
// ValidUntil fences), in order. The answer is KillAcks, one Ack per kill
// in the same order: one refused kill does not refuse the others.
type KillExecutors struct {
	Base
	Kills []Kill `json:"kills"`
}

func (*KillExecutors) WireType() string { return TypeKillExecutors }

// KillAcks answers KillExecutors: Acks[i] is kill i's answer.
type KillAcks struct {
	Base
	Acks []Ack `json:"acks"`
}

func (*KillAcks) WireType() string { return TypeKillAcks }

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

// MaxStateBatch bounds the reports of one StateChanges.
const MaxStateBatch = 256

// StateChanges is sent on stoker.worker.<wid>.states: the reports an agent
// has queued, in the order they happened, taken as if each came alone on
// .state; reports of one executor or driver are taken in order, reports
// of different ones independently. The answer is StateAcks.
type StateChanges struct {
	Base
	Reports []StateChange `json:"reports"`
}

func (*StateChanges) WireType() string { return TypeStateChanges }

// StateAcks answers StateChanges: Results[i] is report i's outcome.
type StateAcks struct {
	Base
	Results []StateResult `json:"results"`
}

func (*StateAcks) WireType() string { return TypeStateAcks }

// StateResult is one report's outcome in StateAcks: taken (Code 0, with
// the answer .state would have given), or not, with the error code and
// text .state would have answered: a report refused for good (400, 409,
// 410) is dropped, any other is sent again (a report of the same process
// after one not taken is not taken either, to keep their order).
type StateResult struct {
	Kill   bool   `json:"kill,omitempty"`
	Reason string `json:"reason,omitempty"`
	Code   int    `json:"code,omitempty"`
	Error  string `json:"error,omitempty"`
}

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
	// Resources (--driver-resource) and Constraints (--constraint) as
	// Driver.ResourceAmounts and Driver.Constraints.
	Resources   Amounts  `json:"resources,omitempty"`
	Constraints []string `json:"constraints,omitempty"`
	// Artifacts were uploaded to stoker-artifacts by the client.
	Artifacts []Artifact `json:"artifacts,omitempty"`
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
	// Constraints, as App.Constraints. InitialExecutors, when > 0, starts
	// the app elastic with that many requested (App.RequestedExecutors).
	Constraints      []string `json:"constraints,omitempty"`
	InitialExecutors int      `json:"initial_executors,omitempty"`
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

// ExecutorRequest is sent by an app's driver on
// stoker.app.<appid>.executors (Spark's requestTotalExecutors and
// killExecutors, SPARK-4751): Total, when set, becomes the app's
// RequestedExecutors; Kill names executors to kill (added to the app's
// KillExecutors). Answered with an Ack.
type ExecutorRequest struct {
	Base
	AppID string `json:"app_id"`
	Total *int   `json:"total,omitempty"`
	Kill  []int  `json:"kill,omitempty"`
}

func (*ExecutorRequest) WireType() string { return TypeExecutorRequest }

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
	// States restricts the answer to records in one of these states
	// (a worker's, driver's or app's state, as listed).
	States []string `json:"states,omitempty"`
	// Live restricts the answer to work that has not ended: workers ALIVE
	// or UNKNOWN, drivers and apps not in a final state.
	Live bool `json:"live,omitempty"`
}

// Keep reports whether a record with this id and state is asked for.
func (r *ListRequest) Keep(id, state string, ended bool) bool {
	if len(r.IDs) > 0 && !slices.Contains(r.IDs, id) {
		return false
	}
	if len(r.States) > 0 {
		return slices.ContainsFunc(r.States, func(s string) bool { return strings.EqualFold(s, state) })
	}
	return !r.Live || !ended
}

func (*ListRequest) WireType() string { return TypeListRequest }

// CordonRequest is sent on stoker.api.workers.cordon: Cordon true stops
// new placements on WorkerID, false allows them again.
type CordonRequest struct {
	Base
	WorkerID string `json:"worker_id"`
	Cordon   bool   `json:"cordon"`
}

func (*CordonRequest) WireType() string { return TypeCordonRequest }

// DrainRequest is sent on stoker.api.workers.drain (an operator) or
// stoker.worker.<wid>.drain (the agent itself, on SIGTERM/SIGPWR, with its
// Instance): decommission WorkerID, killing what is still there after
// DeadlineMS milliseconds (0: DefaultDrainDeadline).
type DrainRequest struct {
	Base
	WorkerID   string `json:"worker_id"`
	DeadlineMS int64  `json:"deadline_ms,omitempty"`
	Instance   string `json:"instance,omitempty"`
}

func (*DrainRequest) WireType() string { return TypeDrainRequest }

// DefaultDrainDeadline is a drain's deadline when the request sets none
// (Nomad's node drain defaults to 1h; Stoker's executors are short-lived).
const DefaultDrainDeadline = 5 * time.Minute

// MaxDrainDeadline bounds a drain's deadline (a typo guard).
const MaxDrainDeadline = 7 * 24 * time.Hour

// Deadline is the request's deadline as a duration.
func (m *DrainRequest) Deadline() time.Duration {
	if m.DeadlineMS <= 0 {
		return DefaultDrainDeadline
	}
	return time.Duration(m.DeadlineMS) * time.Millisecond
}

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
	// Resources are the custom resources offered (name → addresses),
	// ResourcesUsed the addresses held by executors and drivers; Labels
	// the placement labels.
	Resources     Resources `json:"resources,omitempty"`
	ResourcesUsed Resources `json:"resources_used,omitempty"`
	Labels        Labels    `json:"labels,omitempty"`
	// Cordoned: no new placements (`stoker cordon`).
	Cordoned bool `json:"cordoned,omitempty"`
	// Drain: the worker is being (or was) drained (`stoker drain`).
	Drain *Drain `json:"drain,omitempty"`
}

// Phase is the state clients show (Worker.Phase).
func (v *WorkerView) Phase() string { return phase(v.State, v.Drain) }

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
	// Resources are the custom resource addresses the executor holds.
	Resources Resources `json:"resources,omitempty"`
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
	// Artifacts each executor gets (stoker-artifacts digests).
	Artifacts []Artifact `json:"artifacts,omitempty"`
}

// AppList answers stoker.api.apps.list.
type AppList struct {
	Base
	Apps []AppView `json:"apps"`
}

func (*AppList) WireType() string { return TypeAppList }

// LeaderView names the current scheduler leader.
type LeaderView struct {
	ID string `json:"id"`
	// Term grows by one per new leader (schemas.LeaderTerm); Epoch is the
	// lease revision that fences writes, which jumps with every renewal.
	Term  uint64    `json:"term"`
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
	Kind    string `json:"kind"` // worker, driver, app, executor, leader, cluster
	ID      string `json:"id"`
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
	// At is the publisher's clock when it published; readers of a batch
	// order by it (the stream's order is the order of arrival, and a
	// publisher's buffered events can arrive late after a reconnect).
	At time.Time `json:"at"`
	// Publisher is the publishing connection's name (e.g. the scheduler
	// instance); Epoch the scheduler epoch it acted under, when it had one.
	Publisher string `json:"publisher,omitempty"`
	Epoch     uint64 `json:"epoch,omitempty"`
}

func (*Event) WireType() string { return TypeEvent }
