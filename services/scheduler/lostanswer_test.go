package scheduler

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/bus/lease"
	"github.com/stoker/stoker/schemas"
)

// lostAnswers is a real bucket in front of which some answers are lost,
// as while JetStream elects stream leaders after a heal: the next
// creates answers to Create are lost after the write landed; the next
// updates calls to Update time out, after writing if landUpdates.
type lostAnswers struct {
	jetstream.KeyValue
	creates, updates atomic.Int32
	landUpdates      bool
}

func (l *lostAnswers) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	rev, err := l.KeyValue.Create(ctx, key, value, opts...)
	if err == nil && l.creates.Add(-1) >= 0 {
		return 0, nats.ErrTimeout
	}
	return rev, err
}

func (l *lostAnswers) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if l.updates.Add(-1) >= 0 {
		if l.landUpdates {
			_, _ = l.KeyValue.Update(ctx, key, value, rev)
		}
		return 0, nats.ErrTimeout
	}
	return l.KeyValue.Update(ctx, key, value, rev)
}

// schedulerLosing starts a scheduler whose bucket (the store's field that
// bucket returns) is behind l.
func (c *cluster) schedulerLosing(l *lostAnswers, bucket func(*bus.Store) *jetstream.KeyValue) {
	c.scheduler("s1", func(cfg *Config) {
		cfg.storeHook = func(st *bus.Store) {
			kv := bucket(st)
			l.KeyValue = *kv
			*kv = l
		}
	})
}

func executorsBucket(st *bus.Store) *jetstream.KeyValue { return &st.Executors }

// An executor record whose create landed but whose answer was lost is
// launched: left alone, it held its core LAUNCHING at this epoch, with
// nobody to launch or lose it until the next one (found by the partition
// test after a heal: "RUNNING in KV without a process" for minutes).
func TestService_LostCreateAnswer_ExecutorStillLaunched(t *testing.T) {
	c := newCluster(t)
	ag := c.agent("w1")
	c.worker("w1", 2)
	c.app("app-1", schemas.AppWaiting, 2)
	l := &lostAnswers{}
	l.creates.Store(1)
	c.schedulerLosing(l, executorsBucket)
	bustest.Eventually(t, 15*time.Second, "both executors launched", func() bool {
		launches, _, _ := ag.snapshot()
		return len(launches) == 2
	})
	if l.creates.Load() > 0 {
		t.Fatal("no create answer was lost: the test did not test it")
	}
	if es := c.executors("app-1"); len(es) != 2 {
		t.Fatalf("%d executor records, want 2 (the lost answer's record launched, not placed again)", len(es))
	}
}

// A failed launch whose FAILED write timed out is written again: given up,
// the record stayed LAUNCHING at this epoch, which nobody checks.
func TestService_FailedLaunchWriteRetried(t *testing.T) {
	c := newCluster(t)
	ag := c.agent("w1")
	ag.refuseLaunches("launch failed: no such file")
	c.worker("w1", 1)
	c.app("app-1", schemas.AppWaiting, 1)
	l := &lostAnswers{}
	l.updates.Store(2)
	c.schedulerLosing(l, executorsBucket)
	bustest.Eventually(t, 15*time.Second, "the refused launch's executor FAILED", func() bool {
		for _, e := range c.executors("app-1") {
			if e.State == schemas.ExecutorFailed {
				return true
			}
		}
		return false
	})
	if l.updates.Load() > 0 {
		t.Fatal("no update timed out: the test did not test it")
	}
}

// A driver whose placement (SUBMITTED → RUNNING on its worker) landed but
// whose answer was lost is launched, not left RUNNING with no process.
func TestService_LostDriverPlacementAnswer_DriverStillLaunched(t *testing.T) {
	c := newCluster(t)
	ag := c.agent("w1")
	c.worker("w1", 2)
	c.create(c.st.Drivers, "driver-1", &schemas.Driver{
		ID: "driver-1", Command: []string{"drv"}, Cores: 1, MemoryMB: 512, State: schemas.DriverSubmitted, SubmittedAt: time.Now(),
	})
	l := &lostAnswers{landUpdates: true}
	l.updates.Store(1)
	c.schedulerLosing(l, func(st *bus.Store) *jetstream.KeyValue { return &st.Drivers })
	bustest.Eventually(t, 15*time.Second, "the driver launched", func() bool {
		_, drivers, _ := ag.snapshot()
		return len(drivers) == 1
	})
	if l.updates.Load() > 0 {
		t.Fatal("no update answer was lost: the test did not test it")
	}
	d, _, err := bus.Get[schemas.Driver](context.Background(), c.st.Drivers, "driver-1")
	if err != nil || d.State != schemas.DriverRunning || d.WorkerID != "w1" || d.Attempts != 1 {
		t.Fatalf("driver %+v (%v), want RUNNING on w1, attempt 1", d, err)
	}
}

