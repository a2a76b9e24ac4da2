package scheduler

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// launchConcurrency bounds the commands in flight during one plan.
const launchConcurrency = 32

// applier carries out plans: record changes by compare-and-set, then
// commands to agents. Every write re-checks the record it changes (the plan
// may be stale); a write that finds otherwise re-reads the record into the
// view, undoing the planner's optimistic Apply.
type applier struct {
	nc            *nats.Conn
	v             *view
	launchTimeout time.Duration
	// avoid keeps placements off a worker a launch to it failed.
	avoid func(wid string)
	// appCreds is Config.AppCreds.
	appCreds func(appID string) ([]byte, error)
}

// refresher re-reads one record into a mirror.
type refresher interface {
	refresh(ctx context.Context, key string)
}

// change names one record change for logs and events.
type change struct {
	kind, key, state, why string
}

func now() time.Time { return time.Now().UTC() }

// apply carries out a plan in order: record updates; kills, driver
// launches and executor records at once; app updates of placements;
// executor launches; failure counts.
func (a *applier) apply(ctx context.Context, epoch uint64, p Plan, log *zerolog.Logger) {
	placed := a.updateRecords(ctx, p, log)
	created := make([]bool, len(p.LaunchExecutors))
	nk, nd := len(p.Kills), len(p.LaunchDrivers)
	parallel(nk+nd+len(p.LaunchExecutors), func(i int) {
		switch {
		case i < nk:
			a.sendKill(ctx, epoch, p.Kills[i], log)
		case i < nk+nd:
			a.launchDriver(ctx, epoch, p.LaunchDrivers[i-nk], log)
		default:
			created[i-nk-nd] = a.createExecutor(ctx, epoch, p.LaunchExecutors[i-nk-nd].Executor, log)
		}
	})
	for _, u := range placed {
		a.updateApp(ctx, log, u)
	}
	a.countFailures(ctx, a.launchExecutors(ctx, epoch, p.LaunchExecutors, created, log), log)
}

// updateRecords writes the executor and driver updates and the app updates
// that end an app; it returns the other app updates (placements), which
// wait for the executor records.
func (a *applier) updateRecords(ctx context.Context, p Plan, log *zerolog.Logger) (placed []AppUpdate) {
	for _, u := range p.ExecutorUpdates {
		_, wrote, err := bus.MutateIf(ctx, a.v.executors.kv, u.Key, func(n *schemas.Executor) bool {
			if n.State != u.From || n.WorkerID != u.WorkerID {
				return false
			}
			n.State, n.Message, n.UpdatedAt = u.State, u.Message, now()
			return true
		})
		a.after(ctx, log, a.v.executors, change{"executor", u.Key, string(u.State), u.Message}, err, wrote)
	}
	for _, u := range p.DriverUpdates {
		_, wrote, err := bus.MutateIf(ctx, a.v.drivers.kv, u.DriverID, func(n *schemas.Driver) bool {
			if n.State != u.From || n.WorkerID != u.FromWorker {
				return false
			}
			n.State, n.WorkerID, n.Message, n.UpdatedAt = u.State, u.WorkerID, u.Message, now()
			return true
		})
		a.after(ctx, log, a.v.drivers, change{"driver", u.DriverID, string(u.State), u.Message}, err, wrote)
	}
	for _, u := range p.AppUpdates {
		if !u.State.Terminal() {
			placed = append(placed, u)
			continue
		}
		a.updateApp(ctx, log, u)
	}
	return placed
}

// after logs and emits the outcome of a record change; wrote says whether
// the compare-and-set wrote it (the event follows the write, not the plan).
func (a *applier) after(ctx context.Context, log *zerolog.Logger, m refresher, c change, err error, wrote bool) {
	if err != nil {
		if ctx.Err() == nil {
			log.Warn().Err(err).Str(c.kind, c.key).Msg("cannot update record")
		}
		m.refresh(context.WithoutCancel(ctx), c.key)
		return
	}
	if !wrote {
		// The record moved on: re-read it (cheap, rare) so the view does
		// not keep the optimistic value. A write comes back by the watch.
		m.refresh(ctx, c.key)
		return
	}
	bus.Emit(a.nc, c.kind, c.key, c.state, c.why)
	log.Info().Str(c.kind, c.key).Str("state", c.state).Str("why", c.why).Msg("record updated")
}

// updateApp changes an app's state if it is still From, and raises its
// next executor id; only a state change is an event.
func (a *applier) updateApp(ctx context.Context, log *zerolog.Logger, u AppUpdate) {
	var changedState bool
	_, _, err := bus.MutateIf(ctx, a.v.apps.kv, u.AppID, func(n *schemas.App) bool {
		changedState = false
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
	a.after(ctx, log, a.v.apps, change{"app", u.AppID, string(u.State), u.Message}, err, changedState)
}

// createExecutor writes a placed executor's record (LAUNCHING); only an
// executor whose record was created is launched.
func (a *applier) createExecutor(ctx context.Context, epoch uint64, e schemas.Executor, log *zerolog.Logger) bool {
	e.Epoch, e.CreatedAt, e.UpdatedAt = epoch, now(), now()
	if _, err := bus.Create(ctx, a.v.executors.kv, e.Key(), &e); err != nil {
		log.Warn().Err(err).Str("executor", e.Key()).Msg("cannot create executor record; not launching it")
		a.v.executors.refresh(ctx, e.Key())
		return false
	}
	bus.Emit(a.nc, "executor", e.Key(), string(e.State), "placed on "+e.WorkerID)
	return true
}

// launchExecutors launches the executors whose records were created and
// returns the failed launches per app.
func (a *applier) launchExecutors(ctx context.Context, epoch uint64, ls []ExecutorLaunch, created []bool, log *zerolog.Logger) map[string]int {
	failures := map[string]int{}
	var mu sync.Mutex
	parallel(len(ls), func(j int) {
		if !created[j] {
			return
		}
		if a.launchExecutor(ctx, epoch, ls[j], log) {
			mu.Lock()
			failures[ls[j].Executor.AppID]++
			mu.Unlock()
		}
	})
	return failures
}

// countFailures adds failed launches to each app's consecutive failures.
func (a *applier) countFailures(ctx context.Context, failures map[string]int, log *zerolog.Logger) {
	for app, n := range failures {
		_, _, err := bus.MutateIf(ctx, a.v.apps.kv, app, func(c *schemas.App) bool {
			if c.State.Terminal() {
				return false
			}
			c.ConsecutiveFailures += n
			c.UpdatedAt = now()
			return true
		})
		if err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Str("app_id", app).Msg("cannot count launch failures")
		}
	}
}

// parallel runs fn(0..n-1) with bounded concurrency and waits.
func parallel(n int, fn func(i int)) {
	sem := make(chan struct{}, launchConcurrency)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(i)
		}()
	}
	wg.Wait()
}
