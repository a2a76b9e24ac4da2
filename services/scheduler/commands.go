package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/lease"
	"github.com/stoker/stoker/schemas"
)

// sendKills sends one agent's kills (all for ks[0].WorkerID), fenced by
// one proof of the leadership, as KillExecutors commands (bus.SendKills:
// each kill answered on its own; one by one to an agent from before the
// batch subject). A kill not acted on is sent again after KillRetry (the
// planner forgets it) if the target still holds resources.
func (a *applier) sendKills(ctx context.Context, epoch uint64, ks []KillCmd, log *zerolog.Logger) {
	wid := ks[0].WorkerID
	valid, err := a.authorized(ctx, epoch)
	if err != nil {
		// Fenced as strictly as a launch: no kill leaves without a lease
		// confirmed within the authority window. Planned again if still due.
		log.Warn().Err(err).Str("worker_id", wid).Int("kills", len(ks)).Msg("kills not sent: leadership not confirmed")
		return
	}
	kills := make([]schemas.Kill, len(ks))
	for i, k := range ks {
		kills[i] = k.Kill
		kills[i].Epoch, kills[i].ValidUntil = epoch, valid
	}
	for i, err := range bus.SendKills(ctx, a.nc, wid, kills, a.launchTimeout) {
		a.killSent(epoch, ks[i], err, log)
	}
}

// killSent logs a kill's answer (err nil: acknowledged) and, for a step
// of a drain, emits its event.
func (a *applier) killSent(epoch uint64, k KillCmd, err error, log *zerolog.Logger) {
	l := log.With().Str("worker_id", k.WorkerID).Str("target", KillTarget(k.Kill)).Logger()
	switch {
	case errors.Is(err, bus.ErrRefused):
		// The agent does not run it: the records say otherwise until its
		// next state report, registration or recovery settles them.
		l.Warn().Err(err).Msg("kill refused by the agent")
		return
	case err != nil:
		l.Warn().Err(err).Msg("kill not acknowledged")
		return
	}
	l.Info().Str("reason", k.Kill.Reason).Msg("kill sent")
	if k.Drain != "" {
		bus.EmitEpoch(a.nc, epoch, "worker", k.WorkerID, schemas.PhaseDecommissioning, k.Drain)
	}
}

// withAppCreds sets *creds to appID's credential when the scheduler mints them.
func (a *applier) withAppCreds(appID string, creds *string) error {
	if a.appCreds == nil {
		return nil
	}
	return withCreds(func(id string) (string, error) {
		c, err := a.appCreds(id)
		return string(c), err
	}, appID, creds)
}

func withCreds(mint func(string) (string, error), appID string, creds *string) error {
	if mint == nil {
		return nil
	}
	c, err := mint(appID)
	if err != nil {
		return fmt.Errorf("app credential: %w", err)
	}
	*creds = c
	return nil
}

// credsOnce returns the app credential minter memoized for one plan: the
// executors of one app share its credential, signed once per plan instead
// of once per executor (signing was a tenth of the CPU of placing 2,000),
// and held as one string that every launch command of the app points at.
func (a *applier) credsOnce() func(string) (string, error) {
	if a.appCreds == nil {
		return nil
	}
	type minted struct {
		c   string
		err error
	}
	var mu sync.Mutex
	memo := map[string]*minted{}
	return func(appID string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		m, ok := memo[appID]
		if !ok {
			c, err := a.appCreds(appID)
			m = &minted{string(c), err}
			memo[appID] = m
		}
		return m.c, m.err
	}
}

// launchExecutor sends the launch of an executor whose record exists; on
// no acknowledgement or a refusal the record goes LAUNCHING → FAILED. It
// reports whether it wrote that failure (to be counted against the app
// once per executor).
func (a *applier) launchExecutor(ctx context.Context, epoch uint64, l ExecutorLaunch, creds func(string) (string, error), log *zerolog.Logger) (failed bool) {
	e := l.Executor
	cmd := launchCommand(epoch, l)
	err := withCreds(creds, e.AppID, &cmd.Creds)
	if err == nil {
		cmd.ValidUntil, err = a.authorized(ctx, epoch)
	}
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, a.launchTimeout)
		_, err = bus.CallAck(cctx, a.nc, bus.WorkerCmdLaunchSubject(e.WorkerID), cmd)
		cancel()
	}
	return a.launched(ctx, epoch, e, err, log)
}

