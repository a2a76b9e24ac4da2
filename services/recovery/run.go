package recovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// noResponderRetry is how often an agent or driver that has no subscriber
// yet (reconnecting) is asked again before the recovery timeout.
const noResponderRetry = 200 * time.Millisecond

// tally collects what went wrong without stopping the recovery: records
// that could not be decoded or written. It ends up in the cluster message.
type tally struct {
	mu        sync.Mutex
	skipped   []string // undecodable records, "bucket/key"
	writeErrs int
	firstErr  error
}

func (t *tally) skip(what string) {
	t.mu.Lock()
	t.skipped = append(t.skipped, what)
	t.mu.Unlock()
}

func (t *tally) fail(err error) {
	t.mu.Lock()
	t.writeErrs++
	if t.firstErr == nil {
		t.firstErr = err
	}
	t.mu.Unlock()
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	if n := len(t.skipped); n > 0 {
		shown := t.skipped
		if n > 3 {
			shown = shown[:3]
		}
		parts = append(parts, fmt.Sprintf("skipped %d undecodable record(s) (%s)", n, strings.Join(shown, ", ")))
	}
	if t.writeErrs > 0 {
		parts = append(parts, fmt.Sprintf("%d record write(s) failed (first: %v)", t.writeErrs, t.firstErr))
	}
	return strings.Join(parts, "; ")
}

// runState is what a recovery run has done so far, for the error path.
type runState struct {
	snap *Snapshot         // set once loaded and marked
	was  map[string]string // "app/<id>", "driver/<id>" → state before marking
}

// recover runs steps 2-5 for the claimed epoch. Whatever happens inside —
// an error or a panic — the cluster ends ALIVE for the epoch, unless the
// recovery was abandoned (a newer epoch or Stop cancelled ctx).
func (s *Service) recover(ctx context.Context, ei epochInfo) {
	log := s.log.With().Uint64("epoch", ei.epoch).Str("leader", ei.leader).Logger()
	start := time.Now()
	log.Info().Msg("recovery started")
	rs := &runState{was: map[string]string{}}
	summary, err := s.safeSteps(ctx, log, ei, rs)
	if ctx.Err() != nil {
		log.Info().Msg("recovery abandoned")
		return
	}
	if err != nil && rs.snap != nil {
		s.safeRevert(ctx, log, ei.epoch, rs)
	}
	msg := summary
	if err != nil {
		log.Error().Err(err).Msg("recovery failed; declaring the cluster ALIVE anyway")
		msg = fmt.Sprintf("recovery for epoch %d failed: %v; cluster declared ALIVE with what was reconciled", ei.epoch, err)
		if summary != "" {
			msg += " (" + summary + ")"
		}
	}
	for attempt := 0; ; attempt++ {
		fctx, cancel := context.WithTimeout(ctx, s.cfg.RecoveryTimeout)
		_, wrote, ferr := s.casCluster(fctx, func(cur *schemas.Cluster) *schemas.Cluster {
			if cur == nil || cur.Epoch != ei.epoch || cur.State != schemas.ClusterRecovering || cur.Recoverer != s.cfg.ID {
				return nil // a newer epoch, or another instance took the claim over
			}
			n := *cur
			n.State, n.Since, n.Message = schemas.ClusterAlive, time.Now().UTC(), msg
			return &n
		})
		cancel()
		if ferr == nil {
			if wrote {
				bus.Emit(s.cfg.NC, "cluster", fmt.Sprint(ei.epoch), string(schemas.ClusterAlive), msg)
				log.Info().Dur("took", time.Since(start)).Str("summary", msg).Msg("cluster ALIVE")
			} else {
				log.Info().Msg("epoch no longer ours to complete")
			}
			return
		}
		if ctx.Err() != nil || attempt >= 4 {
			// Left RECOVERING: the stale-claim takeover finishes it.
			log.Error().Err(ferr).Msg("cannot declare the cluster ALIVE")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
		}
	}
}

// safeSteps turns a panic anywhere in the recovery into an error.
func (s *Service) safeSteps(ctx context.Context, log zerolog.Logger, ei epochInfo, rs *runState) (summary string, err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error().Interface("panic", r).Bytes("stack", debug.Stack()).Msg("recovery panicked")
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return s.steps(ctx, log, ei, rs)
}

func (s *Service) hook(stage string) {
	if s.testHook != nil {
		s.testHook(stage)
	}
}

