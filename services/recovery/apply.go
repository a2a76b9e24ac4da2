package recovery

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

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
			if rep := s.askWorker(actx, log, wid, mc); rep != nil {
				mu.Lock()
				reports[wid] = rep
				mu.Unlock()
			}
		}()
	}
	for _, id := range apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer keepGoing(log)
			if s.askDriver(actx, log, id, mc) {
				mu.Lock()
				acks[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return reports, acks
}

// askWorker is one agent's answer to the new master, nil if none (silent,
// or answering under another id).
func (s *Service) askWorker(ctx context.Context, log zerolog.Logger, wid string, mc schemas.MasterChanged) *schemas.WorkerReport {
	rep := new(schemas.WorkerReport)
	err := callRetrying(ctx, func(ctx context.Context) error {
		return bus.Call(ctx, s.cfg.NC, bus.WorkerCmdMasterSubject(wid), &mc, rep)
	})
	if err != nil {
		log.Info().Err(err).Str("worker_id", wid).Msg("worker did not answer recovery")
		return nil
	}
	if rep.WorkerID != wid {
		log.Warn().Str("worker_id", wid).Str("answered_as", rep.WorkerID).Msg("worker answered recovery under another id; ignored")
		return nil
	}
	return rep
}

// askDriver reports whether an app's driver acknowledged the new master.
// A driver that refuses it counts as silent.
func (s *Service) askDriver(ctx context.Context, log zerolog.Logger, appID string, mc schemas.MasterChanged) bool {
	err := callRetrying(ctx, func(ctx context.Context) error {
		_, err := bus.CallAck(ctx, s.cfg.NC, bus.AppMasterSubject(appID), &mc)
		return err
	})
	if err != nil {
		log.Info().Err(err).Str("app_id", appID).Msg("driver did not answer recovery")
		return false
	}
	return true
}

// keepGoing turns a panic in a helper goroutine into a log line: that one
// answer is lost (the worker or app counts as silent), recovery goes on.
func keepGoing(log zerolog.Logger) {
	if r := recover(); r != nil {
		log.Error().Interface("panic", r).Bytes("stack", debug.Stack()).Msg("recovery helper panicked")
	}
}

// callRetrying calls again while nobody subscribes (an agent reconnecting)
// until ctx ends; any other error is final.
func callRetrying(ctx context.Context, call func(context.Context) error) error {
	for {
		err := call(ctx)
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
		wrote, err := mutateIf(ctx, s.perWrite(), s.store.Workers, wc.ID, func(n *schemas.Worker) bool {
			if n.State != wc.From {
				return false // re-registered (or otherwise moved on) meanwhile: leave it
			}
			n.State, n.Epoch, n.Reason, n.UpdatedAt = wc.To, epoch, wc.Reason, now
			return true
		})
		if s.noteWrite(log, "worker", wc.ID, err, t) {
			continue
		}
		if !wrote {
			log.Info().Str("worker_id", wc.ID).Msg("worker moved on during recovery (re-registered?); left as it is")
			continue
		}
		bus.EmitEpoch(s.cfg.NC, epoch, "worker", wc.ID, string(wc.To), wc.Reason)
		for _, ec := range wc.Executors {
			s.applyExecutor(ctx, log, epoch, ec, now, t, &st)
		}
		for _, dc := range wc.Drivers {
			s.applyDriver(ctx, log, epoch, dc, now, t, &st)
		}
	}
	for _, ec := range res.Executors {
		s.applyExecutor(ctx, log, epoch, ec, now, t, &st)
	}
	for _, dc := range res.Drivers {
		s.applyDriver(ctx, log, epoch, dc, now, t, &st)
	}
	// Every app answered moves back (UNKNOWN → RUNNING): up to
	// moveParallel writes at once, not one round trip after another.
	var wg sync.WaitGroup
	sem := make(chan struct{}, moveParallel)
	for _, ac := range res.Apps {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			wrote, err := mutateIf(ctx, s.perWrite(), s.store.Apps, ac.ID, func(n *schemas.App) bool {
				if n.State != ac.From {
					return false
				}
				n.State, n.Message, n.UpdatedAt = ac.To, ac.Message, now
				return true
			})
			if !s.noteWrite(log, "app", ac.ID, err, t) && wrote {
				bus.EmitEpoch(s.cfg.NC, epoch, "app", ac.ID, string(ac.To), ac.Message)
			}
		}()
	}
	wg.Wait()
	s.sendKills(ctx, log, res.Kills)
	return st
}

