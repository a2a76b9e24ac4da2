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
	if errors.Is(err, errNotOurs) {
		log.Info().Msg("recovery handed over: the claim is no longer ours")
		return
	}
	if err != nil && rs.snap != nil {
		s.safeRevert(ctx, log, ei.epoch, rs)
	}
	msg := summary
	if err != nil {
		log.Error().Err(err).Msg("recovery failed; declaring the cluster ALIVE: what it marked is restored, and whatever it left UNKNOWN the heartbeat service judges")
		msg = fmt.Sprintf("recovery for epoch %d failed: %v; cluster declared ALIVE with what was reconciled (records left UNKNOWN are judged by their heartbeats)", ei.epoch, err)
		if summary != "" {
			msg += " (" + summary + ")"
		}
	}
	// Retried while the bus answers with transient errors (a heal's 500s
	// must not leave the epoch RECOVERING for another instance to take over
	// and recover again, issue 16 item 9), for up to the stale-claim time.
	var wrote bool
	dctx, cancel := context.WithTimeout(ctx, s.cfg.StaleClaim)
	ferr := bus.RetryTransient(dctx, s.cfg.RecoveryTimeout, func(fctx context.Context) error {
		var err error
		_, wrote, err = s.casCluster(fctx, func(cur *schemas.Cluster) *schemas.Cluster {
			if cur == nil || cur.Epoch != ei.epoch || cur.State != schemas.ClusterRecovering || cur.Recoverer != s.cfg.ID {
				return nil // a newer epoch, or another instance took the claim over
			}
			n := *cur
			n.State, n.Since, n.Message = schemas.ClusterAlive, time.Now().UTC(), msg
			return &n
		})
		return err
	})
	cancel()
	switch {
	case ferr != nil:
		// Left RECOVERING: the stale-claim takeover finishes it.
		if ctx.Err() == nil {
			log.Error().Err(ferr).Msg("cannot declare the cluster ALIVE")
		}
	case wrote:
		bus.EmitEpoch(s.cfg.NC, ei.epoch, "cluster", fmt.Sprint(ei.epoch), string(schemas.ClusterAlive), msg)
		log.Info().Dur("took", time.Since(start)).Str("summary", msg).Msg("cluster ALIVE")
	default:
		log.Info().Msg("epoch no longer ours to complete")
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
// Each phase has its own time (issue 16 item 2: one deadline for the whole
// run let slow writes eat the time agents had to answer, and silence was
// then taken for death): load is retried for as long as the bus answers
// with transient errors (see loadRetrying), marking and applying
// get one each, with every write retried while the bus answers with
// transient errors, and asking gets a full recovery timeout from its own
// start, whatever the writes before it took. Before each phase the claim
// is renewed, so a slow recovery is not taken over as a dead one; a claim
// that is no longer ours ends the run.
func (s *Service) steps(ctx context.Context, log zerolog.Logger, ei epochInfo, rs *runState) (string, error) {
	start := time.Now()
	var t tally

	s.hook("load")
	snap, err := s.loadRetrying(ctx, log, ei, &t)
	if err != nil {
		return t.String(), fmt.Errorf("load: %w", err)
	}

	if err := s.renewClaim(ctx, log, ei); err != nil {
		return "", err
	}
	s.hook("mark")
	rs.snap = &snap
	mctx, cancel := context.WithTimeout(ctx, s.cfg.RecoveryTimeout)
	s.mark(mctx, log, &snap, rs, &t)
	cancel()
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	workers, apps := toAsk(snap)

	if err := s.renewClaim(ctx, log, ei); err != nil {
		return "", err
	}
	s.hook("ask")
	reports, acks := s.ask(ctx, log, ei, workers, apps, time.Now().Add(s.cfg.RecoveryTimeout))
	if ctx.Err() != nil {
		return "", ctx.Err()
	}

	s.hook("reconcile")
	res := Reconcile(snap, reports, acks)

	if err := s.renewClaim(ctx, log, ei); err != nil {
		return "", err
	}
	s.hook("apply")
	actx, cancel := context.WithTimeout(ctx, s.cfg.RecoveryTimeout)
	st := s.apply(actx, log, ei.epoch, res, &t)
	cancel()
	if ctx.Err() != nil {
		return "", ctx.Err()
	}

	var unknownW, unknownA int
	for id, w := range snap.Workers {
		if w.State == schemas.WorkerUnknown && reports[id] == nil {
			unknownW++
		}
	}
	for id, a := range snap.Apps {
		if a.State == schemas.AppUnknown && !acks[id] {
			unknownA++
		}
	}
	// Counts are of what the snapshot held when recovery began: a worker
	// that registers meanwhile (the second agent of a starting cluster) is
	// ALIVE already and is not asked, so the count says "known".
	summary := fmt.Sprintf("epoch %d recovered in %s: %d/%d workers known at its start answered, %d/%d apps answered, %d executors lost, %d drivers relaunched, %d kills",
		ei.epoch, time.Since(start).Round(time.Millisecond), len(reports), len(workers), len(acks), len(apps),
		st.lost, st.relaunched, len(res.Kills))
	if unknownW+unknownA > 0 {
		summary += fmt.Sprintf("; %d workers and %d apps did not answer and stay UNKNOWN until their heartbeats decide (ALIVE or DEAD, RUNNING or FINISHED)", unknownW, unknownA)
	}
	if notes := t.String(); notes != "" {
		summary += "; " + notes
	}
	return summary, nil
}

// toAsk lists the workers and apps to tell about the new epoch: those
// marked UNKNOWN, and those whose marking failed (still ALIVE, WAITING or
// RUNNING), so that every agent learns the epoch even when KV is slow
// (issue 16 item 3). Only UNKNOWN records are reconciled.
func toAsk(snap Snapshot) (workers, apps []string) {
	for _, id := range slices.Sorted(maps.Keys(snap.Workers)) {
		if st := snap.Workers[id].State; st == schemas.WorkerUnknown || st == schemas.WorkerAlive {
			workers = append(workers, id)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(snap.Apps)) {
		if st := snap.Apps[id].State; st == schemas.AppUnknown || !st.Terminal() {
			apps = append(apps, id)
		}
	}
	return workers, apps
}

// errNotOurs ends a run whose claim another instance took over or a newer
// epoch replaced.
var errNotOurs = errors.New("the epoch's claim is no longer this instance's")

// renewClaim moves the claim's time forward if it is still ours. A claim
// that is no longer ours is errNotOurs; a write that fails is only logged
// (the bus is slow: the run goes on, and may be taken over).
func (s *Service) renewClaim(ctx context.Context, log zerolog.Logger, ei epochInfo) error {
	ours := true
	err := bus.RetryTransient(ctx, s.cfg.RecoveryTimeout/2, func(ctx context.Context) error {
		ours = true
		_, _, err := s.casCluster(ctx, func(cur *schemas.Cluster) *schemas.Cluster {
			if cur == nil || cur.Epoch != ei.epoch || cur.State != schemas.ClusterRecovering || cur.Recoverer != s.cfg.ID {
				ours = false
				return nil
			}
			n := *cur
			n.Since = time.Now().UTC()
			return &n
		})
		return err
	})
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		log.Warn().Err(err).Msg("cannot renew the recovery claim; going on")
	case !ours:
		return errNotOurs
	}
	return nil
}

// loadRetrying is load, retried while the bus answers with transient
// errors, for as long as they last; the claim is renewed every recovery
// timeout meanwhile, so a long load is not taken for a dead recovery, and
// a claim taken over ends the run. The cluster stays RECOVERING, which
// schedules nothing, as nothing could be scheduled on buckets no one can
// read. A load that gave up (after two recovery timeouts, then 12 s)
// declared the cluster ALIVE with no agent asked, and executors an older
// epoch had created LAUNCHING, but never launched, stayed LAUNCHING for
// good (TestChaos_BusNodeKills: JetStream takes 4 to 9 s to elect a new
// leader for a stream whose leader's node died). Errors that are not
// transient (a missing bucket, a panic) still end the run at once.
func (s *Service) loadRetrying(ctx context.Context, log zerolog.Logger, ei epochInfo, t *tally) (Snapshot, error) {
	var snap Snapshot
	renewed, attempts := time.Now(), 0
	err := bus.RetryTransient(ctx, s.cfg.RecoveryTimeout, func(ctx context.Context) error {
		if time.Since(renewed) >= s.cfg.RecoveryTimeout {
			if err := s.renewClaim(ctx, log, ei); err != nil {
				return err
			}
			renewed = time.Now()
		}
		var err error
		if s.testLoadErr != nil {
			err = s.testLoadErr()
		}
		if err == nil {
			snap, err = s.load(ctx, ei.epoch, t)
		}
		if attempts++; err != nil && attempts%10 == 0 {
			log.Warn().Err(err).Int("attempts", attempts).
				Msg("cannot read the records yet; the cluster stays RECOVERING until the bus answers")
		}
		return err
	})
	return snap, err
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
