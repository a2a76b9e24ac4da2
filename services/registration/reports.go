package registration

import (
	"context"
	"fmt"
	"slices"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// handleState is stoker.worker.<wid>.state. Agents retry until acked, so
// every branch is idempotent: an identical second report writes nothing.
func (s *Service) handleState(ctx context.Context, in bus.Inbound, req *schemas.StateChange) (any, error) {
	if err := bus.CheckSubjectID(in, "worker", req.WorkerID); err != nil {
		return nil, err
	}
	if err := s.checkReporter(ctx, req); err != nil {
		return nil, err
	}
	if req.DriverID != "" {
		return s.driverReport(ctx, req)
	}
	return s.executorReport(ctx, req)
}

// stateBatchConcurrency bounds the processes whose reports one
// StateChanges has taken at once; statePool, those of every batch at once
// (the service's pool of goroutines taking them: Service.reports).
const (
	stateBatchConcurrency = 8
	statePool             = 256
)

// handleStates is stoker.worker.<wid>.states: every report taken as
// handleState takes it alone; one process's reports in order (after one
// that is not taken, for a reason that may pass, the later ones of the
// same process are not taken either), different processes' at once.
func (s *Service) handleStates(ctx context.Context, in bus.Inbound, req *schemas.StateChanges) (any, error) {
	out := &schemas.StateAcks{Results: make([]schemas.StateResult, len(req.Reports))}
	var keys []string
	byKey := map[string][]int{}
	for i := range req.Reports {
		k := reportID(&req.Reports[i])
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], i)
	}
	s.reports.Parallel(len(keys), stateBatchConcurrency, func(n int) {
		k := keys[n]
		held := ""
		for _, i := range byKey[k] {
			if held != "" {
				out.Results[i] = schemas.StateResult{Code: bus.CodeUnavailable,
					Error: "not taken: an earlier report of " + k + " was not (" + held + ")"}
				continue
			}
			out.Results[i] = s.takeState(ctx, in, &req.Reports[i])
			if c := out.Results[i].Code; c != 0 && !bus.RefusedForGood(c) {
				held = out.Results[i].Error
			}
		}
	})
	return out, nil
}

// takeState is one report of a batch through handleState (as bus.Serve
// calls it: a panic is a 500), its outcome as a StateResult.
func (s *Service) takeState(ctx context.Context, in bus.Inbound, req *schemas.StateChange) schemas.StateResult {
	reply, err := bus.SafeCall(ctx, in, req, s.handleState)
	if err != nil {
		code := bus.ErrorCode(err)
		if code >= 500 {
			s.log.Error().Err(err).Str("report", reportID(req)).Msg("state report failed")
		}
		return schemas.StateResult{Code: code, Error: err.Error()}
	}
	if a, ok := reply.(*schemas.StateAck); ok && a != nil {
		return schemas.StateResult{Kill: a.Kill, Reason: a.Reason}
	}
	return schemas.StateResult{}
}

// checkReporter refuses (409, as a replaced instance's registration is) a
// report from an agent instance that is no longer the worker's: a newer
// instance registered the worker, and its registration settled what runs
// there; the old one's word about those processes is stale. A report that
// names no instance (an older agent) is taken as before.
//
// The index's copy of the worker answers when it names the reporting
// instance (the common case, and a read of the record per report was a
// third of the report path's cost); a refusal is always read from the
// bucket. A report from an instance replaced within the index's lag is
// taken: the executor or driver write it makes is compare-and-set against
// the record the new instance's registration settles, so it cannot undo
// that (a RUNNING over the LOST it wrote is refused as a state change).
func (s *Service) checkReporter(ctx context.Context, req *schemas.StateChange) error {
	if req.Instance == "" || s.idx.workerInstance(req.WorkerID) == req.Instance {
		return nil
	}
	w, _, err := bus.Get[schemas.Worker](ctx, s.st.Workers, req.WorkerID)
	switch {
	case isNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("read worker %s: %w", req.WorkerID, err)
	}
	return reporterRefused(w, req)
}

