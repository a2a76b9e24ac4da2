package scheduler

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// writeConcurrency bounds the record writes (and kills, driver launches)
// in flight during one plan; launchConcurrency the executor launch
// commands, one to any one agent, each of up to launchBatch launches.
// launchesPerWorker is how many launches one launch timeout covers in a
// batch (the earlier bound of single launches in flight to one agent).
// The first bound, 32 of everything, was measured with stoker bench at
// 400 agents and 3,200 executors on a loaded 2-core machine, where 256 of
// everything delayed the leader's lease renewals until its commands were
// refused. A record create is one JetStream publish the stream stores in
// order, so more in flight only fill the stream's queue; a launch waits
// for one agent, which answers its commands one at a time
// (docs/benchmarks.md, Scale).
const (
	writeConcurrency  = 256
	launchConcurrency = 128
	launchesPerWorker = 4
	// launchBatch bounds the launches of one LaunchExecutors command
	// (at most schemas.MaxLaunchBatch).
	launchBatch = 32
	// killBatch bounds the kills of one KillExecutors command (at most
	// schemas.MaxKillBatch): a kill is a signal to the agent, not a fork.
	killBatch = 64
)

// applier carries out plans: record changes by compare-and-set, then
// commands to agents. Every write re-checks the record it changes (the plan
// may be stale); a write that finds otherwise re-reads the record into the
// view, undoing the planner's optimistic Apply.
type applier struct {
	nc            *nats.Conn
	id            string // this scheduler, named as the leader in launch checks
	v             *view
	launchTimeout time.Duration
	// avoid keeps placements off a worker a launch to it failed.
	avoid func(wid string)
	// appCreds is Config.AppCreds.
	appCreds func(appID string) ([]byte, error)
	// authorize proves, just before a command goes out, that this leader
	// still holds epoch and until when (monotonic clock): the lease's
	// authority (lease.Elector.Confirm). An error: send nothing.
	authorize func(ctx context.Context, epoch uint64) (time.Time, error)
}

// authorized returns the wall-clock end of the leader's authority for a
// command about to be sent, or an error wrapping lease.ErrNoAuthority.
func (a *applier) authorized(ctx context.Context, epoch uint64) (time.Time, error) {
	if a.authorize == nil {
		return time.Time{}, nil
	}
	until, err := a.authorize(ctx, epoch)
	if err != nil {
		return time.Time{}, err
	}
	return time.Now().Add(time.Until(until)).UTC(), nil
}

// change names one record change for logs and events.
type change struct {
	kind, key, state, why string
	epoch                 uint64 // the epoch the write was made under: the event carries it
}

func now() time.Time { return time.Now().UTC() }

// apply carries out a plan in order: record updates; launch checks, kills,
// driver launches and executor records at once; app updates of placements;
// executor launches; failure counts.
func (a *applier) apply(ctx context.Context, epoch uint64, p Plan, log *zerolog.Logger) {
	placed := a.updateRecords(ctx, epoch, p, log)
	created := make([]bool, len(p.LaunchExecutors))
	kills := batchesByKey(len(p.Kills), func(i int) string { return p.Kills[i].WorkerID }, killBatch)
	nk, nd, nc := len(kills), len(p.LaunchDrivers), len(p.Checks)
	svc.Parallel(nc+nk+nd+len(p.LaunchExecutors), writeConcurrency, func(i int) {
		switch {
		case i < nc:
			a.checkLaunches(ctx, epoch, p.Checks[i], log)
		case i < nc+nk:
			ks := make([]KillCmd, len(kills[i-nc]))
			for j, k := range kills[i-nc] {
				ks[j] = p.Kills[k]
			}
			a.sendKills(ctx, epoch, ks, log)
		case i < nc+nk+nd:
			a.launchDriver(ctx, epoch, p.LaunchDrivers[i-nc-nk], log)
		default:
			created[i-nc-nk-nd] = a.createExecutor(ctx, epoch, p.LaunchExecutors[i-nc-nk-nd].Executor, log)
		}
	})
	for _, u := range placed {
		a.updateApp(ctx, epoch, log, u)
	}
	a.countFailures(ctx, a.launchExecutors(ctx, epoch, p.LaunchExecutors, created, log), log)
}