// Without proven authority now, a plan's placements are held back (no
// record created to end unlaunched), and so are the app updates that
// record them; the rest of the plan goes ahead. With it, nothing changes.
func TestApplier_UnprovenAuthority_HoldsPlacementsBack(t *testing.T) {
	p := Plan{
		LaunchExecutors: []ExecutorLaunch{{Executor: schemas.Executor{AppID: "app-1", ID: 3, WorkerID: "w1"}}},
		LaunchDrivers:   []DriverLaunch{{DriverID: "driver-1", WorkerID: "w1"}},
		AppUpdates: []AppUpdate{{AppID: "app-1", From: schemas.AppWaiting, State: schemas.AppRunning, NextExecutorID: 4},
			{AppID: "app-2", From: schemas.AppWaiting, State: schemas.AppRunning}},
		ExecutorUpdates: []ExecutorUpdate{{Key: "app-3.0", From: schemas.ExecutorRunning, State: schemas.ExecutorLost}},
	}
	log := zerolog.Nop()
	proven := true
	a := &applier{authorize: func(context.Context, uint64) (time.Time, error) {
		if proven {
			return time.Now().Add(time.Second), nil
		}
		return time.Time{}, lease.ErrNoAuthority
	}}
	if got := a.withoutUnprovenLaunches(context.Background(), 1, p, &log); len(got.LaunchExecutors) != 1 || len(got.LaunchDrivers) != 1 || len(got.AppUpdates) != 2 {
		t.Fatalf("with authority: %+v, want the plan unchanged", got)
	}
	proven = false
	got := a.withoutUnprovenLaunches(context.Background(), 1, p, &log)
	if len(got.LaunchExecutors) != 0 || len(got.LaunchDrivers) != 0 {
		t.Fatalf("without authority: launches %+v %+v, want none", got.LaunchExecutors, got.LaunchDrivers)
	}
	if len(got.AppUpdates) != 1 || got.AppUpdates[0].AppID != "app-2" || len(got.ExecutorUpdates) != 1 {
		t.Fatalf("without authority: app updates %+v, executor updates %+v; want app-2's and the LOST", got.AppUpdates, got.ExecutorUpdates)
	}
	if len(p.AppUpdates) != 2 {
		t.Fatal("the caller's plan was changed")
	}
}

// A launch not sent for want of authority is the scheduler's, not the
// executor's: LOST, not counted toward the app's retries (ten of them
// FAILED, counted, while JetStream stalled after a heal in the partition
// scenario).
func TestApplier_UnauthorizedLaunchIsLostNotCounted(t *testing.T) {
	c := newCluster(t)
	e := schemas.Executor{AppID: "app-1", ID: 0, WorkerID: "w1", Cores: 1, MemoryMB: 256, State: schemas.ExecutorLaunching, Epoch: 3}
	c.create(c.st.Executors, e.Key(), &e)
	log := zerolog.Nop()
	a := &applier{nc: c.nc, v: newView(c.st, log, nil), launchTimeout: time.Second, avoid: func(string) {
		t.Error("a worker avoided for the scheduler's own want of authority")
	}}
	if counted := a.launched(context.Background(), 3, e, fmt.Errorf("%w: renewal not answered", lease.ErrNoAuthority), &log); counted {
		t.Error("counted as the executor's failure")
	}
	x, _, err := bus.Get[schemas.Executor](context.Background(), c.st.Executors, e.Key())
	if err != nil || x.State != schemas.ExecutorLost || !strings.Contains(x.Message, "not counted") {
		t.Fatalf("executor %+v (%v), want LOST, not counted", x, err)
	}
}
