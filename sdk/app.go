package sdk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// Environment variables an agent sets for the processes it starts (the
// contract's names, from schemas).
const (
	EnvNATSURL    = schemas.EnvNATSURL
	EnvAppID      = schemas.EnvAppID
	EnvExecutorID = schemas.EnvExecutorID
	EnvWorkerID   = schemas.EnvWorkerID
	EnvDriverID   = schemas.EnvDriverID
	EnvCores      = schemas.EnvCores
	EnvMemoryMB   = schemas.EnvMemoryMB
	EnvCreds      = schemas.EnvCreds
	EnvTLSCA      = schemas.EnvTLSCA
)

// Defaults.
const (
	// DefaultHeartbeatInterval is used when the cluster does not say.
	DefaultHeartbeatInterval = time.Second
	// DefaultTaskTimeout bounds one task when the caller's context has no deadline.
	DefaultTaskTimeout = 10 * time.Minute
)

// Errors.
var (
	// ErrClosed is returned by Run after Close.
	ErrClosed = errors.New("sdk: application closed")
	// ErrTask wraps an error returned by the executor's task handler.
	ErrTask = errors.New("sdk: task failed on executor")
	// ErrNotExecutor is returned by ServeExecutor outside an executor process.
	ErrNotExecutor = errors.New("sdk: not an executor (STOKER_APP_ID / STOKER_EXECUTOR_ID unset)")
)

// Connect dials the cluster named by STOKER_NATS_URL (bus.DefaultURL when
// unset) with the credential in STOKER_CREDS (and the CA in
// STOKER_TLS_CA), reconnecting forever once connected.
func Connect() (*nats.Conn, error) {
	return bus.Connect(os.Getenv(EnvNATSURL), bus.ConnectOptions{Name: "stoker-sdk",
		Creds: os.Getenv(EnvCreds), CA: os.Getenv(EnvTLSCA)})
}

// Executor is an executor that registered back with its driver.
type Executor struct {
	ID       int
	WorkerID string
	Host     string
	Cores    int
	MemoryMB int64
}

type execState struct {
	Executor
	busy bool
	// idleSince is when it last finished a task (or registered).
	idleSince time.Time
}

// App is a registered application, seen from its driver. Its methods are
// safe for concurrent use.
type App struct {
	// ID is the application id given by the cluster (app-...).
	ID string
	// Warning is the cluster's warning at registration (e.g. no worker can
	// hold one executor today), or "".
	Warning string
	// TaskTimeout bounds a task whose context has no deadline.
	TaskTimeout time.Duration

	nc       *nats.Conn
	log      zerolog.Logger
	interval time.Duration
	group    *svc.Group
	subs     []*nats.Subscription
	events   chan Executor
	nextTask atomic.Uint64

	mu      sync.Mutex
	execs   map[int]*execState
	order   []int // registration order, for round robin
	rr      int
	changed chan struct{} // closed and replaced on every change to execs
	closed  bool
	dropped int
	// requested is the last total asked with RequestTotalExecutors.
	requested *int
	idleStop  context.CancelFunc
}

// Option tunes RegisterApp.
type Option func(*App)

// WithLogger logs the App's background work (default: nothing).
func WithLogger(l zerolog.Logger) Option { return func(a *App) { a.log = l } }

// inheritArtifacts hands a driver's artifacts (env, STOKER_ARTIFACTS: a
// driver submitted with --file) on to its executors when the spec names
// none, and turns a command that starts with one of them by its path in the
// driver's directory (os.Executable) back into its name, which each
// executor's agent resolves to its own copy.
func inheritArtifacts(spec *schemas.ExecutorSpec, env string) {
	if len(spec.Artifacts) > 0 || env == "" {
		return
	}
	arts, err := schemas.DecodeArtifacts(env)
	if err != nil || len(arts) == 0 {
		return
	}
	spec.Artifacts = arts
	if len(spec.Command) == 0 {
		return
	}
	for _, a := range arts {
		if !a.Archive && filepath.IsAbs(spec.Command[0]) && filepath.Base(spec.Command[0]) == a.Name {
			spec.Command = append([]string{a.Name}, spec.Command[1:]...)
			return
		}
	}
}

