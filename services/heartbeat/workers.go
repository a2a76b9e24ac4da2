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

// applyCluster follows stoker-cluster/state: whether a recovery runs, and
// the epoch agents must be on.
func (s *Service) applyCluster(e jetstream.KeyValueEntry) {
	if e.Key() != bus.KeyClusterState {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	c := schemas.Cluster{}
	if bus.Deleted(e) || bus.DecodeRecord(e.Value(), &c) != nil {
		s.cluster = schemas.Cluster{}
		return
	}
	s.cluster = c
}

// settledLocked reports whether no recovery runs (the cluster is ALIVE for
// its epoch): what is still UNKNOWN then is this service's to judge.
// Caller holds s.mu.
func (s *Service) settledLocked() bool { return s.cluster.State == schemas.ClusterAlive }

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
// resetHeartbeatTimerLocked, forgetting a closed connection (a heartbeat or
// a new record came since). Caller holds s.mu.
func (s *Service) resetWorkerTimerLocked(wid string, w *workerTimer, d time.Duration) {
	w.closedAt = time.Time{}
	s.armWorkerTimerLocked(wid, w, d)
}

func (s *Service) armWorkerTimerLocked(wid string, w *workerTimer, d time.Duration) {
	if s.stopped {
		return
	}
	w.arm(s.cfg.Clock, d, func(gen uint64) {
		s.g.Go(func(ctx context.Context) { s.expireWorker(ctx, wid, gen) })
	})
}

// connClosed is bus.ConnClosed: an agent's connection closed. An ALIVE
// worker then gets DisconnectGrace instead of the rest of its timeout: a
// process that died never beats again, and one that reconnects beats at
// once, which resets the timer as usual. The user name in the event is the
// signed one of the agent's credential (its worker id), not the connection
// name the client picked.
func (s *Service) connClosed(c bus.Closed) {
	if c.Role != "agent" || c.User == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.workers[c.User]
	if w == nil || w.state != schemas.WorkerAlive || w.timer == nil || !w.closedAt.IsZero() {
		return
	}
	w.closedAt = s.cfg.Clock.Now()
	s.log.Info().Str("worker_id", c.User).Str("reason", c.Reason).Dur("grace", s.cfg.DisconnectGrace).
		Msg("agent connection closed; DEAD unless it beats within the grace")
	s.armWorkerTimerLocked(c.User, w, s.cfg.DisconnectGrace)
}

// expireWorker marks a silent worker DEAD. The write happens only if the
// record is still ALIVE with the instance the timer was armed for, was not
// updated within the timeout (a fresh re-registration), and no heartbeat
// reset the timer meanwhile; the compare-and-set settles races between
// heartbeat instances, so a worker dies exactly once.
func (s *Service) expireWorker(ctx context.Context, wid string, gen uint64) {
	s.mu.Lock()
	w := s.workers[wid]
	if s.stopped || w == nil || w.gen != gen || (w.state != schemas.WorkerAlive && w.state != schemas.WorkerUnknown) {
		s.mu.Unlock()
		return // stale timer, or a worker already gone
	}
	if w.state == schemas.WorkerUnknown && !s.settledLocked() {
		// In recovery: the recovery's call. Looked at again soon, so a
		// worker it left UNKNOWN is judged right after it ends.
		s.resetWorkerTimerLocked(wid, w, s.cfg.HeartbeatInterval)
		s.mu.Unlock()
		return
	}
	instance, closedAt := w.instance, w.closedAt
	s.mu.Unlock()

	reason := fmt.Sprintf("no heartbeat for %s", s.cfg.WorkerTimeout)
	if !closedAt.IsZero() {
		reason = fmt.Sprintf("connection closed and no heartbeat within %s", s.cfg.DisconnectGrace)
	}
	rearm, written, err := s.markDead(ctx, wid, w, gen, instance, closedAt, reason)
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

// markDead writes the worker DEAD if its record is still ALIVE (or UNKNOWN
// with no recovery running) with the
// instance the deadline w (at gen) was armed for, no heartbeat re-armed it,
// and the record is older than the timeout; a younger record (a fresh
// re-registration) asks to re-arm for the rest of it. After a closed
// connection (closedAt) the record must predate the close instead: one
// written since is a re-registration, which earns a full timeout. written
// is true only if the write succeeded: a failed write is retried, never
// announced.
func (s *Service) markDead(ctx context.Context, wid string, w *workerTimer, gen uint64, instance string, closedAt time.Time, reason string) (rearm time.Duration, written bool, err error) {
	timeout := s.cfg.WorkerTimeout
	_, written, err = bus.MutateIf(ctx, s.st.Workers, wid, func(n *schemas.Worker) bool {
		rearm = 0
		if n.Instance != instance {
			return false // the watcher brings the new record and its timer
		}
		ev := schemas.WorkerEvTimedOut
		if n.State == schemas.WorkerUnknown {
			ev = schemas.WorkerEvSilent // left UNKNOWN by a recovery, silent since
		}
		dead, ok := n.State.Next(ev)
		if !ok {
			return false // not ALIVE or UNKNOWN any more: likewise
		}
		s.mu.Lock()
		reset := s.workers[wid] != w || w.gen != gen
		recovering := n.State == schemas.WorkerUnknown && !s.settledLocked()
		s.mu.Unlock()
		if reset {
			return false // a heartbeat arrived while we were deciding
		}
		if recovering {
			// Marked UNKNOWN by a recovery still running, which this
			// service's own view may not show yet (its watch can lag or
			// stall while the bus heals): look again soon, as for a worker
			// known UNKNOWN, so that it is judged right after the recovery
			// ends. Without a re-arm nothing looked at it again until the
			// watch caught up (a worker UNKNOWN for 10.6 s in the
			// partition test).
			rearm = s.cfg.HeartbeatInterval
			return false
		}
		if !closedAt.IsZero() {
			if n.UpdatedAt.After(closedAt) {
				rearm = timeout
				return false
			}
		} else if age := s.cfg.Clock.Now().Sub(n.UpdatedAt); age < timeout {
			rearm = timeout - age
			return false
		}
		n.State, n.Reason, n.UpdatedAt = dead, reason, s.cfg.Clock.Now().UTC()
		return true
	})
	return rearm, written, err
}

// handleHeartbeat is stoker.worker.<wid>.heartbeat. It answers a heartbeat
// it accepted with a HeartbeatAck while it hears a quorum (the agent's proof
// of contact with the cluster), and one it did not with a Reregister.
func (s *Service) handleHeartbeat(ctx context.Context, in bus.Inbound, req *schemas.Heartbeat) (any, error) {
	wid := req.WorkerID
	if err := bus.CheckSubjectID(in, "worker", wid); err != nil {
		return nil, err
	}
	reason, behind := s.beat(wid, req.Instance, req.Epoch)
	if behind != "" {
		// Registration answers a duplicate registration with the epoch,
		// cheaply; the agent stops being behind.
		s.log.Info().Str("worker_id", wid).Str("agent_instance", req.Instance).Str("reason", behind).Msg("asking agent to re-register")
		return &schemas.Reregister{WorkerID: wid, Reason: behind}, nil
	}
	if reason == "" {
		if !s.quorumFresh() {
			return nil, nil
		}
		s.mu.Lock()
		epoch := s.cluster.Epoch
		s.mu.Unlock()
		return &schemas.HeartbeatAck{WorkerID: wid, Epoch: epoch}, nil
	}
	// The watcher may lag a registration that just happened: confirm with
	// KV before sending the agent back to register. Not here: heartbeats
	// are handled one at a time, and a KV read that takes seconds (a
	// partition, a heal) would hold every other worker's heartbeat back
	// until their timers fire and live workers are written DEAD. One
	// goroutine confirms in arrival order (replies keep the heartbeats'
	// order); when it is that far behind, a heartbeat goes unanswered (the
	// agent beats again).
	select {
	case s.confirmQ <- confirmJob{in: in, wid: wid, instance: req.Instance, reason: reason}:
	default:
		s.log.Warn().Str("worker_id", wid).Msg("too many heartbeats waiting for a KV read; this one is not answered")
	}
	return nil, nil
}

// confirmJob is one heartbeat whose "re-register" answer waits for KV.
type confirmJob struct {
	in                    bus.Inbound
	wid, instance, reason string
}

// confirmLoop answers, in order, the heartbeats that need a KV read.
func (s *Service) confirmLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-s.confirmQ:
			if rr := s.confirm(ctx, j); rr != nil {
				if err := bus.Reply(j.in, rr); err != nil {
					s.log.Debug().Err(err).Str("worker_id", j.wid).Msg("cannot answer heartbeat")
				}
			}
		}
	}
}

