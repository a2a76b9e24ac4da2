package heartbeat

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// applyWorker folds one stoker-workers watch entry into the timers.
func (s *Service) applyWorker(e jetstream.KeyValueEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rec := decodeLocked[schemas.Worker](s, e, s.workers); rec != nil {
		s.setWorkerLocked(e.Key(), rec, e.Revision())
	}
}

// setWorkerLocked records the worker's state and instance as of revision
// rev, arming or stopping its timer. Older revisions are ignored (a KV read
// made by a heartbeat may be ahead of the watcher). Caller holds s.mu.
func (s *Service) setWorkerLocked(wid string, rec *schemas.Worker, rev uint64) {
	w := s.workers[wid]
	if w == nil {
		w = &workerTimer{}
		s.workers[wid] = w
	}
	if rev <= w.rev {
		return
	}
	prevState, prevInstance := w.state, w.instance
	w.rev, w.state, w.instance = rev, rec.State, rec.Instance
	switch {
	case rec.State.Gone():
		w.stop()
	case w.timer == nil, prevState != rec.State, prevInstance != rec.Instance:
		// New, newly ALIVE (registration, recovery) or a restarted agent:
		// a full timeout before judgement.
		s.resetWorkerTimerLocked(wid, w, s.cfg.WorkerTimeout)
	}
}

// resetWorkerTimerLocked (re)arms the worker's timer for d, as Nomad's
// resetHeartbeatTimerLocked. Caller holds s.mu.
func (s *Service) resetWorkerTimerLocked(wid string, w *workerTimer, d time.Duration) {
	if s.stopped {
		return
	}
	w.arm(s.cfg.Clock, d, func(gen uint64) {
		s.g.Go(func(ctx context.Context) { s.expireWorker(ctx, wid, gen) })
	})
}

// expireWorker marks a silent worker DEAD. The write happens only if the
// record is still ALIVE with the instance the timer was armed for, was not
// updated within the timeout (a fresh re-registration), and no heartbeat
// reset the timer meanwhile; the compare-and-set settles races between
// heartbeat instances, so a worker dies exactly once.
func (s *Service) expireWorker(ctx context.Context, wid string, gen uint64) {
	s.mu.Lock()
	w := s.workers[wid]
	if s.stopped || w == nil || w.gen != gen || w.state != schemas.WorkerAlive {
		// Stale timer, or a worker in recovery (UNKNOWN): not ours to judge.
		s.mu.Unlock()
		return
	}
	instance := w.instance
	s.mu.Unlock()

	reason := fmt.Sprintf("no heartbeat for %s", s.cfg.WorkerTimeout)
	rearm, written, err := s.markDead(ctx, wid, w, gen, instance, reason)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		s.log.Error().Err(err).Str("worker_id", wid).Msg("cannot mark worker DEAD; retrying")
		rearm = s.cfg.HeartbeatInterval
	}
	if written {
		// Emitted whatever happened to the timer meanwhile: the record changed.
		bus.Emit(s.nc, "worker", wid, string(schemas.WorkerDead), reason)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.workers[wid] != w || w.gen != gen {
		return
	}
	if written {
		w.state = schemas.WorkerDead
		w.stop()
		s.log.Warn().Str("worker_id", wid).Str("agent_instance", instance).Str("reason", reason).Msg("worker DEAD")
		return
	}
	if rearm > 0 {
		s.resetWorkerTimerLocked(wid, w, rearm)
	}
}

