package registration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

func isNotFound(err error) bool { return errors.Is(err, bus.ErrNotFound) }

// poisons collects one reply's poisoned records, reported through the
// service's reporter (once per revision).
func (s *Service) poisons() *bus.Poisons { return bus.NewPoisons(s.poison) }

// workers is every worker record, from the index.
func (s *Service) workers(ctx context.Context) ([]schemas.Worker, error) {
	if err := s.idx.sync(ctx, s.st.Workers); err != nil {
		return nil, err
	}
	s.idx.mu.RLock()
	defer s.idx.mu.RUnlock()
	out := make([]schemas.Worker, 0, len(s.idx.workers))
	for _, w := range s.idx.workers {
		out = append(out, *w)
	}
	return out, nil
}

// idTries bounds the retries of a new id that collided with an existing one.
const idTries = 6

// handleSubmitDriver is stoker.api.drivers.submit.
func (s *Service) handleSubmitDriver(ctx context.Context, _ bus.Inbound, req *schemas.SubmitDriver) (any, error) {
	workers, err := s.workers(ctx)
	if err != nil {
		return nil, err
	}
	t := now()
	d := &schemas.Driver{
		Name: req.Name, Command: req.Command, Env: req.Env, Artifacts: req.Artifacts,
		Cores: req.Cores, MemoryMB: req.MemoryMB, Supervise: req.Supervise,
		ResourceAmounts: req.Resources, Constraints: req.Constraints,
		State: schemas.DriverSubmitted, SubmittedAt: t, UpdatedAt: t,
	}
	// Ids carry a random suffix; a collision is retried, never overwritten.
	if _, err := bus.CreateNew(ctx, s.st.Drivers, idTries, func() string { return schemas.NewDriverID(t) },
		func(id string) any { d.ID = id; return d }); err != nil {
		return nil, fmt.Errorf("create driver: %w", err)
	}
	reply := &schemas.SubmitDriverReply{DriverID: d.ID}
	if !CanHold(workers, req.Cores, req.MemoryMB) {
		reply.Warning = fmt.Sprintf("no registered worker has %s and %s free; the driver waits", schemas.FormatCores(req.Cores), schemas.FormatMemoryMB(req.MemoryMB))
	}
	s.emit("driver", d.ID, string(d.State), "submitted")
	return reply, nil
}

// handleKillDriver is stoker.api.drivers.kill.
func (s *Service) handleKillDriver(ctx context.Context, _ bus.Inbound, req *schemas.KillRequest) (any, error) {
	if !strings.HasPrefix(req.ID, schemas.DriverIDPrefix) {
		return nil, bus.Errorf(bus.CodeBadRequest, "%q is not a driver id (driver-...)", req.ID)
	}
	var result *schemas.Driver
	_, _, err := bus.Mutate(ctx, s.st.Drivers, req.ID, func(cur *schemas.Driver) (*schemas.Driver, error) {
		result = nil
		switch {
		case cur == nil:
			return nil, bus.Errorf(bus.CodeNotFound, "driver %s not found", req.ID)
		case cur.State.Terminal():
			return nil, bus.Errorf(bus.CodeConflict, "driver %s already %s", req.ID, cur.State)
		case cur.KillRequested:
			return nil, nil
		}
		n := *cur
		n.UpdatedAt = now()
		if to, ok := cur.State.Next(schemas.DriverEvKilledWaiting); ok {
			n.State = to
			n.Message = "killed before it was placed"
		} else {
			n.KillRequested = true
		}
		result = &n
		return result, nil
	})
	if err != nil {
		return nil, err
	}
	switch {
	case result == nil:
		return &schemas.Ack{OK: true, Message: "kill of driver " + req.ID + " already requested"}, nil
	case result.State == schemas.DriverKilled:
		s.emit("driver", req.ID, string(schemas.DriverKilled), result.Message)
		return &schemas.Ack{OK: true, Message: "driver " + req.ID + " killed"}, nil
	}
	s.emit("driver", req.ID, string(result.State), "kill requested")
	return &schemas.Ack{OK: true, Message: "kill of driver " + req.ID + " requested"}, nil
}

// handleRegisterApp is stoker.api.apps.register.
func (s *Service) handleRegisterApp(ctx context.Context, _ bus.Inbound, req *schemas.RegisterApp) (any, error) {
	if req.AppID != "" {
		return nil, bus.Errorf(bus.CodeBadRequest, "app_id is chosen by the cluster here; a driver launched with one registers on %s", bus.AppRegister)
	}
	return s.registerApp(ctx, req)
}

