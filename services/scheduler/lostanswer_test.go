package scheduler

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
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
	// down: every Update times out without writing while set.
	down atomic.Bool
}

func (l *lostAnswers) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	rev, err := l.KeyValue.Create(ctx, key, value, opts...)
	if err == nil && l.creates.Add(-1) >= 0 {
		return 0, nats.ErrTimeout
	}
	return rev, err
}

func (l *lostAnswers) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if l.down.Load() {
		return 0, nats.ErrTimeout
	}
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

// A launch not acknowledged in time says nothing of the executor (an agent
// or a bus too busy to answer): LOST, not counted toward the app's
// retries, the worker avoided. Counted, one batch timed out fails up to 32
// at once, more than an app with none running yet is allowed.
func TestApplier_UnansweredLaunchIsLostNotCounted(t *testing.T) {
	for _, err := range []error{context.DeadlineExceeded, nats.ErrTimeout, fmt.Errorf("launch batch: %w", context.DeadlineExceeded)} {
		c := newCluster(t)
		e := schemas.Executor{AppID: "app-1", ID: 0, WorkerID: "w1", Cores: 1, MemoryMB: 256, State: schemas.ExecutorLaunching, Epoch: 3}
		c.create(c.st.Executors, e.Key(), &e)
		log := zerolog.Nop()
		avoided := ""
		a := &applier{nc: c.nc, v: newView(c.st, log, nil), launchTimeout: time.Second, avoid: func(w string) { avoided = w }}
		if counted := a.launched(context.Background(), 3, e, err, &log); counted {
			t.Errorf("%v: counted as the executor's failure", err)
		}
		x, _, gerr := bus.Get[schemas.Executor](context.Background(), c.st.Executors, e.Key())
		if gerr != nil || x.State != schemas.ExecutorLost || !strings.Contains(x.Message, "not counted") {
			t.Fatalf("%v: executor %+v (%v), want LOST, not counted", err, x, gerr)
		}
		if avoided != "w1" {
			t.Errorf("%v: worker avoided %q, want w1", err, avoided)
		}
	}
}

// A launch the agent's fence refused (stale, an epoch it does not take),
// alone or in a batch, is LOST and not counted; one refused because the
// process could not start is the executor's failure: FAILED, counted.
func TestApplier_FencedLaunchIsLostNotCounted(t *testing.T) {
	subject := bus.WorkerCmdLaunchExecutorsSubject("w1")
	for _, tc := range []struct {
		name    string
		err     error
		state   schemas.ExecutorState
		counted bool
	}{
		{"stale, alone", bus.Errorf(bus.CodeConflict, "stale command: valid until …"), schemas.ExecutorLost, false},
		{"older epoch, in a batch", bus.Refusal(subject, &schemas.Ack{Message: "invalid master: epoch 2 is older than 3", Code: bus.CodeConflict}), schemas.ExecutorLost, false},
		{"unknown epoch, in a batch", bus.Refusal(subject, &schemas.Ack{Message: "unknown epoch 3", Code: bus.CodeUnavailable}), schemas.ExecutorLost, false},
		{"could not start", bus.Refusal(subject, &schemas.Ack{Message: "exec: \"nope\": not found"}), schemas.ExecutorFailed, true},
	} {
		c := newCluster(t)
		e := schemas.Executor{AppID: "app-1", ID: 0, WorkerID: "w1", Cores: 1, MemoryMB: 256, State: schemas.ExecutorLaunching, Epoch: 3}
		c.create(c.st.Executors, e.Key(), &e)
		log := zerolog.Nop()
		a := &applier{nc: c.nc, v: newView(c.st, log, nil), launchTimeout: time.Second, avoid: func(string) {}}
		if counted := a.launched(context.Background(), 3, e, tc.err, &log); counted != tc.counted {
			t.Errorf("%s: counted %v, want %v", tc.name, counted, tc.counted)
		}
		x, _, err := bus.Get[schemas.Executor](context.Background(), c.st.Executors, e.Key())
		if err != nil || x.State != tc.state {
			t.Fatalf("%s: executor %+v (%v), want %s", tc.name, x, err, tc.state)
		}
	}
}