// markDead writes the worker DEAD if its record is still ALIVE with the
// instance the deadline w (at gen) was armed for, no heartbeat re-armed it,
// and the record is older than the timeout; a younger record (a fresh
// re-registration) asks to re-arm for the rest of it. written is true only
// if the write succeeded: a failed write is retried, never announced.
func (s *Service) markDead(ctx context.Context, wid string, w *workerTimer, gen uint64, instance, reason string) (rearm time.Duration, written bool, err error) {
	timeout := s.cfg.WorkerTimeout
	_, written, err = bus.MutateIf(ctx, s.st.Workers, wid, func(n *schemas.Worker) bool {
		rearm = 0
		if n.Instance != instance {
			return false // the watcher brings the new record and its timer
		}
		dead, ok := n.State.Next(schemas.WorkerEvTimedOut)
		if !ok {
			return false // not ALIVE any more: likewise
		}
		s.mu.Lock()
		reset := s.workers[wid] != w || w.gen != gen
		s.mu.Unlock()
		if reset {
			return false // a heartbeat arrived while we were deciding
		}
		if age := s.cfg.Clock.Now().Sub(n.UpdatedAt); age < timeout {
			rearm = timeout - age
			return false
		}
		n.State, n.Reason, n.UpdatedAt = dead, reason, s.cfg.Clock.Now().UTC()
		return true
	})
	return rearm, written, err
}

// handleHeartbeat is stoker.worker.<wid>.heartbeat. It answers only to ask
// the agent to register again.
func (s *Service) handleHeartbeat(ctx context.Context, in bus.Inbound, req *schemas.Heartbeat) (any, error) {
	wid := req.WorkerID
	if err := bus.CheckSubjectID(in, "worker", wid); err != nil {
		return nil, err
	}
	reason := s.beat(wid, req.Instance)
	if reason == "" {
		return nil, nil
	}
	// The watcher may lag a registration that just happened: confirm with
	// KV before sending the agent back to register.
	cur, rev, err := bus.Get[schemas.Worker](ctx, s.st.Workers, wid)
	switch {
	case err != nil && !errors.Is(err, bus.ErrNotFound):
		s.log.Warn().Err(err).Str("worker_id", wid).Msg("cannot read worker record; no answer to heartbeat")
		return nil, nil
	case err == nil && cur.State == schemas.WorkerAlive && cur.Instance == req.Instance:
		s.mu.Lock()
		s.setWorkerLocked(wid, cur, rev)
		if w := s.workers[wid]; w != nil && w.state == schemas.WorkerAlive && w.instance == req.Instance {
			s.resetWorkerTimerLocked(wid, w, s.cfg.WorkerTimeout)
		}
		s.mu.Unlock()
		return nil, nil
	}
	s.log.Info().Str("worker_id", wid).Str("agent_instance", req.Instance).Str("reason", reason).Msg("asking agent to re-register")
	return &schemas.Reregister{WorkerID: wid, Reason: reason}, nil
}

// beat resets the worker's timer if the heartbeat comes from the instance
// the cluster knows as ALIVE (or if the worker is in recovery), and
// otherwise says why the agent must register again.
func (s *Service) beat(wid, instance string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.workers[wid]
	switch {
	case w == nil:
		return fmt.Sprintf("worker %s is not registered", wid)
	case w.state == schemas.WorkerUnknown:
		// Recovery is in progress and will ask the agent itself.
		s.resetWorkerTimerLocked(wid, w, s.cfg.WorkerTimeout)
		return ""
	case w.state.Gone():
		return fmt.Sprintf("worker %s is %s", wid, w.state)
	case w.instance != instance:
		return fmt.Sprintf("worker %s is registered by another agent instance", wid)
	}
	s.resetWorkerTimerLocked(wid, w, s.cfg.WorkerTimeout)
	return ""
}

// rearmAll gives every judged worker and application a full timeout again.
// It runs after this service reconnects to NATS: heartbeats sent while it
// was cut off never reached it, which is no fault of the workers (the same
// reason Nomad resets every heartbeat timer on a leadership change). KV
// revisions are forgotten too, since a bus that lost its store starts them
// again from 1.
func (s *Service) rearmAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	for wid, w := range s.workers {
		w.rev = 0
		if w.timer != nil && !w.state.Gone() {
			s.resetWorkerTimerLocked(wid, w, s.cfg.WorkerTimeout)
		}
	}
	for id, a := range s.apps {
		if a.timer != nil && !a.state.Terminal() {
			s.resetAppTimerLocked(id, a, s.cfg.WorkerTimeout)
		}
	}
	s.log.Info().Int("workers", len(s.workers)).Int("apps", len(s.apps)).Msg("reconnected: every worker and app gets a full timeout")
}