// steps is recovery proper: load, mark UNKNOWN, ask, reconcile, apply.
func (s *Service) steps(ctx context.Context, log zerolog.Logger, ei epochInfo, rs *runState) (string, error) {
	start := time.Now()
	deadline := start.Add(s.cfg.RecoveryTimeout)
	var t tally

	s.hook("load")
	snap, err := s.load(ctx, ei.epoch, &t)
	if err != nil {
		return t.String(), fmt.Errorf("load: %w", err)
	}

	s.hook("mark")
	rs.snap = &snap
	s.mark(ctx, log, &snap, rs, &t)
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	var workers, apps []string
	for _, id := range slices.Sorted(maps.Keys(snap.Workers)) {
		if snap.Workers[id].State == schemas.WorkerUnknown {
			workers = append(workers, id)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(snap.Apps)) {
		if snap.Apps[id].State == schemas.AppUnknown {
			apps = append(apps, id)
		}
	}

	s.hook("ask")
	reports, acks := s.ask(ctx, log, ei, workers, apps, deadline)
	if ctx.Err() != nil {
		return "", ctx.Err()
	}

	s.hook("reconcile")
	res := Reconcile(snap, reports, acks)

	s.hook("apply")
	st := s.apply(ctx, log, ei.epoch, res, &t)
	if ctx.Err() != nil {
		return "", ctx.Err()
	}

	summary := fmt.Sprintf("epoch %d recovered in %s: %d/%d workers answered, %d/%d apps answered, %d executors lost, %d drivers relaunched, %d kills",
		ei.epoch, time.Since(start).Round(time.Millisecond), len(reports), len(workers), len(acks), len(apps),
		st.lost, st.relaunched, len(res.Kills))
	if notes := t.String(); notes != "" {
		summary += "; " + notes
	}
	return summary, nil
}

// load reads every record. An undecodable record is skipped and noted, not
// fatal: one corrupt value must not stop the cluster from recovering.
func (s *Service) load(ctx context.Context, epoch uint64, t *tally) (Snapshot, error) {
	snap := Snapshot{Epoch: epoch}
	var err error
	if snap.Workers, err = listTolerant[schemas.Worker](ctx, s.store.Workers, t); err != nil {
		return snap, err
	}
	if snap.Apps, err = listTolerant[schemas.App](ctx, s.store.Apps, t); err != nil {
		return snap, err
	}
	if snap.Drivers, err = listTolerant[schemas.Driver](ctx, s.store.Drivers, t); err != nil {
		return snap, err
	}
	if snap.Executors, err = listTolerant[schemas.Executor](ctx, s.store.Executors, t); err != nil {
		return snap, err
	}
	return snap, nil
}

// listTolerant is bus.List that skips (and notes) undecodable records.
func listTolerant[T any](ctx context.Context, kv jetstream.KeyValue, t *tally) (map[string]*T, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	out := map[string]*T{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				return out, nil
			}
			v := new(T)
			if err := bus.DecodeRecord(e.Value(), v); err != nil {
				t.skip(kv.Bucket() + "/" + e.Key())
				continue
			}
			out[e.Key()] = v
		}
	}
}

// mutateIf is bus.Mutate reporting whether fn's change was written.
func mutateIf[T any](ctx context.Context, kv jetstream.KeyValue, key string, fn func(cur *T) *T) (*T, bool, error) {
	var wrote bool
	v, _, err := bus.Mutate(ctx, kv, key, func(cur *T) (*T, error) {
		if cur == nil {
			wrote = false
			return nil, nil
		}
		next := fn(cur)
		wrote = next != nil
		return next, nil
	})
	if err != nil {
		return nil, false, err
	}
	return v, wrote, nil
}

