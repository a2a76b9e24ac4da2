package sdk_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
	"github.com/stoker/stoker/services/registration"
)

// clientCluster is a real bus with the store and a real registration
// service (no scheduler: drivers stay SUBMITTED, apps WAITING).
func clientCluster(t *testing.T) (*sdk.Client, *nats.Conn) {
	t.Helper()
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.ClientURL())
	bustest.Store(t, nc)
	reg, err := registration.New(registration.Config{NC: bustest.Conn(t, srv.ClientURL()), ID: "reg-1", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	c := sdk.NewClient(nc)
	c.PollInterval = 20 * time.Millisecond
	return c, nc
}

func TestClient_Driver_SubmitGetFollowKill(t *testing.T) {
	c, _ := clientCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reply, err := c.Submit(ctx, schemas.SubmitDriver{Name: "s", Command: []string{"sleep", "1"}, Cores: 1, MemoryMB: 64})
	if err != nil {
		t.Fatal(err)
	}
	id := reply.DriverID
	if d, err := c.Driver(ctx, id); err != nil || d.State != schemas.DriverSubmitted {
		t.Fatalf("driver %s: %+v %v", id, d, err)
	}
	if _, err := c.Driver(ctx, "driver-20200101000000-abcdef"); !errors.Is(err, bus.ErrNotFound) {
		t.Fatalf("unknown driver: want ErrNotFound, got %v", err)
	}
	if _, err := c.WorkerOf(ctx, id); err == nil || !strings.Contains(err.Error(), "not been placed") {
		t.Fatalf("WorkerOf an unplaced driver: %v", err)
	}

	var mu sync.Mutex
	var seen []schemas.DriverState
	done := make(chan *schemas.Driver, 1)
	go func() {
		d, err := c.FollowDriver(ctx, id, func(f sdk.Follow[schemas.Driver]) {
			if f.Err == nil {
				mu.Lock()
				seen = append(seen, f.Value.State)
				mu.Unlock()
			}
		})
		if err != nil {
			t.Errorf("follow: %v", err)
		}
		done <- d
	}()
	bustest.Eventually(t, 5*time.Second, "the first state reported", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 1
	})
	if _, err := c.Kill(ctx, id); err != nil {
		t.Fatal(err)
	}
	final := <-done
	mu.Lock()
	defer mu.Unlock()
	if final == nil || final.State != schemas.DriverKilled || len(seen) != 2 || seen[0] != schemas.DriverSubmitted || seen[1] != schemas.DriverKilled {
		t.Fatalf("final %+v, changes %v; want SUBMITTED then KILLED, each once", final, seen)
	}
	ds, err := c.Drivers(ctx)
	if err != nil || len(ds) != 1 {
		t.Fatalf("drivers: %v %d", err, len(ds))
	}
}

func TestClient_App_GetFollowKillEvents(t *testing.T) {
	c, nc := clientCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	app, err := sdk.RegisterApp(ctx, nc, schemas.RegisterApp{Name: "a",
		Executor: schemas.ExecutorSpec{Command: []string{"true"}, Cores: 1, MemoryMB: 64}, MaxCores: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Release()
	if v, err := c.App(ctx, app.ID); err != nil || v.State != schemas.AppWaiting {
		t.Fatalf("app: %+v %v", v, err)
	}
	if _, err := c.WorkerOf(ctx, schemas.ExecutorKey(app.ID, 7)); err == nil || !strings.Contains(err.Error(), "no executor 7") {
		t.Fatalf("WorkerOf a missing executor: %v", err)
	}
	done := make(chan *schemas.AppView, 1)
	go func() {
		v, err := c.FollowApp(ctx, app.ID, func(sdk.Follow[schemas.AppView]) {})
		if err != nil {
			t.Errorf("follow: %v", err)
		}
		done <- v
	}()
	if _, err := c.Kill(ctx, app.ID); err != nil {
		t.Fatal(err)
	}
	if v := <-done; v == nil || v.State != schemas.AppKilled {
		t.Fatalf("followed to %+v, want KILLED", v)
	}
	if _, err := c.Kill(ctx, "nonsense"); err == nil {
		t.Fatal("a kill of a malformed id was sent")
	}

	var states []string
	err = c.Events(ctx, bus.EventQuery{Last: 10, Kind: "app"}, func(e bus.StoredEvent) error {
		if e.ID == app.ID {
			states = append(states, e.State)
		}
		return nil
	})
	if err != nil || strings.Join(states, ",") != "WAITING,KILLED" {
		t.Fatalf("app events %v (%v), want WAITING,KILLED", states, err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Apps[string(schemas.AppKilled)] != 1 {
		t.Fatalf("status: %+v %v", st, err)
	}
	if ws, err := c.Workers(ctx); err != nil || len(ws) != 0 {
		t.Fatalf("workers: %v %v", ws, err)
	}
}

// Logs says why there is no log instead of "no responders": an executor
// whose launch failed (its launch error), a worker whose agent is stopped
// (its state and where its files stay). Issue 9 item 3.
func TestClient_Logs_NoLogSaysWhy(t *testing.T) {
	c, nc := clientCluster(t)
	st := bustest.Store(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	now := time.Now()
	put := func(kv jetstream.KeyValue, key string, v any) {
		if _, err := bus.Create(ctx, kv, key, v); err != nil {
			t.Fatal(err)
		}
	}
	const app, drv = "app-20260101000000-abcdef", "driver-20260101000000-abcdef"
	put(st.Workers, "w1", &schemas.Worker{ID: "w1", Host: "vm-1", State: schemas.WorkerDead, Cores: 2, MemoryMB: 1024,
		WorkDir: "/var/lib/stoker/work", RegisteredAt: now, UpdatedAt: now})
	put(st.Drivers, drv, &schemas.Driver{ID: drv, Command: []string{"true"}, Cores: 1, MemoryMB: 64,
		State: schemas.DriverFinished, WorkerID: "w1", SubmittedAt: now, UpdatedAt: now})
	put(st.Apps, app, &schemas.App{ID: app, Name: "a", State: schemas.AppFailed,
		Executor: schemas.ExecutorSpec{Command: []string{"bin/pi"}, Cores: 1, MemoryMB: 64}, SubmittedAt: now, UpdatedAt: now})
	put(st.Executors, schemas.ExecutorKey(app, 0), &schemas.Executor{AppID: app, ID: 0, WorkerID: "w1", Cores: 1, MemoryMB: 64,
		State: schemas.ExecutorFailed, Error: "fork/exec bin/pi: no such file or directory", CreatedAt: now, UpdatedAt: now})

	_, err := c.Logs(ctx, schemas.LogsRequest{ID: schemas.ExecutorKey(app, 0)})
	if !errors.Is(err, sdk.ErrNoLog) || !strings.Contains(err.Error(), "its launch failed: fork/exec bin/pi: no such file or directory") {
		t.Fatalf("logs of an executor that never started: %v", err)
	}
	_, err = c.Logs(ctx, schemas.LogsRequest{ID: drv})
	if !errors.Is(err, sdk.ErrNoLog) || errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("logs from a stopped worker: %v, want ErrNoLog", err)
	}
	for _, want := range []string{"worker w1 is DEAD", "vm-1", "/var/lib/stoker/work", "start its agent again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("logs from a stopped worker: %q does not say %q", err, want)
		}
	}
}