// confirm reads the worker's record: still ALIVE for the instance (the
// watcher lagged), its timer is reset and nothing is answered; otherwise
// the agent is told to register again.
func (s *Service) confirm(ctx context.Context, j confirmJob) *schemas.Reregister {
	gctx, cancel := context.WithTimeout(ctx, s.cfg.WorkerTimeout/2)
	defer cancel()
	cur, rev, err := bus.Get[schemas.Worker](gctx, s.st.Workers, j.wid)
	switch {
	case err != nil && !errors.Is(err, bus.ErrNotFound):
		s.log.Warn().Err(err).Str("worker_id", j.wid).Msg("cannot read worker record; no answer to heartbeat")
		return nil
	case err == nil && cur.State == schemas.WorkerAlive && cur.Instance == j.instance:
		s.mu.Lock()
		s.setWorkerLocked(j.wid, cur, rev)
		if w := s.workers[j.wid]; w != nil && w.state == schemas.WorkerAlive && w.instance == j.instance {
			s.resetWorkerTimerLocked(j.wid, w, s.cfg.WorkerTimeout)
		}
		s.mu.Unlock()
		return nil
	}
	s.log.Info().Str("worker_id", j.wid).Str("agent_instance", j.instance).Str("reason", j.reason).Msg("asking agent to re-register")
	return &schemas.Reregister{WorkerID: j.wid, Reason: j.reason}
}