// handleRegisterOwnApp is stoker.app.<appid>.register: a driver launched
// with an app id reserved for it (and a credential that may publish only
// under that id) registers the app. The subject's token must be the app id.
func (s *Service) handleRegisterOwnApp(ctx context.Context, in bus.Inbound, req *schemas.RegisterApp) (any, error) {
	if got := bus.AppIDFromSubject(in.Subject()); got != req.AppID {
		return nil, bus.Errorf(bus.CodeBadRequest, "app id %q does not match the subject's %q", req.AppID, got)
	}
	if err := schemas.ValidAppID(req.AppID); err != nil {
		return nil, bus.Errorf(bus.CodeBadRequest, "%v", err)
	}
	return s.registerApp(ctx, req)
}

// handleUnregisterOwnApp is stoker.app.<appid>.unregister (the subject's
// token must be the app id).
func (s *Service) handleUnregisterOwnApp(ctx context.Context, in bus.Inbound, req *schemas.UnregisterApp) (any, error) {
	if got := bus.AppIDFromSubject(in.Subject()); got != req.AppID {
		return nil, bus.Errorf(bus.CodeBadRequest, "app id %q does not match the subject's %q", req.AppID, got)
	}
	return s.handleUnregisterApp(ctx, in, req)
}

// registerApp creates the app record: under req.AppID when reserved (a
// second registration of the same driver's app answers the same), else
// under a fresh id.
func (s *Service) registerApp(ctx context.Context, req *schemas.RegisterApp) (any, error) {
	workers, err := s.workers(ctx)
	if err != nil {
		return nil, err
	}
	t := now()
	a := &schemas.App{
		Name: req.Name, DriverID: req.DriverID, Executor: req.Executor, MaxCores: req.MaxCores, RunOnce: req.RunOnce,
		State: schemas.AppWaiting, SubmittedAt: t, UpdatedAt: t, Constraints: req.Constraints,
	}
	if req.InitialExecutors > 0 {
		n := req.InitialExecutors
		a.RequestedExecutors = &n
	}
	if req.AppID != "" {
		a.ID = req.AppID
		if _, err := bus.Create(ctx, s.st.Apps, a.ID, a); err != nil {
			if !bus.IsCASConflict(err) {
				return nil, fmt.Errorf("create app: %w", err)
			}
			// The same driver registering again (a retried request).
			cur, _, gerr := bus.Get[schemas.App](ctx, s.st.Apps, a.ID)
			if gerr == nil && cur.DriverID == req.DriverID && !cur.State.Terminal() {
				return &schemas.AppRegistered{AppID: a.ID, HeartbeatIntervalMS: s.heartbeatMS()}, nil
			}
			return nil, bus.Errorf(bus.CodeConflict, "app %s is already registered", a.ID)
		}
	} else if _, err := bus.CreateNew(ctx, s.st.Apps, idTries, func() string { return schemas.NewAppID(t) },
		func(id string) any { a.ID = id; return a }); err != nil {
		return nil, fmt.Errorf("create app: %w", err)
	}
	reply := &schemas.AppRegistered{AppID: a.ID, HeartbeatIntervalMS: s.heartbeatMS()}
	if !CanHold(workers, req.Executor.Cores, req.Executor.MemoryMB) {
		reply.Warning = fmt.Sprintf("no registered worker has %s and %s free for one executor; the app waits",
			schemas.FormatCores(req.Executor.Cores), schemas.FormatMemoryMB(req.Executor.MemoryMB))
	}
	s.emit("app", a.ID, string(a.State), "registered")
	return reply, nil
}

// handleUnregisterApp is stoker.api.apps.unregister: a driver ending its
// application. Unregistering an ended app is acknowledged (drivers retry).
func (s *Service) handleUnregisterApp(ctx context.Context, _ bus.Inbound, req *schemas.UnregisterApp) (any, error) {
	final := req.State
	if final == "" {
		final = schemas.AppFinished
	}
	var (
		written bool
		was     schemas.AppState
	)
	_, _, err := bus.Mutate(ctx, s.st.Apps, req.AppID, func(cur *schemas.App) (*schemas.App, error) {
		written, was = false, ""
		if cur == nil {
			return nil, bus.Errorf(bus.CodeNotFound, "app %s not found", req.AppID)
		}
		was = cur.State
		to, ok := cur.State.Next(schemas.AppEnded(final))
		if !ok {
			return nil, nil
		}
		n := *cur
		n.State = to
		n.Message = unregisterMessage(req.Message)
		n.UpdatedAt = now()
		written = true
		return &n, nil
	})
	if err != nil {
		return nil, err
	}
	if !written {
		return &schemas.Ack{OK: true, Message: fmt.Sprintf("app %s already %s", req.AppID, was)}, nil
	}
	s.emit("app", req.AppID, string(final), unregisterMessage(req.Message))
	return &schemas.Ack{OK: true, Message: fmt.Sprintf("app %s %s", req.AppID, final)}, nil
}