// RegisterApp registers an application with the cluster (stoker.api.apps.register)
// and starts its heartbeat, its master-changed answer and its executor
// registration endpoint. When req.DriverID is empty and STOKER_DRIVER_ID is
// set (the process runs as a submitted driver), that driver id is used.
func RegisterApp(ctx context.Context, nc *nats.Conn, req schemas.RegisterApp, opts ...Option) (*App, error) {
	if req.DriverID == "" {
		if d := os.Getenv(EnvDriverID); d != "" && schemas.ValidDriverID(d) == nil {
			req.DriverID = d
		}
	}
	if err := executorDefaults(&req); err != nil {
		return nil, err
	}
	subject := bus.APIAppsRegister
	if id := os.Getenv(EnvAppID); req.AppID == "" && id != "" && os.Getenv(EnvExecutorID) == "" {
		// A driver launched by the cluster: its app id is reserved, and its
		// credential may register only that one.
		req.AppID = id
	}
	if req.AppID != "" {
		subject = bus.AppRegisterSubject(req.AppID)
	}
	inheritArtifacts(&req.Executor, os.Getenv(schemas.EnvArtifacts))
	if err := req.Validate(); err != nil {
		return nil, err
	}
	var reply schemas.AppRegistered
	if err := bus.Call(ctx, nc, subject, &req, &reply); err != nil {
		return nil, fmt.Errorf("register app: %w", err)
	}
	a := &App{
		ID:          reply.AppID,
		Warning:     reply.Warning,
		TaskTimeout: DefaultTaskTimeout,
		nc:          nc,
		log:         zerolog.Nop(),
		interval:    time.Duration(reply.HeartbeatIntervalMS) * time.Millisecond,
		group:       svc.NewGroup(context.Background()),
		events:      make(chan Executor, 1024),
		execs:       map[int]*execState{},
		changed:     make(chan struct{}),
	}
	if n := req.InitialExecutors; n > 0 {
		a.requested = &n // registered elastic: that is the total asked so far
	}
	for _, o := range opts {
		o(a)
	}
	a.log = a.log.With().Str("app_id", a.ID).Logger()
	if a.interval <= 0 {
		a.interval = DefaultHeartbeatInterval
	}
	if err := a.start(); err != nil {
		a.stopLocal()
		// Do not leave a registered app behind that nobody heartbeats.
		if _, uerr := bus.CallAck(ctx, nc, bus.AppUnregisterSubject(a.ID), &schemas.UnregisterApp{AppID: a.ID, State: schemas.AppFailed, Message: err.Error()}); uerr != nil {
			a.log.Warn().Err(uerr).Msg("cannot unregister the app after a failed start; the heartbeat service ends it")
		}
		return nil, err
	}
	return a, nil
}

func (a *App) start() error {
	ctx := a.group.Context()
	sub, err := a.nc.Subscribe(bus.AppMasterSubject(a.ID), bus.MsgHandler(ctx, &a.log, nil,
		func(_ context.Context, _ bus.Inbound, m *schemas.MasterChanged) (any, error) {
			a.log.Info().Uint64("epoch", m.Epoch).Str("leader", m.Leader).Msg("scheduler changed")
			a.heartbeat() // tell the heartbeat service at once that we live
			return &schemas.Ack{OK: true}, nil
		}))
	if err != nil {
		return err
	}
	a.subs = append(a.subs, sub)
	sub, err = a.nc.Subscribe(bus.AppExecutorsRegisterSubject(a.ID), bus.MsgHandler(ctx, &a.log, nil, a.onHello))
	if err != nil {
		return err
	}
	a.subs = append(a.subs, sub)
	sub, err = a.nc.Subscribe(bus.AppExecutorsLeaveSubject(a.ID), func(m *nats.Msg) {
		var bye schemas.ExecutorBye
		if bus.DecodeMsg(m, &bye) == nil {
			a.forget(bye.ExecutorID, "executor left: "+bye.Reason)
		}
	})
	if err != nil {
		return err
	}
	a.subs = append(a.subs, sub)
	if err := a.nc.Flush(); err != nil {
		return err
	}
	a.heartbeat()
	a.group.Go(func(ctx context.Context) {
		t := time.NewTicker(a.interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				a.heartbeat()
			}
		}
	})
	return nil
}

func (a *App) heartbeat() {
	if err := bus.Publish(a.nc, bus.AppHeartbeatSubject(a.ID), &schemas.AppHeartbeat{AppID: a.ID}); err != nil {
		a.log.Warn().Err(err).Msg("app heartbeat not sent")
	}
}

func (a *App) onHello(_ context.Context, _ bus.Inbound, h *schemas.ExecutorHello) (any, error) {
	if h.AppID != a.ID {
		return nil, bus.Errorf(bus.CodeBadRequest, "executor of app %s registered with app %s", h.AppID, a.ID)
	}
	e := Executor{ID: h.ExecutorID, WorkerID: h.WorkerID, Host: h.Host, Cores: h.Cores, MemoryMB: h.MemoryMB}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return &schemas.ExecutorRegistered{Stop: true}, nil
	}
	_, known := a.execs[e.ID]
	if !known {
		a.order = append(a.order, e.ID)
	}
	a.execs[e.ID] = &execState{Executor: e, idleSince: time.Now()}
	a.notifyLocked()
	if !known {
		select {
		case a.events <- e:
		default:
			a.dropped++
		}
	}
	a.mu.Unlock()
	a.log.Info().Int("executor_id", e.ID).Str("worker_id", e.WorkerID).Msg("executor registered")
	return &schemas.ExecutorRegistered{}, nil
}