// updateRecords writes the executor and driver updates and the app updates
// that end an app; it returns the other app updates (placements), which
// wait for the executor records.
func (a *applier) updateRecords(ctx context.Context, epoch uint64, p Plan, log *zerolog.Logger) (placed []AppUpdate) {
	// Each change is stamped with its own instant: a write whose answer
	// was lost is found landed by the record carrying its stamp, and its
	// event is still emitted (nothing else would say the record changed).
	for _, u := range p.ExecutorUpdates {
		at := now()
		_, wrote, err := bus.MutateIf(ctx, a.v.executors.kv, u.Key, func(n *schemas.Executor) bool {
			if n.State != u.From || n.WorkerID != u.WorkerID {
				return false
			}
			n.State, n.Message, n.UpdatedAt = u.State, u.Message, at
			return true
		})
		after(a, ctx, log, a.v.executors, change{"executor", u.Key, string(u.State), u.Message, epoch}, err, wrote,
			func(n *schemas.Executor) bool { return n.State == u.State && n.UpdatedAt.Equal(at) })
	}
	for _, u := range p.DriverUpdates {
		at := now()
		_, wrote, err := bus.MutateIf(ctx, a.v.drivers.kv, u.DriverID, func(n *schemas.Driver) bool {
			if n.State != u.From || n.WorkerID != u.FromWorker {
				return false
			}
			n.State, n.WorkerID, n.Message, n.UpdatedAt = u.State, u.WorkerID, u.Message, at
			return true
		})
		after(a, ctx, log, a.v.drivers, change{"driver", u.DriverID, string(u.State), u.Message, epoch}, err, wrote,
			func(n *schemas.Driver) bool { return n.State == u.State && n.UpdatedAt.Equal(at) })
	}
	for _, u := range p.WorkerUpdates {
		at := now()
		_, wrote, err := bus.MutateIf(ctx, a.v.workers.kv, u.WorkerID, func(n *schemas.Worker) bool {
			if n.State != u.From || n.Instance != u.Instance || n.Drain == nil {
				return false
			}
			n.State, n.Reason, n.UpdatedAt = u.State, u.Reason, at
			return true
		})
		after(a, ctx, log, a.v.workers, change{"worker", u.WorkerID, string(u.State), u.Reason, epoch}, err, wrote,
			func(n *schemas.Worker) bool { return n.State == u.State && n.UpdatedAt.Equal(at) })
	}
	for _, u := range p.AppUpdates {
		if !u.State.Terminal() {
			placed = append(placed, u)
			continue
		}
		a.updateApp(ctx, epoch, log, u)
	}
	return placed
}

// after logs and emits the outcome of a record change; wrote says whether
// the compare-and-set wrote it (the event follows the write, not the plan).
// A write that failed re-reads the record; landed, if set, recognises the
// change in it (the write landed, its answer lost), which is then emitted.
func after[T any](a *applier, ctx context.Context, log *zerolog.Logger, m *mirror[T], c change, err error, wrote bool, landed func(*T) bool) {
	if err != nil {
		rec := m.refresh(context.WithoutCancel(ctx), c.key)
		if rec == nil || landed == nil || !landed(rec) {
			if ctx.Err() == nil {
				log.Warn().Err(err).Str(c.kind, c.key).Msg("cannot update record")
			}
			return
		}
		log.Debug().Err(err).Str(c.kind, c.key).Msg("record update's answer lost; it landed")
	} else if !wrote {
		// The record moved on: re-read it (cheap, rare) so the view does
		// not keep the optimistic value. A write comes back by the watch.
		m.refresh(ctx, c.key)
		return
	}
	bus.EmitEpoch(a.nc, c.epoch, c.kind, c.key, c.state, c.why)
	log.Info().Str(c.kind, c.key).Str("state", c.state).Str("why", c.why).Msg("record updated")
}