// beat resets the worker's timer if the heartbeat comes from the instance
// the cluster knows as ALIVE (or if the worker is in a running recovery),
// and otherwise says why the agent must register again: reason when the
// record does not know it as ALIVE (confirmed with KV before answering),
// behind when the agent reports an epoch older than the one the cluster
// recovered, which registration's answer tells it (issue 16 item 3).
func (s *Service) beat(wid, instance string, epoch uint64) (reason, behind string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.workers[wid]
	switch {
	case w == nil:
		return fmt.Sprintf("worker %s is not registered", wid), ""
	case w.state == schemas.WorkerUnknown && !s.settledLocked():
		// A recovery runs and asks the agent itself.
		s.resetWorkerTimerLocked(wid, w, s.cfg.WorkerTimeout)
		return "", ""
	case w.state == schemas.WorkerUnknown:
		// The recovery that marked it is over without hearing it: it is
		// alive, and registration makes it ALIVE and reconciles it.
		s.resetWorkerTimerLocked(wid, w, s.cfg.WorkerTimeout)
		return fmt.Sprintf("worker %s was left UNKNOWN by the recovery of epoch %d", wid, s.cluster.Epoch), ""
	case w.state == schemas.WorkerDecommissioned && w.instance == instance:
		// Drained while this instance runs: it stays out until the agent
		// restarts; asking it to register again would make it ALIVE.
		return "", ""
	case w.state.Gone():
		return fmt.Sprintf("worker %s is %s", wid, w.state), ""
	case w.instance != instance:
		return fmt.Sprintf("worker %s is registered by another agent instance", wid), ""
	}
	s.resetWorkerTimerLocked(wid, w, s.cfg.WorkerTimeout)
	if epoch > 0 && s.settledLocked() && epoch < s.cluster.Epoch {
		return "", fmt.Sprintf("the agent is on epoch %d, the cluster on %d", epoch, s.cluster.Epoch)
	}
	return "", ""
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

// Quorum checks: how often, and how old the last good one may be for
// heartbeats to be acknowledged.
const (
	quorumEvery = 500 * time.Millisecond
	quorumFor   = 2 * time.Second
)

// quorumLoop checks, every quorumEvery, that the workers bucket's stream
// has a leader hearing a majority of its replicas (bus.StreamQuorum).
func (s *Service) quorumLoop(ctx context.Context) {
	for {
		cctx, cancel := context.WithTimeout(ctx, quorumFor/2)
		st, err := s.st.Workers.Status(cctx)
		cancel()
		if err == nil {
			if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil && bus.StreamQuorum(bs.StreamInfo()) == nil {
				s.quorumAt.Store(time.Now().UnixNano())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(quorumEvery):
		}
	}
}

// quorumFresh says the last quorum check that passed is recent.
func (s *Service) quorumFresh() bool {
	at := s.quorumAt.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < quorumFor
}
