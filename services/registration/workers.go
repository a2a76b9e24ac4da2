package registration

import (
	"context"
	"fmt"
	"sort"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// checkSubject refuses a message whose body names another worker than its
// subject: NATS permissions confine an agent to its own subjects, so the
// subject is the identity that counts.
func checkSubject(in bus.Inbound, wid string) error {
	if got := bus.WorkerIDFromSubject(in.Subject()); got != wid {
		return bus.Errorf(bus.CodeBadRequest, "worker id %q in the message does not match subject %s", wid, in.Subject())
	}
	return nil
}

// handleRegister is stoker.worker.<wid>.register.
func (s *Service) handleRegister(ctx context.Context, in bus.Inbound, req *schemas.RegisterWorker) (any, error) {
	wid := req.WorkerID
	if err := checkSubject(in, wid); err != nil {
		return nil, err
	}
	epoch, err := s.currentEpoch(ctx)
	if err != nil {
		return nil, fmt.Errorf("read cluster state: %w", err)
	}
	t := now()
	var (
		duplicate bool
		replaced  schemas.WorkerState
		previous  string
	)
	_, _, err = bus.Mutate(ctx, s.st.Workers, wid, func(cur *schemas.Worker) (*schemas.Worker, error) {
		duplicate, replaced, previous = false, "", ""
		if cur != nil {
			if cur.State == schemas.WorkerAlive && cur.Instance == req.Instance {
				duplicate = true
				return nil, nil
			}
			replaced, previous = cur.State, cur.Instance
		}
		return &schemas.Worker{
			ID: wid, Instance: req.Instance, Host: req.Host,
			Cores: req.Cores, MemoryMB: req.MemoryMB, State: schemas.WorkerAlive,
			RegisteredAt: t, UpdatedAt: t, Epoch: epoch,
		}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("register worker %s: %w", wid, err)
	}
	log := s.log.With().Str("worker_id", wid).Str("agent_instance", req.Instance).Logger()
	switch {
	case duplicate:
		log.Debug().Msg("duplicate registration acknowledged")
	case replaced == "":
		s.emit("worker", wid, string(schemas.WorkerAlive), "registered")
	case replaced == schemas.WorkerAlive:
		s.emit("worker", wid, string(schemas.WorkerAlive),
			fmt.Sprintf("agent restarted (instance %s replaces %s)", req.Instance, previous))
	default:
		s.emit("worker", wid, string(schemas.WorkerAlive), fmt.Sprintf("re-registered (was %s)", replaced))
	}

	killExec, killDrv, err := s.reconcile(ctx, wid, req, duplicate)
	if err != nil {
		// The registration itself stands; the agent will be reconciled
		// again by recovery or its next registration.
		log.Error().Err(err).Msg("reconcile registration")
	}
	return &schemas.WorkerRegistered{
		WorkerID: wid, Duplicate: duplicate, Replaced: replaced,
		HeartbeatIntervalMS: s.heartbeatMS(), Epoch: epoch,
		KillExecutors: killExec, KillDrivers: killDrv,
	}, nil
}

// reconcile compares what the agent says it runs with KV. Listed processes
// the cluster no longer wants are returned for the agent to kill; for a
// fresh registration (not a duplicate), records on this worker the agent
// did not list are ended, since a restarted agent no longer runs them.
func (s *Service) reconcile(ctx context.Context, wid string, req *schemas.RegisterWorker, duplicate bool) (killExec, killDrv []string, err error) {
	listedExec := map[string]schemas.RunningExecutor{}
	for _, e := range req.Executors {
		listedExec[schemas.ExecutorKey(e.AppID, e.ExecutorID)] = e
	}
	listedDrv := map[string]schemas.RunningDriver{}
	for _, d := range req.Drivers {
		listedDrv[d.DriverID] = d
	}

	// Listed executors.
	keys := make([]string, 0, len(listedExec))
	for k := range listedExec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		re := listedExec[key]
		if _, _, perr := schemas.ParseExecutorKey(key); perr != nil {
			killExec = append(killExec, key)
			continue
		}
		var kill, promoted bool
		_, _, merr := bus.Mutate(ctx, s.st.Executors, key, func(cur *schemas.Executor) (*schemas.Executor, error) {
			kill, promoted = false, false
			switch {
			case cur == nil, cur.WorkerID != wid, cur.State.Terminal():
				kill = true
				return nil, nil
			case cur.State == schemas.ExecutorLaunching:
				next := *cur
				next.State = schemas.ExecutorRunning
				if re.PID != 0 {
					next.PID = re.PID
				}
				next.UpdatedAt = now()
				promoted = true
				return &next, nil
			}
			return nil, nil
		})
		if merr != nil {
			err = merr
			continue
		}
		if kill {
			killExec = append(killExec, key)
		}
		if promoted {
			s.emit("executor", key, string(schemas.ExecutorRunning), "reported running at registration of "+wid)
			s.resetFailures(ctx, re.AppID)
		}
	}

	// Listed drivers.
	dkeys := make([]string, 0, len(listedDrv))
	for k := range listedDrv {
		dkeys = append(dkeys, k)
	}
	sort.Strings(dkeys)
	for _, id := range dkeys {
		if schemas.ValidDriverID(id) != nil {
			killDrv = append(killDrv, id)
			continue
		}
		cur, _, gerr := bus.Get[schemas.Driver](ctx, s.st.Drivers, id)
		switch {
		case gerr != nil && !isNotFound(gerr):
			err = gerr
		case cur == nil, cur.WorkerID != wid, cur.State.Terminal(), cur.State == schemas.DriverSubmitted:
			killDrv = append(killDrv, id)
		}
	}

	if duplicate {
		// The same agent instance asking again (a network blip): its list
		// may predate a launch in flight, so nothing is ended on its word.
		return killExec, killDrv, err
	}

	execs, lerr := bus.List[schemas.Executor](ctx, s.st.Executors)
	if lerr != nil {
		return killExec, killDrv, lerr
	}
	for _, e := range execs {
		x := e.Value
		if x.WorkerID != wid || !x.State.Holds() {
			continue
		}
		if _, ok := listedExec[e.Key]; ok {
			continue
		}
		msg := fmt.Sprintf("worker %s re-registered without it", wid)
		var lost bool
		_, _, merr := bus.Mutate(ctx, s.st.Executors, e.Key, func(cur *schemas.Executor) (*schemas.Executor, error) {
			lost = false
			if cur == nil || cur.WorkerID != wid || !cur.State.Holds() {
				return nil, nil
			}
			next := *cur
			next.State = schemas.ExecutorLost
			next.Message = msg
			next.UpdatedAt = now()
			lost = true
			return &next, nil
		})
		if merr != nil {
			err = merr
			continue
		}
		if lost {
			s.emit("executor", e.Key, string(schemas.ExecutorLost), msg)
		}
	}

	drivers, lerr := bus.List[schemas.Driver](ctx, s.st.Drivers)
	if lerr != nil {
		return killExec, killDrv, lerr
	}
	for _, e := range drivers {
		d := e.Value
		if d.WorkerID != wid || !d.State.Holds() {
			continue
		}
		if _, ok := listedDrv[e.Key]; ok {
			continue
		}
		var next *schemas.Driver
		_, _, merr := bus.Mutate(ctx, s.st.Drivers, e.Key, func(cur *schemas.Driver) (*schemas.Driver, error) {
			next = nil
			if cur == nil || cur.WorkerID != wid || !cur.State.Holds() {
				return nil, nil
			}
			n := *cur
			n.PID = 0
			n.UpdatedAt = now()
			switch {
			case cur.KillRequested:
				n.State = schemas.DriverKilled
				n.Message = "worker restarted while a kill was pending"
			case cur.Supervise:
				n.State = schemas.DriverSubmitted
				n.WorkerID = ""
				n.Message = "worker " + wid + " restarted; relaunching"
			default:
				n.State = schemas.DriverFailed
				n.Message = "worker restarted"
			}
			next = &n
			return next, nil
		})
		if merr != nil {
			err = merr
			continue
		}
		if next != nil {
			s.emit("driver", e.Key, string(next.State), next.Message)
		}
	}
	return killExec, killDrv, err
}

// handleLeave is stoker.worker.<wid>.leave: an agent shutting down on purpose.
// An empty instance in the request matches any (an operator using the nats
// CLI); otherwise only the instance that registered can decommission.
func (s *Service) handleLeave(ctx context.Context, in bus.Inbound, req *schemas.WorkerLeaving) (any, error) {
	wid := req.WorkerID
	if err := checkSubject(in, wid); err != nil {
		return nil, err
	}
	var (
		written bool
		why     string
	)
	_, _, err := bus.Mutate(ctx, s.st.Workers, wid, func(cur *schemas.Worker) (*schemas.Worker, error) {
		written, why = false, ""
		switch {
		case cur == nil:
			why = "worker " + wid + " is not registered"
		case req.Instance != "" && cur.Instance != req.Instance:
			why = fmt.Sprintf("worker %s is registered by another agent instance", wid)
		case cur.State.Gone():
			why = fmt.Sprintf("worker %s is already %s", wid, cur.State)
		default:
			n := *cur
			n.State = schemas.WorkerDecommissioned
			n.Reason = "agent left"
			n.UpdatedAt = now()
			written = true
			return &n, nil
		}
		return nil, nil
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

// handleState is stoker.worker.<wid>.state. Agents retry until acked, so
// every branch is idempotent: an identical second report writes nothing.
func (s *Service) handleState(ctx context.Context, in bus.Inbound, req *schemas.StateChange) (any, error) {
	if err := checkSubject(in, req.WorkerID); err != nil {
		return nil, err
	}
	if req.DriverID != "" {
		return s.driverReport(ctx, req)
	}
	return s.executorReport(ctx, req)
}

func (s *Service) executorReport(ctx context.Context, req *schemas.StateChange) (any, error) {
	wid := req.WorkerID
	key := schemas.ExecutorKey(req.AppID, req.ExecutorID)
	st := schemas.ExecutorState(req.State)
	var (
		killReason string
		changed    bool
	)
	_, _, err := bus.Mutate(ctx, s.st.Executors, key, func(cur *schemas.Executor) (*schemas.Executor, error) {
		killReason, changed = "", false
		switch {
		case cur == nil:
			killReason = "executor " + key + " is unknown to the cluster"
			return nil, nil
		case cur.WorkerID != wid:
			killReason = fmt.Sprintf("executor %s was placed on worker %s", key, cur.WorkerID)
			return nil, nil
		case cur.State.Terminal():
			if st == schemas.ExecutorRunning {
				killReason = fmt.Sprintf("executor %s is already %s", key, cur.State)
			}
			// A late terminal report for an ended executor: the first
			// ending stands.
			return nil, nil
		}
		n := *cur
		n.State = st
		if req.PID != 0 {
			n.PID = req.PID
		}
		if req.ExitCode != nil {
			c := *req.ExitCode
			n.ExitCode = &c
		}
		if req.Message != "" {
			n.Message = req.Message
		}
		if n.State == cur.State && n.PID == cur.PID && n.Message == cur.Message && sameCode(n.ExitCode, cur.ExitCode) {
			return nil, nil // repeated report
		}
		n.UpdatedAt = now()
		changed = n.State != cur.State
		return &n, nil
	})
	if err != nil {
		return nil, fmt.Errorf("executor %s: %w", key, err)
	}
	if killReason != "" {
		s.log.Info().Str("worker_id", wid).Str("executor", key).Str("reason", killReason).Msg("asking agent to kill executor")
		return &schemas.StateAck{Kill: true, Reason: killReason}, nil
	}
	if changed {
		s.emit("executor", key, string(st), reportMessage(req))
		switch st {
		case schemas.ExecutorFailed:
			s.addFailure(ctx, req.AppID)
		case schemas.ExecutorRunning:
			s.resetFailures(ctx, req.AppID)
		}
	}
	return &schemas.StateAck{}, nil
}

// reportMessage is the event message of a state report: the agent's own,
// else the exit code when there is one.
func reportMessage(req *schemas.StateChange) string {
	if req.Message == "" && req.ExitCode != nil {
		return fmt.Sprintf("exit %d", *req.ExitCode)
	}
	return req.Message
}

func sameCode(a, b *int) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// addFailure counts an executor failure against its application.
func (s *Service) addFailure(ctx context.Context, appID string) {
	_, _, err := bus.Mutate(ctx, s.st.Apps, appID, func(cur *schemas.App) (*schemas.App, error) {
		if cur == nil {
			return nil, nil
		}
		n := *cur
		n.ConsecutiveFailures++
		n.UpdatedAt = now()
		return &n, nil
	})
	if err != nil {
		s.log.Error().Err(err).Str("app_id", appID).Msg("count executor failure")
	}
}

// resetFailures clears the count once an executor reached RUNNING.
func (s *Service) resetFailures(ctx context.Context, appID string) {
	_, _, err := bus.Mutate(ctx, s.st.Apps, appID, func(cur *schemas.App) (*schemas.App, error) {
		if cur == nil || cur.ConsecutiveFailures == 0 {
			return nil, nil
		}
		n := *cur
		n.ConsecutiveFailures = 0
		n.UpdatedAt = now()
		return &n, nil
	})
	if err != nil {
		s.log.Error().Err(err).Str("app_id", appID).Msg("reset executor failures")
	}
}

func (s *Service) driverReport(ctx context.Context, req *schemas.StateChange) (any, error) {
	wid, id := req.WorkerID, req.DriverID
	st := schemas.DriverState(req.State)
	var (
		killReason string
		changed    bool
	)
	_, _, err := bus.Mutate(ctx, s.st.Drivers, id, func(cur *schemas.Driver) (*schemas.Driver, error) {
		killReason, changed = "", false
		switch {
		case cur == nil:
			killReason = "driver " + id + " is unknown to the cluster"
			return nil, nil
		case cur.WorkerID != wid:
			where := cur.WorkerID
			if where == "" {
				where = "no worker (waiting to be relaunched)"
			}
			killReason = fmt.Sprintf("driver %s is placed on %s", id, where)
			return nil, nil
		case cur.State.Terminal():
			if st == schemas.DriverRunning || st == schemas.DriverRelaunching {
				killReason = fmt.Sprintf("driver %s is already %s", id, cur.State)
			}
			return nil, nil
		}
		n := *cur
		n.State = st
		if req.Attempt > n.Attempts {
			n.Attempts = req.Attempt
		}
		switch st {
		case schemas.DriverRunning:
			if req.PID != 0 {
				n.PID = req.PID
			}
			n.ExitCode = nil
		case schemas.DriverRelaunching:
			if req.ExitCode != nil {
				c := *req.ExitCode
				n.ExitCode = &c
			}
		default: // FINISHED, FAILED, KILLED, ERROR
			if req.ExitCode != nil {
				c := *req.ExitCode
				n.ExitCode = &c
			}
		}
		if req.Message != "" {
			n.Message = req.Message
		}
		if n.State == cur.State && n.PID == cur.PID && n.Attempts == cur.Attempts &&
			n.Message == cur.Message && sameCode(n.ExitCode, cur.ExitCode) {
			return nil, nil // repeated report
		}
		n.UpdatedAt = now()
		changed = n.State != cur.State || n.Attempts != cur.Attempts
		return &n, nil
	})
	if err != nil {
		return nil, fmt.Errorf("driver %s: %w", id, err)
	}
	if killReason != "" {
		s.log.Info().Str("worker_id", wid).Str("driver_id", id).Str("reason", killReason).Msg("asking agent to kill driver")
		return &schemas.StateAck{Kill: true, Reason: killReason}, nil
	}
	if changed {
		s.emit("driver", id, string(st), reportMessage(req))
	}
	return &schemas.StateAck{}, nil
}