// updateApp changes an app's state if it is still From, and raises its
// next executor id; only a state change is an event.
func (a *applier) updateApp(ctx context.Context, epoch uint64, log *zerolog.Logger, u AppUpdate) {
	// Retried while the bus fails for a while: the placements' records
	// exist, and an app record left at the old NextExecutorID would have
	// the next pass place the same ids again, whose creates then conflict.
	var changedState, landed bool
	calls := 0
	_, _, err := bus.MutateIfRetrying(ctx, a.launchTimeout, a.v.apps.kv, u.AppID, func(n *schemas.App) bool {
		calls++
		changedState = false
		// A retry that finds the state asked for: an earlier attempt's
		// write landed and its answer was lost. Its event is still owed:
		// nothing else would ever say the app changed state
		// (TestService_LostAppUpdateAnswer_EventStillEmitted).
		landed = calls > 1 && u.State != "" && n.State == u.State
		if u.State != "" && n.State == u.From {
			n.State, changedState = u.State, true
			if u.Message != "" {
				n.Message = u.Message
			}
		}
		if u.NextExecutorID > n.NextExecutorID {
			n.NextExecutorID = u.NextExecutorID
		} else if !changedState {
			return false
		}
		n.UpdatedAt = now()
		return true
	})
	after(a, ctx, log, a.v.apps, change{"app", u.AppID, string(u.State), u.Message, epoch}, err, changedState || landed, nil)
}

// createExecutor writes a placed executor's record (LAUNCHING); only an
// executor whose record was created is launched.
//
// A create whose answer was lost (a timeout, or a 5xx while JetStream
// elects stream leaders after a heal) may have landed, and a record of
// this epoch that nobody launches holds its resources with nobody to
// launch or lose it until the next epoch (the partition test found one
// LAUNCHING for minutes). So the create is sent again until the stream
// decides, and a record already there is this create's when it is the
// same placement (createdHere).
func (a *applier) createExecutor(ctx context.Context, epoch uint64, e schemas.Executor, log *zerolog.Logger) bool {
	e.Epoch, e.CreatedAt, e.UpdatedAt = epoch, now(), now()
	kv, key := a.v.executors.kv, e.Key()
	var rev uint64
	err := bus.RetryTransient(ctx, a.launchTimeout, func(ctx context.Context) error {
		var err error
		rev, err = bus.Create(ctx, kv, key, &e)
		return err
	})
	if bus.IsCASConflict(err) {
		var cur *schemas.Executor
		err = bus.RetryTransient(ctx, a.launchTimeout, func(ctx context.Context) error {
			var gerr error
			cur, _, gerr = bus.Get[schemas.Executor](ctx, kv, key)
			return gerr
		})
		if err == nil && !createdHere(cur, &e) {
			err = fmt.Errorf("executor %s exists, placed on %s by epoch %d", key, cur.WorkerID, cur.Epoch)
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			log.Warn().Err(err).Str("executor", key).Msg("cannot create executor record; not launching it")
		}
		a.v.executors.refresh(context.WithoutCancel(ctx), key)
		return false
	}
	if rev != 0 { // 0: an earlier attempt's create, found by its stamps
		a.v.executors.wrote(key, rev, &e)
	}
	bus.EmitEpoch(a.nc, epoch, "executor", key, string(e.State), "placed on "+e.WorkerID)
	return true
}

// createdHere reports whether cur is the record create c wrote: the same
// placement (epoch, worker) stamped at the same instant.
func createdHere(cur, c *schemas.Executor) bool {
	return cur != nil && cur.Epoch == c.Epoch && cur.WorkerID == c.WorkerID && cur.CreatedAt.Equal(c.CreatedAt)
}