// reporterRefused is checkReporter's rule, pure.
func reporterRefused(w *schemas.Worker, req *schemas.StateChange) error {
	if req.Instance == "" || w == nil || w.Instance == "" || w.Instance == req.Instance {
		return nil
	}
	return bus.Errorf(bus.CodeConflict, "agent instance %s of worker %s was replaced by instance %s: its report of %s is refused",
		req.Instance, req.WorkerID, w.Instance, reportID(req))
}

// reportID names what a report is about.
func reportID(req *schemas.StateChange) string {
	if req.DriverID != "" {
		return "driver " + req.DriverID
	}
	return "executor " + schemas.ExecutorKey(req.AppID, req.ExecutorID)
}

// executorReported is the rule of an agent's executor report, pure: the
// record to write (nil: nothing, a repeated or late report) or why the agent
// must kill the process (unknown, placed elsewhere, already ended).
func executorReported(cur *schemas.Executor, req *schemas.StateChange, key string) (next *schemas.Executor, killReason string) {
	st := schemas.ExecutorState(req.State)
	switch {
	case cur == nil:
		return nil, "executor " + key + " is unknown to the cluster"
	case cur.WorkerID != req.WorkerID:
		return nil, fmt.Sprintf("executor %s was placed on worker %s", key, cur.WorkerID)
	}
	to, ok := cur.State.Next(schemas.ExecutorReported(st))
	if !ok {
		if st == schemas.ExecutorRunning {
			return nil, fmt.Sprintf("executor %s is already %s", key, cur.State)
		}
		return nil, "" // a late terminal report for an ended executor: the first ending stands
	}
	n := *cur
	n.State = to
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
	if req.Error != "" {
		// The agent's own report can end the executor before the
		// scheduler's refused-launch write does: keep the reason either way.
		n.Error = req.Error
	}
	if n.State == cur.State && n.PID == cur.PID && n.Message == cur.Message && sameCode(n.ExitCode, cur.ExitCode) {
		return nil, "" // repeated report
	}
	n.UpdatedAt = now()
	return &n, ""
}

