package heartbeat

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// AppSilentMessage is the message of an application finished because its
// driver stopped heartbeating.
const AppSilentMessage = "driver stopped heartbeating"

// applyApp folds one stoker-apps watch entry into the timers: a live
// application has a timer, an ended one has none.
func (s *Service) applyApp(e jetstream.KeyValueEntry) {
	id := e.Key()
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := decodeLocked[schemas.App](s, e, s.apps)
	if rec == nil {
		return
	}
	if rec.State.Terminal() {
		drop(s.apps, id)
		return
	}
	a := s.apps[id]
	if a == nil {
		// First sight: a full timeout from now.
		a = &appTimer{state: rec.State}
		s.apps[id] = a
		s.resetAppTimerLocked(id, a, s.cfg.WorkerTimeout)
		return
	}
	prev := a.state
	a.state = rec.State
	if prev == schemas.AppUnknown && rec.State != schemas.AppUnknown {
		// Recovered: the driver gets a full timeout again.
		s.resetAppTimerLocked(id, a, s.cfg.WorkerTimeout)
	}
}

// resetAppTimerLocked (re)arms the application's timer. Caller holds s.mu.
func (s *Service) resetAppTimerLocked(id string, a *appTimer, d time.Duration) {
	if s.stopped {
		return
	}
	a.arm(s.cfg.Clock, d, func(gen uint64) {
		s.g.Go(func(ctx context.Context) { s.expireApp(ctx, id, gen) })
	})
}

// expireApp finishes an application whose driver fell silent, unless it
// ended meanwhile or is in recovery (UNKNOWN: its timer is re-armed).
func (s *Service) expireApp(ctx context.Context, id string, gen uint64) {
	s.mu.Lock()
	a := s.apps[id]
	if s.stopped || a == nil || a.gen != gen {
		s.mu.Unlock()
		return
	}
	if a.state == schemas.AppUnknown && !s.settledLocked() {
		// In recovery: the recovery's call; looked at again soon, so an
		// app it left UNKNOWN is judged right after it ends.
		s.resetAppTimerLocked(id, a, s.cfg.HeartbeatInterval)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	rearm, written, err := s.finish(ctx, id, a, gen)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		s.log.Error().Err(err).Str("app_id", id).Msg("cannot finish silent app; retrying")
		rearm = true
	}
	if written {
		// Emitted whatever happened to the timer meanwhile: the record changed.
		bus.Emit(s.nc, "app", id, string(schemas.AppFinished), AppSilentMessage)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.apps[id] != a || a.gen != gen {
		return
	}
	if written {
		a.stop()
		delete(s.apps, id)
		s.log.Warn().Str("app_id", id).Msg("app FINISHED: " + AppSilentMessage)
		return
	}
	if rearm {
		s.resetAppTimerLocked(id, a, s.cfg.WorkerTimeout)
	}
}

// finish writes the application FINISHED if it is live and no heartbeat
// re-armed its deadline a (at gen); one in a running recovery (UNKNOWN)
// asks to re-arm instead, one a finished recovery left UNKNOWN is judged. written is true only if the write succeeded: a failed
// write is retried, never announced.
func (s *Service) finish(ctx context.Context, id string, a *appTimer, gen uint64) (rearm, written bool, err error) {
	_, written, err = bus.MutateIf(ctx, s.st.Apps, id, func(n *schemas.App) bool {
		rearm = false
		if n.State.Terminal() {
			return false
		}
		s.mu.Lock()
		reset := s.apps[id] != a || a.gen != gen
		inRecovery := n.State == schemas.AppUnknown && !s.settledLocked()
		s.mu.Unlock()
		if inRecovery {
			rearm = true
			return false
		}
		if reset {
			return false
		}
		finished, ok := n.State.Next(schemas.AppEvFinished)
		if !ok {
			return false
		}
		n.State, n.Message, n.UpdatedAt = finished, AppSilentMessage, s.cfg.Clock.Now().UTC()
		return true
	})
	return rearm, written, err
}

// handleAppHeartbeat is stoker.app.<appid>.heartbeat (publish, no answer).
func (s *Service) handleAppHeartbeat(_ context.Context, in bus.Inbound, req *schemas.AppHeartbeat) (any, error) {
	if err := bus.CheckSubjectID(in, "app", req.AppID); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// An app not seen yet gets its full timeout when the watcher brings it.
	a := s.apps[req.AppID]
	if a == nil {
		return nil, nil
	}
	s.resetAppTimerLocked(req.AppID, a, s.cfg.WorkerTimeout)
	if a.state == schemas.AppUnknown && s.settledLocked() && !a.reviving {
		a.reviving = true
		id := req.AppID
		s.g.Go(func(ctx context.Context) { s.revive(ctx, id, a) })
	}
	return nil, nil
}

// revive brings back an app a finished recovery left UNKNOWN whose driver
// is heartbeating: RUNNING if one of its executors holds resources,
// WAITING otherwise (the scheduler places more), as recovery would have
// had the driver's answer reached it.
func (s *Service) revive(ctx context.Context, id string, a *appTimer) {
	defer func() {
		s.mu.Lock()
		a.reviving = false
		s.mu.Unlock()
	}()
	var v *schemas.App
	err := bus.RetryTransient(ctx, s.cfg.WorkerTimeout/2, func(ctx context.Context) error {
		holds := false
		execs, err := bus.ListSkipping[schemas.Executor](ctx, s.st.Executors, s.poison.Report)
		if err != nil {
			return err
		}
		for _, x := range execs {
			if x.Value.AppID == id && x.Value.State.Holds() {
				holds = true
			}
		}
		var wrote bool
		v, wrote, err = bus.MutateIf(ctx, s.st.Apps, id, func(n *schemas.App) bool {
			ev := schemas.AppEvAnsweredWaiting
			if holds {
				ev = schemas.AppEvAnsweredRunning
			}
			to, ok := n.State.Next(ev)
			if !ok {
				return false
			}
			n.State, n.Message, n.UpdatedAt = to, "driver heartbeating after recovery", s.cfg.Clock.Now().UTC()
			return true
		})
		if err == nil && !wrote {
			v = nil
		}
		return err
	})
	switch {
	case err != nil && ctx.Err() == nil:
		s.log.Warn().Err(err).Str("app_id", id).Msg("cannot bring back an app left UNKNOWN; its next heartbeat tries again")
	case v != nil:
		bus.Emit(s.nc, "app", id, string(v.State), v.Message)
		s.log.Info().Str("app_id", id).Str("state", string(v.State)).Msg("app left UNKNOWN by recovery is heartbeating: back")
	}
}