// launchExecutors launches the executors whose records were created and
// returns the failed launches per app. Each worker's launches go in
// batches of up to launchBatch (one LaunchExecutors command each, where
// a launch was one command), at most launchConcurrency batches in flight
// and one to any one agent: an agent handles its commands one at a time,
// so more queued there only wait, and a queue longer than the launch
// timeout fails launches that would have succeeded (64 single launches in
// flight to 2 real agents did, starting 500 sleeps). Batches are sent
// worker by worker in turn, so that a slot waiting for a busy agent is
// rare.
func (a *applier) launchExecutors(ctx context.Context, epoch uint64, ls []ExecutorLaunch, created []bool, log *zerolog.Logger) map[string][]int {
	failures := map[string][]int{}
	var mu sync.Mutex
	creds := a.credsOnce()
	batches := launchBatches(ls, created, launchBatch)
	perWorker := map[string]chan struct{}{}
	for _, b := range batches {
		perWorker[ls[b[0]].Executor.WorkerID] = make(chan struct{}, 1)
	}
	svc.Parallel(len(batches), launchConcurrency, func(i int) {
		b := batches[i]
		w := perWorker[ls[b[0]].Executor.WorkerID]
		w <- struct{}{}
		defer func() { <-w }()
		failed := a.launchBatch(ctx, epoch, ls, b, creds, log)
		mu.Lock()
		for _, j := range failed {
			failures[ls[j].Executor.AppID] = append(failures[ls[j].Executor.AppID], ls[j].Executor.ID)
		}
		mu.Unlock()
	})
	return failures
}

// launchBatches splits the created launches into batches of at most size,
// each for one worker, in the order of ls within a worker, the workers'
// batches taken in turn.
func launchBatches(ls []ExecutorLaunch, created []bool, size int) [][]int {
	wid := func(j int) string { return ls[j].Executor.WorkerID }
	var order []int // the created launches, the workers' taken in turn
	for _, j := range roundRobin(ls, func(l ExecutorLaunch) string { return l.Executor.WorkerID }) {
		if created[j] {
			order = append(order, j)
		}
	}
	all := batchesByKey(len(order), func(i int) string { return wid(order[i]) }, size)
	for _, b := range all {
		for k, i := range b {
			b[k] = order[i]
		}
	}
	out := make([][]int, 0, len(all))
	for _, b := range roundRobin(all, func(b []int) string { return wid(b[0]) }) {
		out = append(out, all[b])
	}
	return out
}

// batchesByKey splits the indexes 0..n-1 into batches of at most size
// sharing one key, the keys in order of first appearance, each key's
// indexes in order.
func batchesByKey(n int, key func(i int) string, size int) [][]int {
	var out [][]int
	open := map[string]int{} // key → its batch being filled, in out
	for i := 0; i < n; i++ {
		k := key(i)
		b, ok := open[k]
		if !ok || len(out[b]) == size {
			b = len(out)
			open[k] = b
			out = append(out, nil)
		}
		out[b] = append(out[b], i)
	}
	return out
}

// roundRobin is the indexes of xs taking one of each key in turn (the
// keys in order of first appearance, each key's items in their order).
func roundRobin[T any](xs []T, key func(T) string) []int {
	var keys []string
	byKey := map[string][]int{}
	for i, x := range xs {
		k := key(x)
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], i)
	}
	out := make([]int, 0, len(xs))
	for len(out) < len(xs) {
		for _, k := range keys {
			if q := byKey[k]; len(q) > 0 {
				out = append(out, q[0])
				byKey[k] = q[1:]
			}
		}
	}
	return out
}

// countFailures adds failed launches (executor ids) to each app's
// consecutive failures, once per executor (schemas.App.CountFailure): the
// agent's own FAILED report for the same executor does not count it again.
func (a *applier) countFailures(ctx context.Context, failures map[string][]int, log *zerolog.Logger) {
	for app, ids := range failures {
		_, _, err := bus.MutateIf(ctx, a.v.apps.kv, app, func(c *schemas.App) bool {
			if c.State.Terminal() {
				return false
			}
			c.FailedExecutors = slices.Clone(c.FailedExecutors)
			counted := false
			for _, id := range ids {
				counted = c.CountFailure(id) || counted
			}
			if !counted {
				return false
			}
			c.UpdatedAt = now()
			return true
		})
		if err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Str("app_id", app).Msg("cannot count launch failures")
		}
	}
}
