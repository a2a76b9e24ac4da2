package registration

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// handleRegister is stoker.worker.<wid>.register.
//
// Registration is the one place that hears a restarted agent's list of what
// it still runs, so it reconciles that worker there and then (docs/contract.md,
// "who writes what"), through the same rules as the scheduler and recovery:
// listed LAUNCHING executors are RUNNING, processes the cluster no longer
// wants are returned for the agent to kill, and, for a new agent instance,
// what the records place on the worker but the agent did not list is lost.
func (s *Service) handleRegister(ctx context.Context, in bus.Inbound, req *schemas.RegisterWorker) (any, error) {
	wid := req.WorkerID
	if err := bus.CheckSubjectID(in, "worker", wid); err != nil {
		return nil, err
	}
	epoch, err := s.currentEpoch(ctx)
	if err != nil {
		return nil, fmt.Errorf("read cluster state: %w", err)
	}
	// What the records place on the worker, read before it is ALIVE again:
	// an executor the scheduler places after the ALIVE write is not in this
	// picture, so it cannot be taken for one the agent dropped (issue 11 a).
	// A duplicate (the same instance, still ALIVE: a reconnect) ends
	// nothing, so it costs no read of the buckets.
	var (
		onIt placed
		perr error
	)
	if !s.looksDuplicate(ctx, req) {
		onIt, perr = s.placedOn(ctx, wid)
	}
	reg, err := s.writeAlive(ctx, req, epoch)
	if reg.heldBy != nil {
		s.log.Warn().Str("worker_id", wid).Str("agent_instance", req.Instance).
			Str("holder", reg.heldBy.Instance).Msg("refused the registration of a replaced agent instance")
		return nil, bus.Errorf(bus.CodeConflict, "a newer agent instance %s registered worker %s", reg.heldBy, wid)
	}
	if err != nil {
		return nil, fmt.Errorf("register worker %s: %w", wid, err)
	}
	if reg.duplicate {
		onIt = placed{} // its list may predate a launch in flight: end nothing on its word
	}
	log := s.log.With().Str("worker_id", wid).Str("agent_instance", req.Instance).Logger()
	switch {
	case reg.decommissioned:
		log.Info().Msg("registration of a DECOMMISSIONED worker's same agent instance acknowledged; it stays DECOMMISSIONED until the agent restarts")
	case reg.duplicate:
		log.Debug().Msg("duplicate registration acknowledged")
	case reg.replaced == "":
		s.emit("worker", wid, string(schemas.WorkerAlive), "registered")
	case reg.replaced == schemas.WorkerAlive:
		s.emit("worker", wid, string(schemas.WorkerAlive),
			fmt.Sprintf("agent restarted (instance %s replaces %s)", req.Instance, reg.previous))
	default:
		s.emit("worker", wid, string(schemas.WorkerAlive), fmt.Sprintf("re-registered (was %s)", reg.replaced))
	}

	killExec, killDrv, err := s.reconcile(ctx, req, onIt, perr)
	if err != nil {
		// The registration itself stands; the agent will be reconciled
		// again by recovery or its next registration.
		log.Error().Err(err).Msg("reconcile registration")
	}
	return &schemas.WorkerRegistered{
		WorkerID: wid, Duplicate: reg.duplicate, Decommissioned: reg.decommissioned, Replaced: reg.replaced,
		HeartbeatIntervalMS: s.heartbeatMS(), Epoch: epoch,
		KillExecutors: killExec, KillDrivers: killDrv,
	}, nil
}

// registration is what writing the worker ALIVE found.
type registered struct {
	duplicate bool // the same instance, already ALIVE: nothing written
	// decommissioned: the same instance, DECOMMISSIONED (drained while it
	// runs): nothing written, answered as a duplicate.
	decommissioned bool
	replaced       schemas.WorkerState // the state it replaced ("" for a new worker)
	previous       string              // the agent instance it replaced
	// heldBy, when set, refused the registration: the ALIVE record's
	// instance is newer than the registering one, which was replaced.
	heldBy *schemas.AgentPresence
}

// replacedInstance returns the holder when cur, ALIVE for another agent
// instance, started after req's: one worker id is one live agent, and of
// two, the newer one (which found no live instance answering its ping when
// it started) keeps the id. Records or requests without a start time are
// never refused (agents from before the rule).
func replacedInstance(cur *schemas.Worker, req *schemas.RegisterWorker) *schemas.AgentPresence {
	if cur == nil || cur.State != schemas.WorkerAlive || cur.Instance == req.Instance ||
		cur.Since.IsZero() || req.Since.IsZero() {
		return nil
	}
	holder := &schemas.AgentPresence{WorkerID: cur.ID, Instance: cur.Instance, Host: cur.Host, PID: cur.PID, Since: cur.Since}
	mine := &schemas.AgentPresence{Instance: req.Instance, Since: req.Since}
	if mine.OlderThan(holder) {
		return holder
	}
	return nil
}