// launchBatch sends the launches ls[idx] (one worker's) in one
// LaunchExecutors command and returns the indexes whose FAILED it wrote.
// Each 4 launches of the batch have one launch timeout, as 4 single
// launches in flight to one agent had. An agent that does not answer the
// batch subject (one older than batches, or one gone) is sent the
// launches one at a time: an older agent starts them, a gone one makes
// each LOST as a single launch does.
func (a *applier) launchBatch(ctx context.Context, epoch uint64, ls []ExecutorLaunch, idx []int, creds func(string) (string, error), log *zerolog.Logger) (failed []int) {
	one := func(j int) {
		if a.launchExecutor(ctx, epoch, ls[j], creds, log) {
			failed = append(failed, j)
		}
	}
	if len(idx) == 1 {
		one(idx[0])
		return failed
	}
	wid := ls[idx[0]].Executor.WorkerID
	cmd := &schemas.LaunchExecutors{Launches: make([]schemas.LaunchExecutor, len(idx))}
	var err error
	for k, j := range idx {
		cmd.Launches[k] = *launchCommand(epoch, ls[j])
		if err = withCreds(creds, ls[j].Executor.AppID, &cmd.Launches[k].Creds); err != nil {
			break
		}
	}
	var until time.Time
	if err == nil {
		until, err = a.authorized(ctx, epoch)
	}
	var acks schemas.LaunchAcks
	subject := bus.WorkerCmdLaunchExecutorsSubject(wid)
	if err == nil {
		for k := range cmd.Launches {
			cmd.Launches[k].ValidUntil = until
		}
		timeout := a.launchTimeout * time.Duration((len(idx)+launchesPerWorker-1)/launchesPerWorker)
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err = bus.Call(cctx, a.nc, subject, cmd, &acks)
		cancel()
		if err == nil && len(acks.Acks) != len(idx) {
			err = fmt.Errorf("%s: %d answers to %d launches", subject, len(acks.Acks), len(idx))
		}
	}
	if errors.Is(err, nats.ErrNoResponders) && ctx.Err() == nil {
		for _, j := range idx {
			one(j)
		}
		return failed
	}
	for k, j := range idx {
		e := err
		if e == nil {
			e = bus.Refusal(subject, &acks.Acks[k])
		}
		if a.launched(ctx, epoch, ls[j].Executor, e, log) {
			failed = append(failed, j)
		}
	}
	return failed
}

// agentFenced reports whether err is an agent's refusal by one of its
// fences (409 Conflict: a stale command, an older epoch; 503 Unavailable:
// an epoch it does not know yet, the agent stopping), alone or as a
// batch item's Ack.
func agentFenced(err error) bool {
	var be *bus.Error
	return errors.As(err, &be) && (be.Code == bus.CodeConflict || be.Code == bus.CodeUnavailable)
}

// launchCommand is the launch of l, without credential or ValidUntil.
func launchCommand(epoch uint64, l ExecutorLaunch) *schemas.LaunchExecutor {
	e := l.Executor
	return &schemas.LaunchExecutor{
		Epoch: epoch, AppID: e.AppID, ExecutorID: e.ID, Command: l.Command, Env: l.Env,
		Artifacts: l.Artifacts, Cores: e.Cores, MemoryMB: e.MemoryMB, Resources: e.Resources,
	}
}