// A launch's outcome that comes after the agent reported the executor
// RUNNING (the acknowledgement late, the batch's deadline passed while the
// report went through) settles nothing: the launch evidently arrived. Made
// LOST, the running executor was replaced and ran twice (at 10,000
// simulated agents: "runs on sim-… but is not RUNNING in KV").
func TestApplier_LateLaunchOutcomeLeavesARunningExecutorAlone(t *testing.T) {
	subject := bus.WorkerCmdLaunchExecutorsSubject("w1")
	for _, err := range []error{
		context.DeadlineExceeded,
		nats.ErrTimeout,
		nats.ErrNoResponders,
		bus.Refusal(subject, &schemas.Ack{Message: "stale command", Code: bus.CodeConflict}),
		bus.Refusal(subject, &schemas.Ack{Message: "exec: \"nope\": not found"}),
		lease.ErrNoAuthority,
	} {
		c := newCluster(t)
		e := schemas.Executor{AppID: "app-1", ID: 0, WorkerID: "w1", Cores: 1, MemoryMB: 256, State: schemas.ExecutorLaunching, Epoch: 3}
		rev, cerr := bus.Create(context.Background(), c.st.Executors, e.Key(), &e)
		if cerr != nil {
			t.Fatal(cerr)
		}
		running := e
		running.State, running.PID = schemas.ExecutorRunning, 4242 // registration's write of the agent's report
		if _, uerr := bus.Update(context.Background(), c.st.Executors, e.Key(), &running, rev); uerr != nil {
			t.Fatal(uerr)
		}
		log := zerolog.Nop()
		a := &applier{nc: c.nc, v: newView(c.st, log, nil), launchTimeout: time.Second, avoid: func(string) {}}
		if counted := a.launched(context.Background(), 3, e, err, &log); counted {
			t.Errorf("%v: counted as the executor's failure", err)
		}
		x, _, gerr := bus.Get[schemas.Executor](context.Background(), c.st.Executors, e.Key())
		if gerr != nil || x.State != schemas.ExecutorRunning || x.PID != 4242 {
			t.Fatalf("%v: executor %+v (%v), want still RUNNING", err, x, gerr)
		}
	}
}

// While the leadership cannot be proven (its renewals unanswered, the lease
// standing), the scheduler does not plan: a plan folded into the view and
// not carried out left its placements there as executors that held cores
// with nothing behind them, so nothing was placed once the proof came
// back (the partition scenario, after a heal: "2 executors hold resources
// in KV, want 3" for a minute).
func TestService_AuthorityLapse_PlacesOnceProvenAgain(t *testing.T) {
	c := newCluster(t)
	ag := c.agent("w1")
	c.worker("w1", 4)
	l := &lostAnswers{}
	var s *Service
	s = c.scheduler("s1", func(cfg *Config) {
		cfg.storeHook = func(st *bus.Store) {
			l.KeyValue = st.Leader
			st.Leader = l
		}
	})
	bustest.Eventually(t, 10*time.Second, "s1 leads", s.IsLeader)
	epoch := s.Epoch()
	l.down.Store(true)
	bustest.Eventually(t, 10*time.Second, "the leadership unproven", func() bool {
		_, err := s.authorize(context.Background(), epoch)
		return err != nil
	})
	c.app("app-1", schemas.AppWaiting, 2)
	time.Sleep(300 * time.Millisecond) // passes while unproven
	if launches, _, _ := ag.snapshot(); len(launches) != 0 {
		t.Fatalf("%d launches without proven leadership", len(launches))
	}
	l.down.Store(false)
	bustest.Eventually(t, 10*time.Second, "both executors launched once proven again", func() bool {
		launches, _, _ := ag.snapshot()
		return len(launches) == 2
	})
	if s.Epoch() != epoch {
		t.Fatalf("epoch %d → %d: the lapse was not ridden through", epoch, s.Epoch())
	}
}