// notifyLocked wakes every Run waiting for an idle executor. Needs a.mu.
func (a *App) notifyLocked() {
	close(a.changed)
	a.changed = make(chan struct{})
}

func (a *App) forget(id int, why string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.execs[id]; !ok {
		return
	}
	delete(a.execs, id)
	for i, x := range a.order {
		if x == id {
			a.order = append(a.order[:i], a.order[i+1:]...)
			break
		}
	}
	a.notifyLocked()
	a.log.Info().Int("executor_id", id).Str("reason", why).Msg("executor forgotten")
}

// Executors delivers each executor once, as it registers back. The channel
// is buffered (1024); executors beyond an unread buffer are still used by
// Run but not delivered. It is never closed.
func (a *App) Executors() <-chan Executor { return a.events }

// Registered returns the executors currently registered, in registration order.
func (a *App) Registered() []Executor {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Executor, 0, len(a.order))
	for _, id := range a.order {
		out = append(out, a.execs[id].Executor)
	}
	return out
}

// acquire waits for an idle executor, picking round robin, and marks it busy.
func (a *App) acquire(ctx context.Context) (Executor, error) {
	for {
		a.mu.Lock()
		if a.closed {
			a.mu.Unlock()
			return Executor{}, ErrClosed
		}
		n := len(a.order)
		for i := 0; i < n; i++ {
			id := a.order[(a.rr+i)%n]
			if e := a.execs[id]; !e.busy {
				e.busy = true
				a.rr = (a.rr + i + 1) % n
				a.mu.Unlock()
				return e.Executor, nil
			}
		}
		wait := a.changed
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return Executor{}, fmt.Errorf("sdk: waiting for an idle executor: %w", ctx.Err())
		case <-wait:
		}
	}
}

func (a *App) release(id int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e, ok := a.execs[id]; ok {
		e.busy = false
		e.idleSince = time.Now()
		a.notifyLocked()
	}
}

// Run sends task to the next idle registered executor (round robin),
// waiting for one if all are busy or none registered yet, and returns its
// result. A handler error comes back wrapping ErrTask; an executor that
// cannot be reached is forgotten and the error returned.
func (a *App) Run(ctx context.Context, task []byte) ([]byte, error) {
	e, err := a.acquire(ctx)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok && a.TaskTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.TaskTimeout)
		defer cancel()
	}
	id := a.nextTask.Add(1)
	var res schemas.TaskResult
	err = bus.Call(ctx, a.nc, bus.AppExecutorTaskSubject(a.ID, e.ID), &schemas.Task{TaskID: id, Data: task}, &res)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) {
			a.forget(e.ID, err.Error())
		} else {
			a.release(e.ID)
		}
		return nil, fmt.Errorf("sdk: task %d on executor %d: %w", id, e.ID, err)
	}
	a.release(e.ID)
	if res.Error != "" {
		return nil, fmt.Errorf("%w %d: %s", ErrTask, e.ID, res.Error)
	}
	return res.Data, nil
}

// View asks the cluster for the application's current record.
func (a *App) View(ctx context.Context) (*schemas.AppView, error) {
	return NewClient(a.nc).App(ctx, a.ID)
}

// Close tells the executors to stop, unregisters the application with the
// final state (FINISHED, FAILED or KILLED; "" means FINISHED), which ends it
// and its executors in the cluster, and stops the heartbeat. Local work
// stops whatever the cluster answers; the unregister error is returned.
// Later calls do nothing and return nil.
func (a *App) Close(ctx context.Context, state schemas.AppState) error {
	return a.close(ctx, state, "")
}

// CloseWithMessage is Close with a message recorded on the app.
func (a *App) CloseWithMessage(ctx context.Context, state schemas.AppState, msg string) error {
	return a.close(ctx, state, msg)
}

func (a *App) close(ctx context.Context, state schemas.AppState, msg string) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.notifyLocked()
	a.mu.Unlock()
	if state == "" {
		state = schemas.AppFinished
	}
	_ = bus.Publish(a.nc, bus.AppExecutorsStopSubject(a.ID), &schemas.AppStop{AppID: a.ID, State: state, Reason: msg})
	_, err := bus.CallAck(ctx, a.nc, bus.AppUnregisterSubject(a.ID), &schemas.UnregisterApp{AppID: a.ID, State: state, Message: msg})
	a.stopLocal()
	if err != nil {
		return fmt.Errorf("unregister app %s: %w", a.ID, err)
	}
	return nil
}