// launched settles executor e after its launch was sent: nothing on
// success (err nil); else a record still LAUNCHING goes to FAILED (the
// agent could not start it) or LOST (the launch says nothing of the
// executor), and it reports whether it wrote FAILED. A record the agent's
// report made RUNNING meanwhile is left alone.
func (a *applier) launched(ctx context.Context, epoch uint64, e schemas.Executor, err error, log *zerolog.Logger) (failed bool) {
	if err == nil {
		log.Debug().Str("executor", e.Key()).Str("worker_id", e.WorkerID).Msg("executor launch sent")
		return false
	}
	if ctx.Err() != nil {
		return false // lost the lease: the next leader's recovery sorts it out
	}
	if !errors.Is(err, lease.ErrNoAuthority) {
		a.avoid(e.WorkerID)
	}
	msg := fmt.Sprintf("launch on %s failed: %v", e.WorkerID, err)
	launchErr := launchError(err)
	// Nobody listens on the worker's command subject: its agent is gone
	// (dead, not yet DEAD). That is the worker's fault, not the
	// executor's: the executor is LOST, as on a lost worker, and not
	// counted toward the app's retries; the worker is avoided above.
	ev, state := schemas.ExecutorEvLaunchFailed, schemas.ExecutorFailed
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		ev, state = schemas.ExecutorEvLaunchLost, schemas.ExecutorLost
		msg = fmt.Sprintf("worker %s unreachable (no agent answers): not counted as the executor's failure", e.WorkerID)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		// Not answered in time: the agent or the bus too busy to answer,
		// or a partition. It says nothing of the executor, and counted,
		// one batch timed out fails up to 32 at once, more than
		// --max-executor-retries: an app with none RUNNING yet is failed
		// by a busy bus (at 10,000 simulated agents one app so ended with
		// 36 FAILED and its 5,000 executors killed; what failed them was
		// not kept). Spark counts only a worker's FAILED report; its
		// launch is one-way. If the agent did start it, a RUNNING report
		// written first keeps the record (launch-lost, as launch-failed,
		// takes only LAUNCHING: a running executor made LOST was replaced
		// and ran twice), and one that comes after is refused and the
		// process killed, as for FAILED.
		ev, state = schemas.ExecutorEvLaunchLost, schemas.ExecutorLost
		msg = fmt.Sprintf("launch on %s not acknowledged in time (%v): not counted as the executor's failure", e.WorkerID, err)
	case agentFenced(err):
		// The agent's fence refused it (a command past its sender's
		// authority, an epoch it does not take, an agent stopping): the
		// command's fault or the agent's, never the executor's.
		ev, state = schemas.ExecutorEvLaunchLost, schemas.ExecutorLost
		msg = fmt.Sprintf("launch on %s refused by the agent's fence (%v): not counted as the executor's failure", e.WorkerID, err)
	case errors.Is(err, lease.ErrNoAuthority):
		// Nothing was sent: the scheduler's own want of proof, never the
		// executor's failure (counted, ten of them failed a live app's
		// count while JetStream stalled after a heal).
		ev, state = schemas.ExecutorEvLaunchLost, schemas.ExecutorLost
		msg = fmt.Sprintf("not launched on %s: the scheduler could not prove its leadership (%v); not counted as the executor's failure", e.WorkerID, err)
	}
	log.Warn().Str("executor", e.Key()).Str("worker_id", e.WorkerID).Err(err).Msg("executor launch failed")
	// Retried while the bus fails for a while (a compare-and-set, so a
	// write that landed unanswered is found): given up, the record would
	// stay LAUNCHING at this epoch, which nobody checks.
	var landed bool
	_, wrote, merr := bus.MutateIfRetrying(ctx, a.launchTimeout, a.v.executors.kv, e.Key(), func(n *schemas.Executor) bool {
		if landed = n.Epoch == epoch && n.State == state && n.Message == msg; landed {
			return false // an earlier attempt's write
		}
		to, ok := n.State.Next(ev)
		if !ok || n.Epoch != epoch {
			return false
		}
		n.State, n.Message, n.Error, n.UpdatedAt = to, msg, launchErr, now()
		return true
	})
	wrote = wrote || (merr == nil && landed)
	after(a, ctx, log, a.v.executors, change{"executor", e.Key(), string(state), msg, epoch}, merr, wrote, nil)
	return wrote && state == schemas.ExecutorFailed
}