// An app update that records placements (NextExecutorID) and timed out
// is written again: left at the old value, the next pass would place the
// same executor ids again, whose creates conflict with the records there.
func TestService_PlacementAppUpdateRetried(t *testing.T) {
	c := newCluster(t)
	ag := c.agent("w1")
	c.worker("w1", 4)
	c.app("app-1", schemas.AppWaiting, 2)
	l := &lostAnswers{}
	l.updates.Store(1)
	c.schedulerLosing(l, func(st *bus.Store) *jetstream.KeyValue { return &st.Apps })
	bustest.Eventually(t, 15*time.Second, "app-1 records its two placements", func() bool {
		return getApp(t, c, "app-1").NextExecutorID == 2
	})
	if l.updates.Load() > 0 {
		t.Fatal("no app update timed out: the test did not test it")
	}
	// The launches follow the app update (they wait for it).
	bustest.Eventually(t, 10*time.Second, "both executors launched", func() bool {
		launches, _, _ := ag.snapshot()
		return len(launches) >= 2
	})
	time.Sleep(200 * time.Millisecond)
	if launches, _, _ := ag.snapshot(); len(launches) != 2 {
		t.Fatalf("%d launches, want 2", len(launches))
	}
}

// eventsOf records the states the events stream says of one record.
func eventsOf(t *testing.T, c *cluster, kind, id string) func() []string {
	t.Helper()
	var mu sync.Mutex
	var states []string
	sub, err := c.nc.Subscribe(bus.Events, func(m *nats.Msg) {
		var e schemas.Event
		if bus.Decode(m.Data, bus.FormatOf(m.Header), &e) == nil && e.Kind == kind && e.ID == id {
			mu.Lock()
			states = append(states, e.State)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(states)
	}
}

// An app update whose write landed but whose answer was lost still has
// its event: the retry finds the state it asked for already there, and
// without this no event ever said the app was RUNNING (the events stream
// and KV disagreed in TestChaos_BusNodeKills: "RUNNING in KV, its last
// event says WAITING").
func TestService_LostAppUpdateAnswer_EventStillEmitted(t *testing.T) {
	c := newCluster(t)
	events := eventsOf(t, c, "app", "app-1")
	c.agent("w1")
	c.worker("w1", 4)
	c.app("app-1", schemas.AppWaiting, 2)
	l := &lostAnswers{landUpdates: true}
	l.updates.Store(1)
	c.schedulerLosing(l, func(st *bus.Store) *jetstream.KeyValue { return &st.Apps })
	bustest.Eventually(t, 15*time.Second, "app-1 RUNNING in KV", func() bool {
		return getApp(t, c, "app-1").State == schemas.AppRunning
	})
	if l.updates.Load() > 0 {
		t.Fatal("no app update lost its answer: the test did not test it")
	}
	bustest.Eventually(t, 10*time.Second, "an event says app-1 is RUNNING", func() bool {
		return slices.Contains(events(), string(schemas.AppRunning))
	})
}

// The same for a record update of a plan (executor, driver, worker): an
// executor on a dead worker whose LOST write landed with its answer lost
// still has its LOST event. The failed write re-reads the record and finds
// its own change there by the instant it stamped.
func TestService_LostExecutorUpdateAnswer_EventStillEmitted(t *testing.T) {
	c := newCluster(t)
	c.create(c.st.Workers, "w1", &schemas.Worker{ID: "w1", Cores: 4, MemoryMB: 8192, State: schemas.WorkerDead, RegisteredAt: time.Now()})
	c.app("app-1", schemas.AppRunning, 1)
	e := schemas.Executor{AppID: "app-1", ID: 0, WorkerID: "w1", Cores: 1, MemoryMB: 256, State: schemas.ExecutorRunning, Epoch: 1}
	c.create(c.st.Executors, e.Key(), &e)
	events := eventsOf(t, c, "executor", e.Key())
	l := &lostAnswers{landUpdates: true}
	l.updates.Store(1)
	c.schedulerLosing(l, executorsBucket)
	bustest.Eventually(t, 15*time.Second, "the executor LOST in KV", func() bool {
		x, _, err := bus.Get[schemas.Executor](context.Background(), c.st.Executors, e.Key())
		return err == nil && x.State == schemas.ExecutorLost
	})
	if l.updates.Load() > 0 {
		t.Fatal("no executor update lost its answer: the test did not test it")
	}
	bustest.Eventually(t, 10*time.Second, "an event says the executor is LOST", func() bool {
		return slices.Contains(events(), string(schemas.ExecutorLost))
	})
	if n := strings.Count(strings.Join(events(), " "), string(schemas.ExecutorLost)); n != 1 {
		t.Fatalf("%d LOST events, want 1: %v", n, events())
	}
}
