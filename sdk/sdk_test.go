package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

// fakeCluster answers the app endpoints the SDK uses, over real NATS, and
// records what it saw. It stands in for the registration service so the
// SDK is tested alone.
type fakeCluster struct {
	mu           sync.Mutex
	registered   []schemas.RegisterApp
	unregistered []schemas.UnregisterApp
	heartbeats   int
}

func startFakeCluster(t *testing.T, nc *nats.Conn) *fakeCluster {
	t.Helper()
	f := &fakeCluster{}
	log := zerologNop()
	ctx := context.Background()
	subs := []struct {
		subj string
		h    nats.MsgHandler
	}{
		{bus.APIAppsRegister, bus.MsgHandler(ctx, &log, nil, func(_ context.Context, _ bus.Inbound, r *schemas.RegisterApp) (any, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.registered = append(f.registered, *r)
			return &schemas.AppRegistered{AppID: "app-20260101000000-abcdef", HeartbeatIntervalMS: 50}, nil
		})},
		{bus.AppUnregister, bus.MsgHandler(ctx, &log, nil, func(_ context.Context, _ bus.Inbound, r *schemas.UnregisterApp) (any, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.unregistered = append(f.unregistered, *r)
			return &schemas.Ack{OK: true}, nil
		})},
		{bus.AppHeartbeat, func(*nats.Msg) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.heartbeats++
		}},
	}
	for _, s := range subs {
		sub, err := nc.Subscribe(s.subj, s.h)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeCluster) count(fn func() int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fn()
}

func registerApp(t *testing.T, nc *nats.Conn) *sdk.App {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	app, err := sdk.RegisterApp(ctx, nc, schemas.RegisterApp{
		Name:     "test",
		Executor: schemas.ExecutorSpec{Command: []string{"true"}, Cores: 1, MemoryMB: 64},
	})
	if err != nil {
		t.Fatalf("RegisterApp: %v", err)
	}
	t.Cleanup(func() { _ = app.Close(context.Background(), schemas.AppFinished) })
	return app
}

// startExecutor serves tasks as executor id with its own connection and
// returns a channel with ServeExecutorEnv's result.
func startExecutor(t *testing.T, url, appID string, id int, h sdk.TaskHandler) <-chan error {
	t.Helper()
	nc := bustest.Conn(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		done <- sdk.ServeExecutorEnv(ctx, nc, sdk.ExecutorEnv{AppID: appID, ExecutorID: id, WorkerID: "w1", Cores: 1}, h)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			t.Errorf("executor %d did not stop", id)
		}
	})
	return done
}

func TestApp_Run_RoundRobinOverExecutors(t *testing.T) {
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.URL())
	fc := startFakeCluster(t, nc)
	app := registerApp(t, nc)

	for i := 0; i < 2; i++ {
		id := i
		startExecutor(t, srv.URL(), app.ID, id, func(_ context.Context, task []byte) ([]byte, error) {
			if string(task) == "fail" {
				return nil, errors.New("boom")
			}
			return append([]byte(strconv.Itoa(id)+":"), task...), nil
		})
	}
	seen := map[int]bool{}
	for len(seen) < 2 {
		select {
		case e := <-app.Executors():
			seen[e.ID] = true
			if e.WorkerID != "w1" {
				t.Errorf("executor %d worker = %q, want w1", e.ID, e.WorkerID)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("executors registered: %v, want 2", seen)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	used := map[string]bool{}
	for i := 0; i < 4; i++ {
		out, err := app.Run(ctx, []byte("x"))
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		used[string(out)] = true
	}
	if !used["0:x"] || !used["1:x"] {
		t.Errorf("results %v, want both executors used", used)
	}
	if _, err := app.Run(ctx, []byte("fail")); !errors.Is(err, sdk.ErrTask) {
		t.Errorf("Run(fail) error = %v, want ErrTask", err)
	}
	bustest.Eventually(t, 5*time.Second, "app heartbeats", func() bool {
		return fc.count(func() int { return fc.heartbeats }) >= 2
	})
}

func TestApp_Run_ConcurrentTasksAllAnswered(t *testing.T) {
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.URL())
	startFakeCluster(t, nc)
	app := registerApp(t, nc)
	for i := 0; i < 3; i++ {
		startExecutor(t, srv.URL(), app.ID, i, func(_ context.Context, task []byte) ([]byte, error) {
			return bytes.ToUpper(task), nil
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := app.Run(ctx, []byte("abc"))
			if err == nil && string(out) != "ABC" {
				err = errors.New("wrong result " + string(out))
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestApp_Close_StopsExecutorsAndUnregisters(t *testing.T) {
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.URL())
	fc := startFakeCluster(t, nc)
	app := registerApp(t, nc)
	done := startExecutor(t, srv.URL(), app.ID, 0, func(_ context.Context, task []byte) ([]byte, error) { return task, nil })
	select {
	case <-app.Executors():
	case <-time.After(10 * time.Second):
		t.Fatal("executor did not register")
	}
	if err := app.Close(context.Background(), schemas.AppFailed); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeExecutor after Close = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("executor still serving after Close")
	}
	got := fc.count(func() int { return len(fc.unregistered) })
	if got != 1 || fc.unregistered[0].State != schemas.AppFailed {
		t.Errorf("unregistered = %+v, want one FAILED", fc.unregistered)
	}
	if _, err := app.Run(context.Background(), []byte("x")); !errors.Is(err, sdk.ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
	if err := app.Close(context.Background(), schemas.AppFinished); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestApp_MasterChanged_Acked(t *testing.T) {
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.URL())
	startFakeCluster(t, nc)
	app := registerApp(t, nc)
	var ack schemas.Ack
	err := bus.Call(context.Background(), nc, bus.AppMasterSubject(app.ID), &schemas.MasterChanged{Epoch: 7, Leader: "s1"}, &ack)
	if err != nil || !ack.OK {
		t.Fatalf("master changed: ack=%+v err=%v", ack, err)
	}
}

func TestServeExecutor_NotAnExecutor(t *testing.T) {
	t.Setenv(sdk.EnvAppID, "")
	t.Setenv(sdk.EnvExecutorID, "")
	err := sdk.ServeExecutor(context.Background(), nil, func(context.Context, []byte) ([]byte, error) { return nil, nil })
	if !errors.Is(err, sdk.ErrNotExecutor) {
		t.Fatalf("err = %v, want ErrNotExecutor", err)
	}
}

func TestExecutorEnvFromOS(t *testing.T) {
	tests := []struct {
		name, app, exec string
		wantErr         bool
		wantID          int
	}{
		{"ok", "app-20260101000000-abcdef", "3", false, 3},
		{"missing", "", "", true, 0},
		{"bad id", "app-20260101000000-abcdef", "x", true, 0},
		{"bad app", "nope", "1", true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(sdk.EnvAppID, tt.app)
			t.Setenv(sdk.EnvExecutorID, tt.exec)
			env, err := sdk.ExecutorEnvFromOS()
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && env.ExecutorID != tt.wantID {
				t.Errorf("id = %d, want %d", env.ExecutorID, tt.wantID)
			}
		})
	}
}