// looksDuplicate reports whether the worker's record is already ALIVE for
// req's agent instance (writeAlive decides; a read error is not a duplicate).
func (s *Service) looksDuplicate(ctx context.Context, req *schemas.RegisterWorker) bool {
	cur, _, err := bus.Get[schemas.Worker](ctx, s.st.Workers, req.WorkerID)
	return err == nil && (cur.State == schemas.WorkerAlive || cur.State == schemas.WorkerDecommissioned) && cur.Instance == req.Instance
}

func (s *Service) writeAlive(ctx context.Context, req *schemas.RegisterWorker, epoch uint64) (registered, error) {
	var reg registered
	t := now()
	_, _, err := bus.Mutate(ctx, s.st.Workers, req.WorkerID, func(cur *schemas.Worker) (*schemas.Worker, error) {
		reg = registered{}
		if reg.heldBy = replacedInstance(cur, req); reg.heldBy != nil {
			return nil, errHeld
		}
		if cur != nil {
			if cur.State == schemas.WorkerAlive && cur.Instance == req.Instance {
				reg.duplicate = true
				return nil, nil
			}
			if cur.State == schemas.WorkerDecommissioned && cur.Instance == req.Instance {
				// Drained (or left) while this instance runs: it stays out
				// until the agent restarts (a new instance). Its reconnects
				// and re-registrations are acknowledged, never written ALIVE.
				reg.duplicate, reg.decommissioned = true, true
				return nil, nil
			}
			reg.replaced, reg.previous = cur.State, cur.Instance
		}
		cordoned := cur != nil && cur.Cordoned // the operator's: kept across registrations
		var drain *schemas.Drain
		if cur != nil && cur.State != schemas.WorkerDecommissioned {
			// A drain in progress goes on through an agent restart or a
			// re-registration; a restart after the worker was
			// DECOMMISSIONED is a fresh worker.
			drain = cur.Drain
		}
		return &schemas.Worker{
			ID: req.WorkerID, Instance: req.Instance, Host: req.Host,
			Cores: req.Cores, MemoryMB: req.MemoryMB, State: schemas.WorkerAlive,
			RegisteredAt: t, UpdatedAt: t, Epoch: epoch, PID: req.PID, Since: req.Since, WorkDir: req.WorkDir,
			Resources: req.Resources, Labels: req.Labels, Cordoned: cordoned, Drain: drain,
		}, nil
	})
	if errors.Is(err, errHeld) {
		err = nil
	}
	return reg, err
}

// errHeld ends writeAlive's mutation without a write (reg.heldBy says why).
var errHeld = errors.New("worker id held by a newer agent instance")

// placed is what the records put on one worker, as read before the
// registration's write. Unread (read false), nothing is ended.
type placed struct {
	read      bool
	executors map[string]*schemas.Executor // by key
	drivers   map[string]*schemas.Driver   // by id
}

func (s *Service) placedOn(ctx context.Context, wid string) (placed, error) {
	return s.idx.placedOn(ctx, wid)
}

// reconcile compares what the agent says it runs with KV, in four phases
// whose errors are all returned (joined). Listed processes the cluster no
// longer wants are returned for the agent to kill; when p was read (not a
// duplicate registration), what p placed on the worker that the agent did
// not list is lost, since a restarted agent no longer runs it. placedErr is
// the error reading p, if any: then nothing is ended.
func (s *Service) reconcile(ctx context.Context, req *schemas.RegisterWorker, p placed, placedErr error) (killExec, killDrv []string, err error) {
	killExec, execErr := s.adoptListedExecutors(ctx, req.WorkerID, req.Executors)
	killDrv, drvErr := s.checkListedDrivers(ctx, req.WorkerID, req.Drivers)
	errs := []error{execErr, drvErr, placedErr}
	if p.read && placedErr == nil {
		errs = append(errs,
			s.loseUnlistedExecutors(ctx, req.WorkerID, p.executors, req.Executors),
			s.loseUnlistedDrivers(ctx, req.WorkerID, p.drivers, req.Drivers))
	}
	return killExec, killDrv, errors.Join(errs...)
}

// adoptListedExecutors: a listed executor recorded LAUNCHING on this worker
// is RUNNING; one unknown, placed elsewhere or ended is to be killed.
func (s *Service) adoptListedExecutors(ctx context.Context, wid string, listed []schemas.RunningExecutor) (kill []string, err error) {
	byKey := map[string]schemas.RunningExecutor{}
	for _, e := range listed {
		byKey[schemas.ExecutorKey(e.AppID, e.ExecutorID)] = e
	}
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(byKey)) {
		re := byKey[key]
		if _, _, perr := schemas.ParseExecutorKey(key); perr != nil {
			kill = append(kill, key)
			continue
		}
		refused := true // stays so if the record is absent
		_, promoted, merr := bus.MutateIf(ctx, s.st.Executors, key, func(x *schemas.Executor) bool {
			to, ok := x.State.Next(schemas.ExecutorEvRunning)
			if refused = x.WorkerID != wid || !ok; refused || to == x.State {
				return false
			}
			x.State, x.UpdatedAt = to, now()
			if re.PID != 0 {
				x.PID = re.PID
			}
			return true
		})
		switch {
		case merr != nil:
			errs = append(errs, fmt.Errorf("executor %s: %w", key, merr))
		case refused:
			kill = append(kill, key)
		case promoted:
			s.emit("executor", key, string(schemas.ExecutorRunning), "reported running at registration of "+wid)
			s.resetFailures(ctx, re.AppID, re.ExecutorID)
		}
	}
	return kill, errors.Join(errs...)
}