// launchDriver moves the driver to RUNNING on its worker, then sends the
// launch; without an acknowledgement it goes back to SUBMITTED, and a launch
// the agent refused (it could not start the process) ends it ERROR, as the
// agent's own report says; unless the agent's report of this attempt's
// process (a PID) came first.
func (a *applier) launchDriver(ctx context.Context, epoch uint64, l DriverLaunch, log *zerolog.Logger) {
	dlog := log.With().Str("driver_id", l.DriverID).Str("worker_id", l.WorkerID).Int("attempt", l.Attempt).Logger()
	// Retried while the bus fails for a while, as an executor's create
	// (createExecutor): a placement that landed unanswered is found as
	// this one (the attempt's number is new) and launched.
	var landed bool
	d, placed, err := bus.MutateIfRetrying(ctx, a.launchTimeout, a.v.drivers.kv, l.DriverID, func(n *schemas.Driver) bool {
		if landed = n.State == schemas.DriverRunning && n.WorkerID == l.WorkerID && n.Attempts == l.Attempt && l.From != schemas.DriverRunning; landed {
			return false
		}
		if n.State != l.From || n.WorkerID != l.FromWorker || n.KillRequested {
			return false
		}
		n.State, n.WorkerID, n.Attempts, n.Message, n.UpdatedAt = schemas.DriverRunning, l.WorkerID, l.Attempt, "", now()
		n.Resources = l.Driver.Resources
		n.PID = 0 // this attempt's process has not been reported yet
		return true
	})
	placed = placed || (err == nil && landed)
	if err != nil || !placed {
		if err != nil && ctx.Err() == nil {
			dlog.Warn().Err(err).Msg("cannot place driver")
		}
		a.v.drivers.refresh(context.WithoutCancel(ctx), l.DriverID)
		return
	}
	bus.EmitEpoch(a.nc, epoch, "driver", l.DriverID, string(schemas.DriverRunning), fmt.Sprintf("placed on %s (attempt %d)", l.WorkerID, l.Attempt))
	cmd := &schemas.LaunchDriver{
		Epoch: epoch, DriverID: d.ID, Command: d.Command, Env: d.Env, Artifacts: d.Artifacts, Cores: d.Cores, MemoryMB: d.MemoryMB,
		Supervise: d.Supervise, Attempt: l.Attempt, Resources: d.Resources,
	}
	if a.appCreds != nil {
		// The driver's app id is reserved now, so its credential can be
		// confined to that app before the app exists.
		cmd.AppID = schemas.NewAppID(time.Now())
		err = a.withAppCreds(cmd.AppID, &cmd.Creds)
	}
	if err == nil {
		cmd.ValidUntil, err = a.authorized(ctx, epoch)
	}
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, a.launchTimeout)
		_, err = bus.CallAck(cctx, a.nc, bus.WorkerCmdLaunchDriverSubject(l.WorkerID), cmd)
		cancel()
	}
	if err == nil {
		dlog.Info().Msg("driver launch sent")
		return
	}
	if ctx.Err() != nil {
		return
	}
	if !errors.Is(err, lease.ErrNoAuthority) {
		a.avoid(l.WorkerID)
	}
	ev, msg := schemas.DriverEvUnacknowledged, fmt.Sprintf("launch on %s failed: %v", l.WorkerID, err)
	if errors.Is(err, bus.ErrRefused) {
		ev = schemas.DriverEvErrored
	}
	to, _ := schemas.DriverRunning.Next(ev)
	var reverted bool
	_, wrote, merr := bus.MutateIfRetrying(ctx, a.launchTimeout, a.v.drivers.kv, l.DriverID, func(n *schemas.Driver) bool {
		if reverted = n.State == to && n.Message == msg; reverted {
			return false // an earlier attempt's write
		}
		next, ok := n.State.Next(ev)
		if !ok || n.State != schemas.DriverRunning || n.WorkerID != l.WorkerID || n.Attempts != l.Attempt {
			return false
		}
		if n.PID != 0 {
			// The agent reported this attempt's process (its
			// acknowledgement late): the launch arrived, and placed
			// again the driver would run twice.
			return false
		}
		n.State, n.Message, n.UpdatedAt = next, msg, now()
		if next == schemas.DriverSubmitted {
			n.WorkerID = "" // placed again by the next pass
		}
		return true
	})
	wrote = wrote || (merr == nil && reverted)
	dlog.Warn().Err(err).Str("state", string(to)).Msg("driver launch failed")
	after(a, ctx, log, a.v.drivers, change{"driver", l.DriverID, string(to), msg, epoch}, merr, wrote, nil)
}