// mark moves ALIVE workers, live apps and running drivers to UNKNOWN and
// updates the snapshot with what KV holds afterwards.
func (s *Service) mark(ctx context.Context, log zerolog.Logger, snap *Snapshot, rs *runState, t *tally) {
	e := snap.Epoch
	now := time.Now().UTC()
	for _, id := range slices.Sorted(maps.Keys(snap.Workers)) {
		if snap.Workers[id].State != schemas.WorkerAlive {
			continue
		}
		v, wrote, err := mutateIf(ctx, s.store.Workers, id, func(cur *schemas.Worker) *schemas.Worker {
			if cur.State != schemas.WorkerAlive {
				return nil
			}
			n := *cur
			n.State, n.Epoch, n.UpdatedAt = schemas.WorkerUnknown, e, now
			n.Reason = fmt.Sprintf("recovering epoch %d", e)
			return &n
		})
		noteMark(log, snap.Workers, id, v, err, t)
		if wrote {
			bus.Emit(s.cfg.NC, "worker", id, string(schemas.WorkerUnknown), v.Reason)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(snap.Apps)) {
		if a := snap.Apps[id]; a.State.Terminal() || a.State == schemas.AppUnknown {
			continue
		}
		var was schemas.AppState
		v, wrote, err := mutateIf(ctx, s.store.Apps, id, func(cur *schemas.App) *schemas.App {
			if cur.State.Terminal() || cur.State == schemas.AppUnknown {
				return nil
			}
			was = cur.State
			n := *cur
			n.State, n.UpdatedAt = schemas.AppUnknown, now
			n.Message = fmt.Sprintf("recovering epoch %d (was %s)", e, cur.State)
			return &n
		})
		if wrote {
			rs.was["app/"+id] = string(was)
		}
		noteMark(log, snap.Apps, id, v, err, t)
		if wrote {
			bus.Emit(s.cfg.NC, "app", id, string(schemas.AppUnknown), v.Message)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(snap.Drivers)) {
		if !snap.Drivers[id].State.Holds() {
			continue
		}
		var was schemas.DriverState
		v, wrote, err := mutateIf(ctx, s.store.Drivers, id, func(cur *schemas.Driver) *schemas.Driver {
			if !cur.State.Holds() {
				return nil
			}
			was = cur.State
			n := *cur
			n.State, n.UpdatedAt = schemas.DriverUnknown, now
			n.Message = fmt.Sprintf("recovering epoch %d (was %s)", e, cur.State)
			return &n
		})
		if wrote {
			rs.was["driver/"+id] = string(was)
		}
		noteMark(log, snap.Drivers, id, v, err, t)
		if wrote {
			bus.Emit(s.cfg.NC, "driver", id, string(schemas.DriverUnknown), v.Message)
		}
	}
}

// noteMark records the outcome of one marking write in the snapshot.
func noteMark[T any](log zerolog.Logger, m map[string]*T, id string, v *T, err error, t *tally) {
	switch {
	case err != nil:
		// Keep the loaded record: not asked, not changed.
		if !errors.Is(err, context.Canceled) {
			log.Warn().Err(err).Str("id", id).Msg("cannot mark record UNKNOWN")
			t.fail(err)
		}
	case v == nil:
		delete(m, id) // deleted meanwhile
	default:
		m[id] = v
	}
}

// safeRevert is revert under a recover and a time bound.
func (s *Service) safeRevert(ctx context.Context, log zerolog.Logger, epoch uint64, rs *runState) {
	defer keepGoing(log)
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RecoveryTimeout)
	defer cancel()
	s.revert(rctx, log, epoch, rs)
}

// revert is the error path's best effort: records still UNKNOWN go back to
// what they were, so that nothing waits forever on a recovery that failed.
// A worker back to ALIVE that is really gone is then the heartbeat
// service's to declare DEAD; one that is alive simply goes on.
func (s *Service) revert(ctx context.Context, log zerolog.Logger, epoch uint64, rs *runState) {
	now := time.Now().UTC()
	why := fmt.Sprintf("recovery for epoch %d failed; restored", epoch)
	for _, id := range slices.Sorted(maps.Keys(rs.snap.Workers)) {
		if rs.snap.Workers[id].State != schemas.WorkerUnknown {
			continue
		}
		_, wrote, err := mutateIf(ctx, s.store.Workers, id, func(cur *schemas.Worker) *schemas.Worker {
			if cur.State != schemas.WorkerUnknown {
				return nil
			}
			n := *cur
			n.State, n.Reason, n.UpdatedAt = schemas.WorkerAlive, why, now
			return &n
		})
		if err == nil && wrote {
			bus.Emit(s.cfg.NC, "worker", id, string(schemas.WorkerAlive), why)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(rs.snap.Apps)) {
		if rs.snap.Apps[id].State != schemas.AppUnknown {
			continue
		}
		to := schemas.AppState(rs.was["app/"+id])
		if to == "" {
			to = schemas.AppWaiting // marked by an abandoned epoch; the scheduler moves it on
		}
		_, wrote, err := mutateIf(ctx, s.store.Apps, id, func(cur *schemas.App) *schemas.App {
			if cur.State != schemas.AppUnknown {
				return nil
			}
			n := *cur
			n.State, n.Message, n.UpdatedAt = to, why, now
			return &n
		})
		if err == nil && wrote {
			bus.Emit(s.cfg.NC, "app", id, string(to), why)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(rs.snap.Drivers)) {
		if rs.snap.Drivers[id].State != schemas.DriverUnknown {
			continue
		}
		to := schemas.DriverState(rs.was["driver/"+id])
		if to == "" {
			to = schemas.DriverRunning
		}
		_, wrote, err := mutateIf(ctx, s.store.Drivers, id, func(cur *schemas.Driver) *schemas.Driver {
			if cur.State != schemas.DriverUnknown {
				return nil
			}
			n := *cur
			n.State, n.Message, n.UpdatedAt = to, why, now
			return &n
		})
		if err == nil && wrote {
			bus.Emit(s.cfg.NC, "driver", id, string(to), why)
		}
	}
	log.Info().Msg("restored records left UNKNOWN by the failed recovery")
}

// ask sends MasterChanged to every worker and app concurrently and collects
// answers until all answered or the deadline passed (whichever is first).
func (s *Service) ask(ctx context.Context, log zerolog.Logger, ei epochInfo, workers, apps []string, deadline time.Time) (map[string]*schemas.WorkerReport, map[string]bool) {
	reports := map[string]*schemas.WorkerReport{}
	acks := map[string]bool{}
	if len(workers)+len(apps) == 0 {
		return reports, acks
	}
	actx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	mc := schemas.MasterChanged{Epoch: ei.epoch, Leader: ei.leader}
	for _, wid := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer keepGoing(log)
			rep := new(schemas.WorkerReport)
			m := mc
			if err := callRetrying(actx, s.cfg.NC, bus.WorkerCmdMasterSubject(wid), &m, rep); err != nil {
				log.Info().Err(err).Str("worker_id", wid).Msg("worker did not answer recovery")
				return
			}
			if rep.WorkerID != wid {
				log.Warn().Str("worker_id", wid).Str("answered_as", rep.WorkerID).Msg("worker answered recovery under another id; ignored")
				return
			}
			mu.Lock()
			reports[wid] = rep
			mu.Unlock()
		}()
	}
	for _, id := range apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer keepGoing(log)
			m := mc
			if err := callRetrying(actx, s.cfg.NC, bus.AppMasterSubject(id), &m, new(schemas.Ack)); err != nil {
				log.Info().Err(err).Str("app_id", id).Msg("driver did not answer recovery")
				return
			}
			mu.Lock()
			acks[id] = true
			mu.Unlock()
		}()
	}
	wg.Wait()
	return reports, acks
}