// unregisterMessage is the record's and the event's message for an unregister.
func unregisterMessage(m string) string {
	if m == "" {
		return "unregistered by its driver"
	}
	return m
}

// handleKillApp is stoker.api.apps.kill.
func (s *Service) handleKillApp(ctx context.Context, _ bus.Inbound, req *schemas.KillRequest) (any, error) {
	if !strings.HasPrefix(req.ID, schemas.AppIDPrefix) {
		return nil, bus.Errorf(bus.CodeBadRequest, "%q is not an app id (app-...)", req.ID)
	}
	_, _, err := bus.Mutate(ctx, s.st.Apps, req.ID, func(cur *schemas.App) (*schemas.App, error) {
		switch {
		case cur == nil:
			return nil, bus.Errorf(bus.CodeNotFound, "app %s not found", req.ID)
		}
		to, ok := cur.State.Next(schemas.AppEvKilled)
		if !ok {
			return nil, bus.Errorf(bus.CodeConflict, "app %s already %s", req.ID, cur.State)
		}
		n := *cur
		n.State = to
		n.Message = "killed on request"
		n.UpdatedAt = now()
		return &n, nil
	})
	if err != nil {
		return nil, err
	}
	s.emit("app", req.ID, string(schemas.AppKilled), "killed on request")
	return &schemas.Ack{OK: true, Message: "app " + req.ID + " killed"}, nil
}

// liveFirst orders work that has not ended before what has, keeping the
// order within each (stable).
func liveFirst[T any](xs []T, ended func(T) bool) {
	sort.SliceStable(xs, func(i, j int) bool { return !ended(xs[i]) && ended(xs[j]) })
}

// handleListWorkers is stoker.api.workers.list: from the index, at a cost
// that grows with the workers and what they hold, not with history.
func (s *Service) handleListWorkers(ctx context.Context, _ bus.Inbound, req *schemas.ListRequest) (any, error) {
	if err := s.idx.sync(ctx); err != nil {
		return nil, err
	}
	ps := s.poisons()
	s.idx.mu.RLock()
	usage := s.idx.usageLocked(ps)
	var sel []schemas.Worker
	for _, w := range s.idx.workers {
		if req.Keep(w.ID, w.Phase(), w.State.Gone()) {
			sel = append(sel, *w)
		}
	}
	s.idx.mu.RUnlock()
	views := WorkerViews(sel, usage)
	liveFirst(views, func(w schemas.WorkerView) bool { return w.State.Gone() })
	return &schemas.WorkerList{Workers: views}, nil
}

// handleListDrivers is stoker.api.drivers.list.
func (s *Service) handleListDrivers(ctx context.Context, _ bus.Inbound, req *schemas.ListRequest) (any, error) {
	if err := s.idx.sync(ctx); err != nil {
		return nil, err
	}
	ps := s.poisons()
	s.idx.mu.RLock()
	sel := make([]schemas.Driver, 0, len(s.idx.drivers))
	for _, d := range s.idx.drivers {
		if d.State.Holds() && s.idx.workers[d.WorkerID] == nil {
			ps.Add(bus.Poison{Bucket: bus.BucketDrivers, Key: d.ID, Err: schemas.CheckPlaced(true, d.WorkerID, false)})
			continue
		}
		if req.Keep(d.ID, string(d.State), d.State.Terminal()) {
			sel = append(sel, *d)
		}
	}
	s.idx.mu.RUnlock()
	SortDrivers(sel)
	liveFirst(sel, func(d schemas.Driver) bool { return d.State.Terminal() })
	return &schemas.DriverList{Drivers: sel}, nil
}