func (s *Service) executorReport(ctx context.Context, req *schemas.StateChange) (any, error) {
	key := schemas.ExecutorKey(req.AppID, req.ExecutorID)
	st := schemas.ExecutorState(req.State)
	var (
		killReason string
		changed    bool
		final      schemas.ExecutorState // the record's state after this report
	)
	// The index's copy saves the read in the common case (a report of the
	// launch the scheduler just wrote): the write is revision-guarded, and
	// anything but a successful write of it reads the record.
	hint, rev := s.idx.executor(req.AppID, key)
	rec, nrev, err := bus.MutateFrom(ctx, s.st.Executors, key, hint, rev, func(cur *schemas.Executor) (*schemas.Executor, error) {
		next, why := executorReported(cur, req, key)
		killReason, changed = why, next != nil && next.State != cur.State
		switch {
		case next != nil:
			final = next.State
		case cur != nil:
			final = cur.State
		}
		return next, nil
	})
	if err != nil {
		return nil, fmt.Errorf("executor %s: %w", key, err)
	}
	if rec != nil {
		s.idx.wrote(bus.BucketExecutors, key, rec, nrev)
	}
	if killReason != "" {
		s.log.Info().Str("worker_id", req.WorkerID).Str("executor", key).Str("reason", killReason).Msg("asking agent to kill executor")
		return &schemas.StateAck{Kill: true, Reason: killReason}, nil
	}
	if changed {
		s.emit("executor", key, string(st), reportMessage(req))
	}
	// Counted on repeats too: the count is kept per executor id, so a
	// report retried because this service died between the two writes
	// counts the failure once, and so does a failure the scheduler
	// counted already (a refused launch).
	switch final {
	case schemas.ExecutorFailed:
		s.addFailure(ctx, req.AppID, req.ExecutorID)
	case schemas.ExecutorRunning:
		s.resetFailures(ctx, req.AppID, req.ExecutorID)
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

// addFailure counts executor execID's failure against its application,
// once (schemas.App.CountFailure).
func (s *Service) addFailure(ctx context.Context, appID string, execID int) {
	_, _, err := bus.Mutate(ctx, s.st.Apps, appID, func(cur *schemas.App) (*schemas.App, error) {
		if cur == nil || cur.State.Terminal() {
			return nil, nil
		}
		n := *cur
		n.FailedExecutors = slices.Clone(cur.FailedExecutors)
		if !n.CountFailure(execID) {
			return nil, nil
		}
		n.UpdatedAt = now()
		return &n, nil
	})
	if err != nil {
		s.log.Error().Err(err).Str("app_id", appID).Msg("count executor failure")
	}
}

// resetFailures clears the failures of executors before execID once it
// reached RUNNING (schemas.App.CountRunning). The index's copy of the app
// skips the write when it would change nothing (FailuresFrom only grows,
// so an older copy past execID with no failures to drop is past it too);
// otherwise the reports of one app reset together, one write for all
// waiting (resets.do): executors starting at once each raised the app's
// FailuresFrom in a write of its own, contending for one record.
func (s *Service) resetFailures(ctx context.Context, appID string, execID int) {
	if a, ok := s.idx.appFailures(appID); ok && !a.CountRunning(execID) {
		return
	}
	err := s.resets.do(appID, execID, func(upTo int) error {
		_, _, err := bus.Mutate(ctx, s.st.Apps, appID, func(cur *schemas.App) (*schemas.App, error) {
			if cur == nil {
				return nil, nil
			}
			n := *cur
			n.FailedExecutors = slices.Clone(cur.FailedExecutors)
			if !n.CountRunning(upTo) {
				return nil, nil
			}
			n.UpdatedAt = now()
			return &n, nil
		})
		return err
	})
	if err != nil {
		s.log.Error().Err(err).Str("app_id", appID).Msg("reset executor failures")
	}
}

// driverReported is the rule of an agent's driver report, pure, as
// executorReported.
func driverReported(cur *schemas.Driver, req *schemas.StateChange) (next *schemas.Driver, killReason string) {
	id, st := req.DriverID, schemas.DriverState(req.State)
	switch {
	case cur == nil:
		return nil, "driver " + id + " is unknown to the cluster"
	case cur.WorkerID != req.WorkerID:
		where := cur.WorkerID
		if where == "" {
			where = "no worker (waiting to be relaunched)"
		}
		return nil, fmt.Sprintf("driver %s is placed on %s", id, where)
	}
	to, ok := cur.State.Next(schemas.DriverReported(st))
	if !ok {
		if st == schemas.DriverRunning || st == schemas.DriverRelaunching {
			return nil, fmt.Sprintf("driver %s is already %s", id, cur.State)
		}
		return nil, ""
	}
	n := *cur
	n.State = to
	if req.Attempt > n.Attempts {
		n.Attempts = req.Attempt
	}
	if to == schemas.DriverRunning {
		if req.PID != 0 {
			n.PID = req.PID
		}
		n.ExitCode = nil
	} else if req.ExitCode != nil { // RELAUNCHING, or ended
		c := *req.ExitCode
		n.ExitCode = &c
	}
	if req.Message != "" {
		n.Message = req.Message
	}
	if n.State == cur.State && n.PID == cur.PID && n.Attempts == cur.Attempts &&
		n.Message == cur.Message && sameCode(n.ExitCode, cur.ExitCode) {
		return nil, "" // repeated report
	}
	n.UpdatedAt = now()
	return &n, ""
}

func (s *Service) driverReport(ctx context.Context, req *schemas.StateChange) (any, error) {
	id := req.DriverID
	var (
		killReason string
		changed    bool
	)
	_, _, err := bus.Mutate(ctx, s.st.Drivers, id, func(cur *schemas.Driver) (*schemas.Driver, error) {
		next, why := driverReported(cur, req)
		killReason, changed = why, next != nil && (next.State != cur.State || next.Attempts != cur.Attempts)
		return next, nil
	})
	if err != nil {
		return nil, fmt.Errorf("driver %s: %w", id, err)
	}
	if killReason != "" {
		s.log.Info().Str("worker_id", req.WorkerID).Str("driver_id", id).Str("reason", killReason).Msg("asking agent to kill driver")
		return &schemas.StateAck{Kill: true, Reason: killReason}, nil
	}
	if changed {
		s.emit("driver", id, req.State, reportMessage(req))
	}
	return &schemas.StateAck{}, nil
}
