package schemas

// Wire types of the application SDK (package sdk): the private traffic
// between one driver and its executors on stoker.app.<appid>.>. No service
// reads them; they live here because every wire type does.
const (
	TypeExecutorHello      = "io.stoker.v1.sdk.executor_hello"
	TypeExecutorRegistered = "io.stoker.v1.sdk.executor_registered"
	TypeExecutorBye        = "io.stoker.v1.sdk.executor_bye"
	TypeTask               = "io.stoker.v1.sdk.task"
	TypeTaskResult         = "io.stoker.v1.sdk.task_result"
	TypeAppStop            = "io.stoker.v1.sdk.app_stop"
)

// ExecutorHello is sent by an executor to its driver once it is ready to
// take tasks (request on stoker.app.<appid>.executors.register).
type ExecutorHello struct {
	Base
	AppID      string `json:"app_id"`
	ExecutorID int    `json:"executor_id"`
	WorkerID   string `json:"worker_id,omitempty"`
	Host       string `json:"host,omitempty"`
	Cores      int    `json:"cores,omitempty"`
	MemoryMB   int64  `json:"memory_mb,omitempty"`
}

func (*ExecutorHello) WireType() string { return TypeExecutorHello }

// Validate checks an executor's hello.
func (m *ExecutorHello) Validate() error {
	if err := ValidAppID(m.AppID); err != nil {
		return err
	}
	if m.ExecutorID < 0 {
		return invalid("executor id must be >= 0")
	}
	return nil
}

// ExecutorRegistered answers ExecutorHello. Stop tells the executor that
// the application is ending and it should exit.
type ExecutorRegistered struct {
	Base
	Stop bool `json:"stop,omitempty"`
}

func (*ExecutorRegistered) WireType() string { return TypeExecutorRegistered }

// ExecutorBye is published by an executor that stops serving
// (stoker.app.<appid>.executors.leave), so the driver stops sending it tasks.
type ExecutorBye struct {
	Base
	AppID      string `json:"app_id"`
	ExecutorID int    `json:"executor_id"`
	Reason     string `json:"reason,omitempty"`
}

func (*ExecutorBye) WireType() string { return TypeExecutorBye }

// Task is a unit of work a driver sends to one executor
// (request on stoker.app.<appid>.executor.<execid>.task). Data is opaque to
// Stoker.
type Task struct {
	Base
	TaskID uint64 `json:"task_id"`
	Data   []byte `json:"data,omitempty"`
}

func (*Task) WireType() string { return TypeTask }

// TaskResult answers Task. Error is the handler's error text; a transport
// failure is a NATS error instead.
type TaskResult struct {
	Base
	TaskID uint64 `json:"task_id"`
	Data   []byte `json:"data,omitempty"`
	Error  string `json:"error,omitempty"`
}

func (*TaskResult) WireType() string { return TypeTaskResult }

// AppStop is published by a driver closing its application
// (stoker.app.<appid>.executors.stop): every executor stops serving.
type AppStop struct {
	Base
	AppID  string   `json:"app_id"`
	State  AppState `json:"state,omitempty"`
	Reason string   `json:"reason,omitempty"`
}

func (*AppStop) WireType() string { return TypeAppStop }