// handleListApps is stoker.api.apps.list: the apps asked for with their
// own executors (the index keeps them by app).
func (s *Service) handleListApps(ctx context.Context, _ bus.Inbound, req *schemas.ListRequest) (any, error) {
	if err := s.idx.sync(ctx); err != nil {
		return nil, err
	}
	ps := s.poisons()
	s.idx.mu.RLock()
	var sel []schemas.App
	keep := func(a *schemas.App) {
		if a != nil && req.Keep(a.ID, string(a.State), a.State.Terminal()) {
			sel = append(sel, *a)
		}
	}
	if len(req.IDs) > 0 {
		for _, id := range req.IDs {
			keep(s.idx.apps[id])
		}
	} else {
		for _, a := range s.idx.apps {
			keep(a)
		}
	}
	var execs []schemas.Executor
	for _, a := range sel {
		execs = append(execs, s.idx.executorsOfLocked(a.ID, ps)...)
	}
	s.idx.mu.RUnlock()
	views := AppViews(sel, execs)
	liveFirst(views, func(a schemas.AppView) bool { return a.State.Terminal() })
	return &schemas.AppList{Apps: views}, nil
}

// handleStatus is stoker.api.status: counts and usage from the index.
func (s *Service) handleStatus(ctx context.Context, _ bus.Inbound, _ *schemas.ListRequest) (any, error) {
	var snap Snapshot
	lease, epoch, err := bus.CurrentLease(ctx, s.st.Leader, bus.KeyScheduler)
	switch {
	case err == nil:
		// CurrentLease already resolved the epoch (value, else revision).
		snap.Lease, snap.LeaseRevision = lease, epoch
	case !isNotFound(err):
		return nil, fmt.Errorf("read lease: %w", err)
	}
	cl, _, err := bus.Get[schemas.Cluster](ctx, s.st.Cluster, bus.KeyClusterState)
	switch {
	case err == nil:
		snap.Cluster = cl
	case !isNotFound(err):
		return nil, fmt.Errorf("read cluster state: %w", err)
	}
	if err := s.idx.sync(ctx); err != nil {
		return nil, err
	}
	ps := s.poisons()
	s.idx.mu.RLock()
	snap.Usage = s.idx.usageLocked(ps)
	s.idx.poisonedLocked(ps)
	snap.Workers = make([]schemas.Worker, 0, len(s.idx.workers))
	for _, w := range s.idx.workers {
		snap.Workers = append(snap.Workers, *w)
	}
	snap.Apps = make([]schemas.App, 0, len(s.idx.apps))
	for _, a := range s.idx.apps {
		snap.Apps = append(snap.Apps, *a)
	}
	snap.Drivers = make([]schemas.Driver, 0, len(s.idx.drivers))
	for _, d := range s.idx.drivers {
		snap.Drivers = append(snap.Drivers, *d)
	}
	s.idx.mu.RUnlock()
	snap.Poisoned = ps.ByBucket()
	return Summarize(snap), nil
}

// handleExecutorRequest is stoker.app.<appid>.executors: an app's driver
// asking for a total number of executors and/or killing chosen ones
// (dynamic allocation). The scheduler acts on the app record.
func (s *Service) handleExecutorRequest(ctx context.Context, in bus.Inbound, req *schemas.ExecutorRequest) (any, error) {
	if got := bus.AppIDFromSubject(in.Subject()); got != req.AppID {
		return nil, bus.Errorf(bus.CodeBadRequest, "app id %q does not match the subject's %q", req.AppID, got)
	}
	_, _, err := bus.Mutate(ctx, s.st.Apps, req.AppID, func(cur *schemas.App) (*schemas.App, error) {
		if cur == nil {
			return nil, bus.Errorf(bus.CodeNotFound, "app %s not found", req.AppID)
		}
		if cur.State.Terminal() {
			return nil, bus.Errorf(bus.CodeConflict, "app %s already %s", req.AppID, cur.State)
		}
		n := *cur
		if req.Total != nil {
			t := *req.Total
			n.RequestedExecutors = &t
		}
		if len(req.Kill) > 0 {
			kill := append(slices.Clone(cur.KillExecutors), req.Kill...)
			slices.Sort(kill)
			kill = slices.Compact(kill)
			if len(kill) > schemas.MaxKillExecutors {
				kill = kill[len(kill)-schemas.MaxKillExecutors:]
			}
			n.KillExecutors = kill
		}
		n.UpdatedAt = now()
		return &n, nil
	})
	if err != nil {
		return nil, err
	}
	msg := "executors requested"
	if req.Total != nil {
		msg = fmt.Sprintf("%d executors requested", *req.Total)
	}
	if len(req.Kill) > 0 {
		msg += fmt.Sprintf(", kill %v", req.Kill)
	}
	s.emit("app", req.AppID, "", msg)
	return &schemas.Ack{OK: true, Message: msg}, nil
}

