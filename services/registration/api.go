package registration

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

func isNotFound(err error) bool { return errors.Is(err, bus.ErrNotFound) }

// values strips the KV metadata off a List result.
func values[T any](es []bus.Entry[T]) []T {
	out := make([]T, 0, len(es))
	for _, e := range es {
		out = append(out, *e.Value)
	}
	return out
}

// listAll lists a bucket for a reply, leaving out (and reporting to ps)
// what does not decode or breaks its record's invariants.
func listAll[T any](ctx context.Context, kv jetstream.KeyValue, ps *bus.Poisons) ([]bus.Entry[T], error) {
	es, err := bus.ListSkipping[T](ctx, kv, ps.Add)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kv.Bucket(), err)
	}
	return es, nil
}

// listPlaced is listAll for executors or drivers: those holding resources
// on a worker that has no record are left out too.
func listPlaced[T any](ctx context.Context, kv jetstream.KeyValue, workers []bus.Entry[schemas.Worker], ps *bus.Poisons) ([]T, error) {
	es, err := listAll[T](ctx, kv, ps)
	if err != nil {
		return nil, err
	}
	return values(bus.DropUnplaced(kv.Bucket(), es, bus.KnownWorkers(workers), ps.Add)), nil
}

// poisons collects one reply's poisoned records, reported through the
// service's reporter (once per revision).
func (s *Service) poisons() *bus.Poisons { return bus.NewPoisons(s.poison) }

// idTries bounds the retries of a new id that collided with an existing one.
const idTries = 6

// handleSubmitDriver is stoker.api.drivers.submit.
func (s *Service) handleSubmitDriver(ctx context.Context, _ bus.Inbound, req *schemas.SubmitDriver) (any, error) {
	workers, err := listAll[schemas.Worker](ctx, s.st.Workers, s.poisons())
	if err != nil {
		return nil, err
	}
	t := now()
	d := &schemas.Driver{
		Name: req.Name, Command: req.Command, Env: req.Env,
		Cores: req.Cores, MemoryMB: req.MemoryMB, Supervise: req.Supervise,
		State: schemas.DriverSubmitted, SubmittedAt: t, UpdatedAt: t,
	}
	// Ids carry a random suffix; a collision is retried, never overwritten.
	if _, err := bus.CreateNew(ctx, s.st.Drivers, idTries, func() string { return schemas.NewDriverID(t) },
		func(id string) any { d.ID = id; return d }); err != nil {
		return nil, fmt.Errorf("create driver: %w", err)
	}
	reply := &schemas.SubmitDriverReply{DriverID: d.ID}
	if !CanHold(values(workers), req.Cores, req.MemoryMB) {
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
	workers, err := listAll[schemas.Worker](ctx, s.st.Workers, s.poisons())
	if err != nil {
		return nil, err
	}
	t := now()
	a := &schemas.App{
		Name: req.Name, DriverID: req.DriverID, Executor: req.Executor, MaxCores: req.MaxCores, RunOnce: req.RunOnce,
		State: schemas.AppWaiting, SubmittedAt: t, UpdatedAt: t,
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
	if !CanHold(values(workers), req.Executor.Cores, req.Executor.MemoryMB) {
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

// wanted returns a filter for ListRequest.IDs (everything when empty).
func wanted(ids []string) func(string) bool {
	if len(ids) == 0 {
		return func(string) bool { return true }
	}
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	return func(id string) bool { return set[id] }
}

// handleListWorkers is stoker.api.workers.list.
func (s *Service) handleListWorkers(ctx context.Context, _ bus.Inbound, req *schemas.ListRequest) (any, error) {
	ps := s.poisons()
	workers, err := listAll[schemas.Worker](ctx, s.st.Workers, ps)
	if err != nil {
		return nil, err
	}
	execs, err := listPlaced[schemas.Executor](ctx, s.st.Executors, workers, ps)
	if err != nil {
		return nil, err
	}
	drivers, err := listPlaced[schemas.Driver](ctx, s.st.Drivers, workers, ps)
	if err != nil {
		return nil, err
	}
	keep := wanted(req.IDs)
	var sel []schemas.Worker
	for _, w := range values(workers) {
		if keep(w.ID) {
			sel = append(sel, w)
		}
	}
	return &schemas.WorkerList{Workers: WorkerViews(sel, Usage(execs, drivers))}, nil
}

// handleListDrivers is stoker.api.drivers.list.
func (s *Service) handleListDrivers(ctx context.Context, _ bus.Inbound, req *schemas.ListRequest) (any, error) {
	ps := s.poisons()
	workers, err := listAll[schemas.Worker](ctx, s.st.Workers, ps)
	if err != nil {
		return nil, err
	}
	drivers, err := listPlaced[schemas.Driver](ctx, s.st.Drivers, workers, ps)
	if err != nil {
		return nil, err
	}
	keep := wanted(req.IDs)
	sel := make([]schemas.Driver, 0, len(drivers))
	for _, d := range drivers {
		if keep(d.ID) {
			sel = append(sel, d)
		}
	}
	SortDrivers(sel)
	return &schemas.DriverList{Drivers: sel}, nil
}

// handleListApps is stoker.api.apps.list.
func (s *Service) handleListApps(ctx context.Context, _ bus.Inbound, req *schemas.ListRequest) (any, error) {
	ps := s.poisons()
	apps, err := listAll[schemas.App](ctx, s.st.Apps, ps)
	if err != nil {
		return nil, err
	}
	workers, err := listAll[schemas.Worker](ctx, s.st.Workers, ps)
	if err != nil {
		return nil, err
	}
	execs, err := listPlaced[schemas.Executor](ctx, s.st.Executors, workers, ps)
	if err != nil {
		return nil, err
	}
	keep := wanted(req.IDs)
	sel := make([]schemas.App, 0, len(apps))
	for _, a := range values(apps) {
		if keep(a.ID) {
			sel = append(sel, a)
		}
	}
	return &schemas.AppList{Apps: AppViews(sel, execs)}, nil
}

// handleStatus is stoker.api.status.
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
	ps := s.poisons()
	workers, err := listAll[schemas.Worker](ctx, s.st.Workers, ps)
	if err != nil {
		return nil, err
	}
	apps, err := listAll[schemas.App](ctx, s.st.Apps, ps)
	if err != nil {
		return nil, err
	}
	snap.Workers, snap.Apps = values(workers), values(apps)
	if snap.Drivers, err = listPlaced[schemas.Driver](ctx, s.st.Drivers, workers, ps); err != nil {
		return nil, err
	}
	if snap.Executors, err = listPlaced[schemas.Executor](ctx, s.st.Executors, workers, ps); err != nil {
		return nil, err
	}
	snap.Poisoned = ps.ByBucket()
	return Summarize(snap), nil
}