// checkListedDrivers: a listed driver that is unknown, placed elsewhere,
// waiting to be placed or ended is to be killed.
func (s *Service) checkListedDrivers(ctx context.Context, wid string, listed []schemas.RunningDriver) (kill []string, err error) {
	ids := make([]string, 0, len(listed))
	for _, d := range listed {
		ids = append(ids, d.DriverID)
	}
	sort.Strings(ids)
	var errs []error
	for _, id := range ids {
		if schemas.ValidDriverID(id) != nil {
			kill = append(kill, id)
			continue
		}
		cur, _, gerr := bus.Get[schemas.Driver](ctx, s.st.Drivers, id)
		if gerr != nil && !isNotFound(gerr) {
			errs = append(errs, fmt.Errorf("driver %s: %w", id, gerr))
			continue
		}
		if cur == nil || cur.WorkerID != wid {
			kill = append(kill, id)
			continue
		}
		if _, ok := cur.State.Next(schemas.DriverEvRunning); !ok {
			kill = append(kill, id)
		}
	}
	return kill, errors.Join(errs...)
}

// loseUnlistedExecutors: executors recorded as holding resources on the
// worker that the agent did not list are LOST.
func (s *Service) loseUnlistedExecutors(ctx context.Context, wid string, recorded map[string]*schemas.Executor, listed []schemas.RunningExecutor) error {
	msg := fmt.Sprintf("worker %s re-registered without it", wid)
	var errs []error
	for _, key := range schemas.UnreportedExecutors(wid, recorded, listed) {
		_, lost, err := bus.MutateIf(ctx, s.st.Executors, key, func(x *schemas.Executor) bool {
			to, ok := x.State.Next(schemas.ExecutorEvLost)
			if x.WorkerID != wid || !ok {
				return false
			}
			x.State, x.Message, x.UpdatedAt = to, msg, now()
			return true
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("executor %s: %w", key, err))
			continue
		}
		if lost {
			s.emit("executor", key, string(schemas.ExecutorLost), msg)
		}
	}
	return errors.Join(errs...)
}

// loseUnlistedDrivers: drivers recorded as holding resources on the worker
// that the agent did not list meet the lost-driver rule (schemas.LoseDriver).
func (s *Service) loseUnlistedDrivers(ctx context.Context, wid string, recorded map[string]*schemas.Driver, listed []schemas.RunningDriver) error {
	named := map[string]bool{}
	for _, d := range listed {
		named[d.DriverID] = true
	}
	why := fmt.Sprintf("worker %s re-registered without it", wid)
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(recorded)) {
		if d := recorded[id]; named[id] || !d.State.Holds() {
			continue
		}
		v, lost, err := bus.MutateIf(ctx, s.st.Drivers, id, func(d *schemas.Driver) bool {
			if d.WorkerID != wid || !d.State.Holds() {
				return false
			}
			next, ok := schemas.LoseDriver(*d, why)
			next.UpdatedAt = now()
			*d = next
			return ok
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("driver %s: %w", id, err))
			continue
		}
		if lost {
			s.emit("driver", id, string(v.State), v.Message)
		}
	}
	return errors.Join(errs...)
}

// handleLeave is stoker.worker.<wid>.leave: an agent shutting down on purpose.
// An empty instance in the request matches any (an operator using the nats
// CLI); otherwise only the instance that registered can decommission.
func (s *Service) handleLeave(ctx context.Context, in bus.Inbound, req *schemas.WorkerLeaving) (any, error) {
	wid := req.WorkerID
	if err := bus.CheckSubjectID(in, "worker", wid); err != nil {
		return nil, err
	}
	why := "worker " + wid + " is not registered" // stays so if the record is absent
	_, written, err := bus.MutateIf(ctx, s.st.Workers, wid, func(w *schemas.Worker) bool {
		to, ok := w.State.Next(schemas.WorkerEvLeft)
		switch {
		case req.Instance != "" && w.Instance != req.Instance:
			why = fmt.Sprintf("worker %s is registered by another agent instance", wid)
		case !ok:
			why = fmt.Sprintf("worker %s is already %s", wid, w.State)
		default:
			w.State, w.Reason, w.UpdatedAt = to, "agent left", now()
			return true
		}
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("decommission worker %s: %w", wid, err)
	}
	if !written {
		return &schemas.Ack{OK: false, Message: why}, nil
	}
	s.emit("worker", wid, string(schemas.WorkerDecommissioned), "agent left")
	return &schemas.Ack{OK: true, Message: "worker " + wid + " decommissioned"}, nil
}