// keepGoing turns a panic in a helper goroutine into a log line: that one
// answer is lost (the worker or app counts as silent), recovery goes on.
func keepGoing(log zerolog.Logger) {
	if r := recover(); r != nil {
		log.Error().Interface("panic", r).Bytes("stack", debug.Stack()).Msg("recovery helper panicked")
	}
}

// callRetrying is bus.Call that asks again while nobody subscribes (an
// agent reconnecting) until ctx ends; any other error is final.
func callRetrying(ctx context.Context, nc *nats.Conn, subject string, req, resp any) error {
	for {
		err := bus.Call(ctx, nc, subject, req, resp)
		if err == nil || !errors.Is(err, nats.ErrNoResponders) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(noResponderRetry):
		}
	}
}

type applyStats struct {
	lost, relaunched int
}

// apply writes the Result, each change guarded by the state it expects.
func (s *Service) apply(ctx context.Context, log zerolog.Logger, epoch uint64, res Result, t *tally) applyStats {
	var st applyStats
	now := time.Now().UTC()
	for _, wc := range res.Workers {
		_, wrote, err := mutateIf(ctx, s.store.Workers, wc.ID, func(cur *schemas.Worker) *schemas.Worker {
			if cur.State != wc.From {
				return nil // re-registered (or otherwise moved on) meanwhile: leave it
			}
			n := *cur
			n.State, n.Epoch, n.Reason, n.UpdatedAt = wc.To, epoch, wc.Reason, now
			return &n
		})
		if s.noteWrite(log, "worker", wc.ID, err, t) {
			continue
		}
		if !wrote {
			log.Info().Str("worker_id", wc.ID).Msg("worker moved on during recovery (re-registered?); left as it is")
			continue
		}
		bus.Emit(s.cfg.NC, "worker", wc.ID, string(wc.To), wc.Reason)
		for _, ec := range wc.Executors {
			s.applyExecutor(ctx, log, ec, now, t, &st)
		}
		for _, dc := range wc.Drivers {
			s.applyDriver(ctx, log, dc, now, t, &st)
		}
	}
	for _, ec := range res.Executors {
		s.applyExecutor(ctx, log, ec, now, t, &st)
	}
	for _, dc := range res.Drivers {
		s.applyDriver(ctx, log, dc, now, t, &st)
	}
	for _, ac := range res.Apps {
		_, wrote, err := mutateIf(ctx, s.store.Apps, ac.ID, func(cur *schemas.App) *schemas.App {
			if cur.State != ac.From {
				return nil
			}
			n := *cur
			n.State, n.Message, n.UpdatedAt = ac.To, ac.Message, now
			return &n
		})
		if !s.noteWrite(log, "app", ac.ID, err, t) && wrote {
			bus.Emit(s.cfg.NC, "app", ac.ID, string(ac.To), ac.Message)
		}
	}
	s.sendKills(ctx, log, res.Kills)
	return st
}