// Release stops the App's local work (heartbeat, subscriptions) without
// telling the cluster: for an app the cluster already ended (killed).
func (a *App) Release() {
	a.mu.Lock()
	a.closed = true
	a.notifyLocked()
	a.mu.Unlock()
	a.stopLocal()
}

func (a *App) stopLocal() {
	for _, s := range a.subs {
		_ = s.Unsubscribe()
	}
	a.group.Stop()
}

// executorDefaults fills the app's executor resources and constraints from
// what `stoker submit --executor-resource/--executor-constraint` put in the
// driver's environment, when the request names none.
func executorDefaults(req *schemas.RegisterApp) error {
	if v := os.Getenv(schemas.EnvExecutorResources); v != "" && len(req.Executor.Resources) == 0 {
		req.Executor.Resources = schemas.Amounts{}
		for _, kv := range strings.Split(v, ",") {
			name, n, err := schemas.ParseResourceAmount(kv)
			if err != nil {
				return fmt.Errorf("%s: %w", schemas.EnvExecutorResources, err)
			}
			req.Executor.Resources[name] = n
		}
	}
	if v := os.Getenv(schemas.EnvExecutorConstraints); v != "" && len(req.Constraints) == 0 {
		req.Constraints = strings.Split(v, ",")
	}
	return nil
}

// RequestTotalExecutors asks the cluster for n executors in all (Spark's
// requestTotalExecutors, dynamic allocation): the scheduler places up to n
// within the app's core cap and kills executors beyond n, LAUNCHING ones
// and the newest first. 0 releases every executor.
func (a *App) RequestTotalExecutors(ctx context.Context, n int) error {
	if err := a.executorRequest(ctx, &schemas.ExecutorRequest{AppID: a.ID, Total: &n}); err != nil {
		return err
	}
	a.mu.Lock()
	a.requested = &n
	a.mu.Unlock()
	return nil
}

// RequestedTotal is the executor total the app last asked for (by
// RequestTotalExecutors, or lowered by KillExecutors and the idle
// timeout's releases); ok is false before any request.
func (a *App) RequestedTotal() (n int, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.requested == nil {
		return 0, false
	}
	return *a.requested, true
}

// KillExecutors kills the named executors and lowers the requested total
// by as many, so they are not replaced (Spark's killExecutors with the
// target adjusted). Without an earlier RequestTotalExecutors the total
// becomes the executors registered minus those killed.
func (a *App) KillExecutors(ctx context.Context, ids ...int) error {
	if len(ids) == 0 {
		return nil
	}
	a.mu.Lock()
	total := len(a.order)
	if a.requested != nil {
		total = *a.requested
	}
	total = max(total-len(ids), 0)
	a.mu.Unlock()
	if err := a.executorRequest(ctx, &schemas.ExecutorRequest{AppID: a.ID, Total: &total, Kill: ids}); err != nil {
		return err
	}
	a.mu.Lock()
	a.requested = &total
	a.mu.Unlock()
	for _, id := range ids {
		a.forget(id, "killed by the application")
	}
	return nil
}

func (a *App) executorRequest(ctx context.Context, req *schemas.ExecutorRequest) error {
	if _, err := bus.CallAck(ctx, a.nc, bus.AppExecutorsSubject(a.ID), req); err != nil {
		return fmt.Errorf("sdk: executor request: %w", err)
	}
	return nil
}

// SetIdleTimeout releases executors idle for longer than d (no task since
// it registered or since its last task ended), keeping at least min of
// them, as Spark's spark.dynamicAllocation.executorIdleTimeout and
// minExecutors. d <= 0 stops releasing.
func (a *App) SetIdleTimeout(d time.Duration, min int) {
	a.mu.Lock()
	if a.idleStop != nil {
		a.idleStop()
		a.idleStop = nil
	}
	if d <= 0 || a.closed {
		a.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(a.group.Context())
	a.idleStop = cancel
	a.mu.Unlock()
	a.group.Go(func(context.Context) {
		t := time.NewTicker(max(d/4, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if ids := a.idle(d, min); len(ids) > 0 {
				rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
				if err := a.KillExecutors(rctx, ids...); err != nil {
					a.log.Warn().Err(err).Ints("executors", ids).Msg("cannot release idle executors")
				} else {
					a.log.Info().Ints("executors", ids).Dur("idle_timeout", d).Msg("idle executors released")
				}
				rcancel()
			}
		}
	})
}

// idle lists executors idle longer than d, newest first, leaving min.
func (a *App) idle(d time.Duration, min int) []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []int
	for i := len(a.order) - 1; i >= 0 && len(a.order)-len(ids) > min; i-- {
		e := a.execs[a.order[i]]
		if !e.busy && time.Since(e.idleSince) > d {
			ids = append(ids, e.ID)
		}
	}
	return ids
}