// launchError is what an executor record keeps of a failed launch: the
// agent's own words for a refusal (e.g. "fork/exec bin/pi: no such file or
// directory"), else the error of the request.
func launchError(err error) string {
	msg := err.Error()
	if errors.Is(err, bus.ErrRefused) {
		if _, after, ok := strings.Cut(msg, bus.ErrRefused.Error()+": "); ok {
			return after
		}
	}
	return msg
}

// checkLaunches settles the executors an older epoch left LAUNCHING on one
// worker (LaunchCheck): it tells the agent this epoch, as recovery does,
// and reads what it runs. From its answer on, the agent refuses every
// launch of an older epoch, so a key it does not list can never start
// (LOST, not counted as the executor's failure) and one it lists runs
// (RUNNING). A check that gets no answer is planned again after KillRetry.
func (a *applier) checkLaunches(ctx context.Context, epoch uint64, c LaunchCheck, log *zerolog.Logger) {
	l := log.With().Str("worker_id", c.WorkerID).Strs("executors", c.Keys).Logger()
	if _, err := a.authorized(ctx, epoch); err != nil {
		l.Warn().Err(err).Msg("launch check not sent: leadership not confirmed")
		return
	}
	cctx, cancel := context.WithTimeout(ctx, a.launchTimeout)
	defer cancel()
	rep := new(schemas.WorkerReport)
	err := bus.Call(cctx, a.nc, bus.WorkerCmdMasterSubject(c.WorkerID), &schemas.MasterChanged{Epoch: epoch, Leader: a.id}, rep)
	switch {
	case err != nil:
		l.Warn().Err(err).Msg("launch check not answered; asking again later")
		return
	case rep.WorkerID != c.WorkerID || rep.Epoch != epoch:
		l.Warn().Str("answered_as", rep.WorkerID).Uint64("answered_epoch", rep.Epoch).Msg("launch check answered for another worker or epoch; ignored")
		return
	}
	listed := make(map[string]schemas.RunningExecutor, len(rep.Executors))
	for _, re := range rep.Executors {
		listed[schemas.ExecutorKey(re.AppID, re.ExecutorID)] = re
	}
	for _, key := range c.Keys {
		re, runs := listed[key]
		ev, msg := schemas.ExecutorEvLaunchLost, fmt.Sprintf("left LAUNCHING by an older epoch and never launched: worker %s does not run it (checked by epoch %d)", c.WorkerID, epoch)
		if runs {
			ev, msg = schemas.ExecutorEvRunning, fmt.Sprintf("left LAUNCHING by an older epoch; worker %s runs it (checked by epoch %d)", c.WorkerID, epoch)
		}
		var to schemas.ExecutorState
		at := now()
		_, wrote, err := bus.MutateIf(ctx, a.v.executors.kv, key, func(n *schemas.Executor) bool {
			next, ok := n.State.Next(ev)
			if !ok || n.State != schemas.ExecutorLaunching || n.WorkerID != c.WorkerID || n.Epoch == 0 || n.Epoch >= epoch {
				return false
			}
			n.State, n.Message, n.UpdatedAt, to = next, msg, at, next
			if runs && re.PID > 0 {
				n.PID = re.PID
			}
			return true
		})
		after(a, ctx, &l, a.v.executors, change{"executor", key, string(to), msg, epoch}, err, wrote,
			func(n *schemas.Executor) bool { return to != "" && n.State == to && n.UpdatedAt.Equal(at) })
	}
}
