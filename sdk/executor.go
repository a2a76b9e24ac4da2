package sdk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// TaskHandler runs one task on an executor and returns its result.
type TaskHandler func(ctx context.Context, task []byte) ([]byte, error)

// ExecutorEnv is what an agent tells an executor process about itself.
type ExecutorEnv struct {
	AppID      string
	ExecutorID int
	WorkerID   string
	Cores      int
	MemoryMB   int64
}

// ExecutorEnvFromOS reads STOKER_APP_ID, STOKER_EXECUTOR_ID and friends.
// It returns ErrNotExecutor when the process was not started as an executor.
func ExecutorEnvFromOS() (ExecutorEnv, error) {
	e := ExecutorEnv{AppID: os.Getenv(EnvAppID), WorkerID: os.Getenv(EnvWorkerID)}
	idS := os.Getenv(EnvExecutorID)
	if e.AppID == "" || idS == "" {
		return e, ErrNotExecutor
	}
	if err := schemas.ValidAppID(e.AppID); err != nil {
		return e, fmt.Errorf("%s: %w", EnvAppID, err)
	}
	id, err := strconv.Atoi(idS)
	if err != nil || id < 0 {
		return e, fmt.Errorf("%s=%q is not a non-negative number", EnvExecutorID, idS)
	}
	e.ExecutorID = id
	e.Cores, _ = strconv.Atoi(os.Getenv(EnvCores))
	e.MemoryMB, _ = strconv.ParseInt(os.Getenv(EnvMemoryMB), 10, 64)
	return e, nil
}

// IsExecutor reports whether this process was started as an executor.
func IsExecutor() bool { return os.Getenv(EnvExecutorID) != "" && os.Getenv(EnvAppID) != "" }

// RegisterTimeout bounds how long an executor keeps trying to register
// with a driver that does not answer; the driver may simply not have
// subscribed yet, so it retries with backoff until then.
var RegisterTimeout = 2 * time.Minute

// ServeExecutor runs an executor: it reads STOKER_APP_ID and
// STOKER_EXECUTOR_ID, registers back with the driver, and runs tasks with
// handler, one at a time, until ctx is done or the driver stops the app.
// It returns nil on a normal stop.
func ServeExecutor(ctx context.Context, nc *nats.Conn, handler TaskHandler) error {
	env, err := ExecutorEnvFromOS()
	if err != nil {
		return err
	}
	return ServeExecutorEnv(ctx, nc, env, handler)
}

// ServeExecutorEnv is ServeExecutor with the executor's identity given.
func ServeExecutorEnv(ctx context.Context, nc *nats.Conn, env ExecutorEnv, handler TaskHandler) error {
	if handler == nil {
		return errors.New("sdk: nil task handler")
	}
	tasks := make(chan *nats.Msg, 64)
	taskSub, err := nc.ChanSubscribe(bus.AppExecutorTaskSubject(env.AppID, env.ExecutorID), tasks)
	if err != nil {
		return err
	}
	defer func() { _ = taskSub.Unsubscribe() }()
	stops := make(chan *nats.Msg, 1)
	stopSub, err := nc.ChanSubscribe(bus.AppExecutorsStopSubject(env.AppID), stops)
	if err != nil {
		return err
	}
	defer func() { _ = stopSub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		return err
	}

	host, _ := os.Hostname()
	hello := &schemas.ExecutorHello{AppID: env.AppID, ExecutorID: env.ExecutorID, WorkerID: env.WorkerID,
		Host: host, Cores: env.Cores, MemoryMB: env.MemoryMB}
	stop, err := register(ctx, nc, hello)
	if err != nil || stop {
		return err
	}

	bye := func(reason string) {
		_ = bus.Publish(nc, bus.AppExecutorsLeaveSubject(env.AppID),
			&schemas.ExecutorBye{AppID: env.AppID, ExecutorID: env.ExecutorID, Reason: reason})
		_ = nc.Flush()
	}
	for {
		select {
		case <-ctx.Done():
			bye("executor stopping")
			return nil
		case <-stops:
			return nil
		case m := <-tasks:
			runTask(ctx, m, handler)
		}
	}
}

// register sends the hello until the driver answers, with backoff.
func register(ctx context.Context, nc *nats.Conn, hello *schemas.ExecutorHello) (stop bool, err error) {
	deadline := time.Now().Add(RegisterTimeout)
	for n := 0; ; n++ {
		var reply schemas.ExecutorRegistered
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = bus.Call(cctx, nc, bus.AppExecutorsRegisterSubject(hello.AppID), hello, &reply)
		cancel()
		if err == nil {
			return reply.Stop, nil
		}
		var be *bus.Error
		if errors.As(err, &be) && be.Code < 500 {
			return false, fmt.Errorf("sdk: driver refused executor: %w", err)
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("sdk: driver of %s did not answer for %s: %w", hello.AppID, RegisterTimeout, err)
		}
		select {
		case <-ctx.Done():
			return false, nil
		case <-time.After(svc.Backoff(n, 50*time.Millisecond, 2*time.Second, nil)):
		}
	}
}

func runTask(ctx context.Context, m *nats.Msg, handler TaskHandler) {
	in := bus.FromMsg(m)
	var t schemas.Task
	if err := bus.Decode(m.Data, bus.FormatOf(m.Header), &t); err != nil {
		_ = bus.ReplyError(in, err)
		return
	}
	out, err := safeHandle(ctx, handler, t.Data)
	res := &schemas.TaskResult{TaskID: t.TaskID, Data: out}
	if err != nil {
		res.Data, res.Error = nil, err.Error()
	}
	_ = bus.Reply(in, res)
}

func safeHandle(ctx context.Context, h TaskHandler, task []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("task handler panicked: %v", r)
		}
	}()
	return h(ctx, task)
}
