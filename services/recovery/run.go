package recovery

import (
	"context"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

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
	skipped   []string // poisoned records, "bucket/key"
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
		parts = append(parts, fmt.Sprintf("skipped %d poisoned record(s) (%s)", n, strings.Join(shown, ", ")))
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

// load reads every record. A poisoned record (undecodable, impossible, or
// holding resources on a worker with no record) is skipped, reported and
// noted, not fatal: one bad value must not stop the cluster from recovering,
// nor be acted upon.
func (s *Service) load(ctx context.Context, epoch uint64, t *tally) (Snapshot, error) {
	snap := Snapshot{Epoch: epoch}
	skip := func(p bus.Poison) {
		s.poison.Report(p)
		t.skip(p.Bucket + "/" + p.Key)
	}
	workers, err := bus.ListSkipping[schemas.Worker](ctx, s.store.Workers, skip)
	if err != nil {
		return snap, err
	}
	apps, err := bus.ListSkipping[schemas.App](ctx, s.store.Apps, skip)
	if err != nil {
		return snap, err
	}
	drivers, err := bus.ListSkipping[schemas.Driver](ctx, s.store.Drivers, skip)
	if err != nil {
		return snap, err
	}
	execs, err := bus.ListSkipping[schemas.Executor](ctx, s.store.Executors, skip)
	if err != nil {
		return snap, err
	}
	known := bus.KnownWorkers(workers)
	snap.Workers, snap.Apps = bus.Map(workers), bus.Map(apps)
	snap.Drivers = bus.Map(bus.DropUnplaced(bus.BucketDrivers, drivers, known, skip))
	snap.Executors = bus.Map(bus.DropUnplaced(bus.BucketExecutors, execs, known, skip))
	return snap, nil
}