func (s *Service) applyExecutor(ctx context.Context, log zerolog.Logger, epoch uint64, ec ExecutorChange, now time.Time, t *tally, st *applyStats) {
	wrote, err := mutateIf(ctx, s.perWrite(), s.store.Executors, ec.Key, func(n *schemas.Executor) bool {
		if n.State != ec.From || n.WorkerID != ec.WorkerID {
			return false // an agent's state report got there first
		}
		n.State, n.Message, n.UpdatedAt = ec.To, ec.Message, now
		if ec.PID > 0 {
			n.PID = ec.PID
		}
		return true
	})
	if s.noteWrite(log, "executor", ec.Key, err, t) || !wrote {
		return
	}
	if ec.To == schemas.ExecutorLost {
		st.lost++
	}
	bus.EmitEpoch(s.cfg.NC, epoch, "executor", ec.Key, string(ec.To), ec.Message)
}

func (s *Service) applyDriver(ctx context.Context, log zerolog.Logger, epoch uint64, dc DriverChange, now time.Time, t *tally, st *applyStats) {
	wrote, err := mutateIf(ctx, s.perWrite(), s.store.Drivers, dc.ID, func(n *schemas.Driver) bool {
		if n.State != dc.From || n.WorkerID != dc.FromWorker {
			return false
		}
		n.State, n.WorkerID, n.Message, n.UpdatedAt = dc.To, dc.WorkerID, dc.Message, now
		if dc.PID > 0 || dc.WorkerID == "" {
			n.PID = dc.PID
		}
		return true
	})
	if s.noteWrite(log, "driver", dc.ID, err, t) || !wrote {
		return
	}
	if dc.To == schemas.DriverSubmitted {
		st.relaunched++
	}
	bus.EmitEpoch(s.cfg.NC, epoch, "driver", dc.ID, string(dc.To), dc.Message)
}

// mutateIf is bus.MutateIf retried while the bus answers with transient
// errors, each attempt bounded by per. A write that timed out but landed
// is found by the retry's guard (the record is no longer in the state it
// expects), so wrote is then false though the change is in KV.
func mutateIf[T any](ctx context.Context, per time.Duration, kv jetstream.KeyValue, key string, fn func(*T) bool) (wrote bool, err error) {
	_, wrote, err = bus.MutateIfRetrying(ctx, per, kv, key, fn)
	return wrote, err
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

// sendKills tells agents to kill what the cluster already replaced, each
// agent's kills as KillExecutors commands (bus.SendKills), the agents at
// once. A kill that is not acknowledged is logged: the agent's next state
// report or registration meets the same verdict.
func (s *Service) sendKills(ctx context.Context, log zerolog.Logger, kills []KillCommand) {
	if len(kills) == 0 {
		return
	}
	kctx, cancel := context.WithTimeout(ctx, s.cfg.RecoveryTimeout)
	defer cancel()
	byWorker := map[string][]KillCommand{}
	for _, k := range kills {
		byWorker[k.WorkerID] = append(byWorker[k.WorkerID], k)
	}
	var wg sync.WaitGroup
	for wid, ks := range byWorker {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer keepGoing(log)
			sent := make([]schemas.Kill, len(ks))
			for i, k := range ks {
				sent[i] = k.Kill
			}
			for i, err := range bus.SendKills(kctx, s.cfg.NC, wid, sent, s.cfg.RecoveryTimeout) {
				k := ks[i]
				switch {
				case errors.Is(err, bus.ErrRefused):
					// It ended meanwhile, or the agent never had it: nothing runs.
					log.Warn().Err(err).Str("worker_id", k.WorkerID).Str("reason", k.Kill.Reason).Msg("kill refused by the agent")
				case err != nil:
					log.Warn().Err(err).Str("worker_id", k.WorkerID).Str("reason", k.Kill.Reason).Msg("kill not acknowledged")
				default:
					log.Info().Str("worker_id", k.WorkerID).Str("reason", k.Kill.Reason).Msg("killed a process the cluster replaced")
				}
			}
		}()
	}
	wg.Wait()
}