// handleCordon is stoker.api.workers.cordon: sets or clears the worker's
// Cordoned flag (no new placements; what runs there keeps running).
func (s *Service) handleCordon(ctx context.Context, _ bus.Inbound, req *schemas.CordonRequest) (any, error) {
	changed := false
	w, _, err := bus.Mutate(ctx, s.st.Workers, req.WorkerID, func(cur *schemas.Worker) (*schemas.Worker, error) {
		changed = false
		if cur == nil {
			return nil, bus.Errorf(bus.CodeNotFound, "worker %s not found", req.WorkerID)
		}
		if cur.Cordoned == req.Cordon {
			return nil, nil
		}
		n := *cur
		n.Cordoned, n.UpdatedAt, changed = req.Cordon, now(), true
		return &n, nil
	})
	if err != nil {
		return nil, err
	}
	what := "uncordoned"
	if req.Cordon {
		what = "cordoned"
	}
	if !changed {
		return &schemas.Ack{OK: true, Message: "worker " + req.WorkerID + " already " + what}, nil
	}
	s.emit("worker", req.WorkerID, string(w.State), what+" on request")
	return &schemas.Ack{OK: true, Message: "worker " + req.WorkerID + " " + what}, nil
}

// handleDrain is stoker.api.workers.drain: an operator decommissions a
// worker (`stoker drain`).
func (s *Service) handleDrain(ctx context.Context, _ bus.Inbound, req *schemas.DrainRequest) (any, error) {
	return s.drain(ctx, req, "request", "")
}

// handleWorkerDrain is stoker.worker.<wid>.drain: the agent drains itself
// (SIGTERM or SIGPWR with --drain-grace). Only the registered instance may.
func (s *Service) handleWorkerDrain(ctx context.Context, in bus.Inbound, req *schemas.DrainRequest) (any, error) {
	if err := bus.CheckSubjectID(in, "worker", req.WorkerID); err != nil {
		return nil, err
	}
	return s.drain(ctx, req, "agent", req.Instance)
}

// drain sets the worker's Drain (the scheduler carries it out). A worker
// already draining keeps its drain, with the earlier deadline of the two;
// a worker that is not ALIVE is refused (a DEAD worker's work is replaced
// anyway; a DECOMMISSIONED one has none). instance, when set, must be the
// registered one.
func (s *Service) drain(ctx context.Context, req *schemas.DrainRequest, by, instance string) (any, error) {
	t := now()
	deadline := t.Add(req.Deadline())
	var was *schemas.Drain
	w, _, err := bus.Mutate(ctx, s.st.Workers, req.WorkerID, func(cur *schemas.Worker) (*schemas.Worker, error) {
		was = nil
		switch {
		case cur == nil:
			return nil, bus.Errorf(bus.CodeNotFound, "worker %s not found", req.WorkerID)
		case instance != "" && cur.Instance != instance:
			return nil, bus.Errorf(bus.CodeConflict, "worker %s is registered by another agent instance", req.WorkerID)
		case cur.State != schemas.WorkerAlive:
			return nil, bus.Errorf(bus.CodeConflict, "worker %s is %s, not ALIVE: nothing to drain", req.WorkerID, cur.State)
		}
		was = cur.Drain
		if was != nil && !deadline.Before(was.Deadline) {
			return nil, nil
		}
		n := *cur
		d := schemas.Drain{Since: t, Deadline: deadline, By: by}
		if was != nil {
			d.Since, d.By = was.Since, was.By
		}
		n.Drain, n.UpdatedAt = &d, t
		return &n, nil
	})
	if err != nil {
		return nil, err
	}
	dl := w.Drain.Deadline.Format(time.RFC3339)
	if was != nil && w.Drain.Deadline.Equal(was.Deadline) {
		return &schemas.Ack{OK: true, Message: fmt.Sprintf("worker %s already draining (deadline %s)", req.WorkerID, dl)}, nil
	}
	msg := fmt.Sprintf("draining: no new placements; executors replaced elsewhere, then killed here; what is left at %s is killed (by %s)", dl, by)
	if was != nil {
		msg = fmt.Sprintf("drain deadline moved to %s (by %s)", dl, by)
	}
	s.emit("worker", req.WorkerID, schemas.PhaseDecommissioning, msg)
	return &schemas.Ack{OK: true, Message: fmt.Sprintf("worker %s draining (deadline %s)", req.WorkerID, dl)}, nil
}