func (s *Service) applyExecutor(ctx context.Context, log zerolog.Logger, ec ExecutorChange, now time.Time, t *tally, st *applyStats) {
	_, wrote, err := mutateIf(ctx, s.store.Executors, ec.Key, func(cur *schemas.Executor) *schemas.Executor {
		if cur.State != ec.From || cur.WorkerID != ec.WorkerID {
			return nil // an agent's state report got there first
		}
		n := *cur
		n.State, n.Message, n.UpdatedAt = ec.To, ec.Message, now
		if ec.PID > 0 {
			n.PID = ec.PID
		}
		return &n
	})
	if s.noteWrite(log, "executor", ec.Key, err, t) || !wrote {
		return
	}
	if ec.To == schemas.ExecutorLost {
		st.lost++
	}
	bus.Emit(s.cfg.NC, "executor", ec.Key, string(ec.To), ec.Message)
}

func (s *Service) applyDriver(ctx context.Context, log zerolog.Logger, dc DriverChange, now time.Time, t *tally, st *applyStats) {
	_, wrote, err := mutateIf(ctx, s.store.Drivers, dc.ID, func(cur *schemas.Driver) *schemas.Driver {
		if cur.State != dc.From || cur.WorkerID != dc.FromWorker {
			return nil
		}
		n := *cur
		n.State, n.WorkerID, n.Message, n.UpdatedAt = dc.To, dc.WorkerID, dc.Message, now
		if dc.PID > 0 || dc.WorkerID == "" {
			n.PID = dc.PID
		}
		return &n
	})
	if s.noteWrite(log, "driver", dc.ID, err, t) || !wrote {
		return
	}
	if dc.To == schemas.DriverSubmitted {
		st.relaunched++
	}
	bus.Emit(s.cfg.NC, "driver", dc.ID, string(dc.To), dc.Message)
}

// noteWrite logs and tallies a failed write; it reports whether err was one.
func (s *Service) noteWrite(log zerolog.Logger, kind, id string, err error, t *tally) bool {
	if err == nil {
		return false
	}
	if !errors.Is(err, context.Canceled) {
		log.Warn().Err(err).Str("kind", kind).Str("id", id).Msg("cannot write recovery outcome")
		t.fail(fmt.Errorf("%s %s: %w", kind, id, err))
	}
	return true
}

// sendKills tells agents to kill what the cluster already replaced. A kill
// that is not acknowledged is logged: the agent's next state report or
// registration meets the same verdict.
func (s *Service) sendKills(ctx context.Context, log zerolog.Logger, kills []KillCommand) {
	if len(kills) == 0 {
		return
	}
	kctx, cancel := context.WithTimeout(ctx, s.cfg.RecoveryTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, k := range kills {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer keepGoing(log)
			kill := k.Kill
			if err := bus.Call(kctx, s.cfg.NC, bus.WorkerCmdKillSubject(k.WorkerID), &kill, new(schemas.Ack)); err != nil {
				log.Warn().Err(err).Str("worker_id", k.WorkerID).Str("reason", k.Kill.Reason).Msg("kill not acknowledged")
				return
			}
			log.Info().Str("worker_id", k.WorkerID).Str("reason", k.Kill.Reason).Msg("killed a process the cluster replaced")
		}()
	}
	wg.Wait()
}
