package sdk

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// Client is a typed client of a cluster's API: list, get, follow and kill
// workers, drivers and applications, read the status, the event history
// and logs. The CLI is built on it; so are the tests and, later, the web UI.
// Its methods are safe for concurrent use.
type Client struct {
	nc *nats.Conn
	// CallTimeout bounds each request whose context has no deadline.
	CallTimeout time.Duration
	// PollInterval is how often the Follow methods look when no event woke
	// them (a missed event, a credential without events). Default 2s.
	PollInterval time.Duration
}

// NewClient is a client on nc; the caller owns (and closes) nc.
func NewClient(nc *nats.Conn) *Client {
	return &Client{nc: nc, CallTimeout: 5 * time.Second, PollInterval: DefaultPollInterval}
}

// bounded is ctx, bounded by CallTimeout when it has no deadline.
func (c *Client) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); !ok && c.CallTimeout > 0 {
		return context.WithTimeout(ctx, c.CallTimeout)
	}
	return ctx, func() {}
}

func (c *Client) call(ctx context.Context, subject string, req, reply any) error {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	return bus.Call(ctx, c.nc, subject, req, reply)
}

// Workers lists every worker with the cores and memory in use.
func (c *Client) Workers(ctx context.Context) ([]schemas.WorkerView, error) {
	var list schemas.WorkerList
	err := c.call(ctx, bus.APIWorkersList, &schemas.ListRequest{}, &list)
	return list.Workers, err
}

// Cordon stops (cordon true) or allows again (false) new placements on a
// worker; what runs there keeps running.
func (c *Client) Cordon(ctx context.Context, workerID string, cordon bool) (*schemas.Ack, error) {
	req := schemas.CordonRequest{WorkerID: workerID, Cordon: cordon}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	return bus.CallAck(ctx, c.nc, bus.APIWorkersCordon, &req)
}

// Drain decommissions a worker: no new placements, its executors replaced
// elsewhere then killed there, what is left killed after deadline (0: the
// cluster's default, schemas.DefaultDrainDeadline).
func (c *Client) Drain(ctx context.Context, workerID string, deadline time.Duration) (*schemas.Ack, error) {
	req := schemas.DrainRequest{WorkerID: workerID, DeadlineMS: deadline.Milliseconds()}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	return bus.CallAck(ctx, c.nc, bus.APIWorkersDrain, &req)
}

// Drivers lists the drivers with the given ids, or every driver.
func (c *Client) Drivers(ctx context.Context, ids ...string) ([]schemas.Driver, error) {
	var list schemas.DriverList
	err := c.call(ctx, bus.APIDriversList, &schemas.ListRequest{IDs: ids}, &list)
	return list.Drivers, err
}

// Driver gets one driver; bus.ErrNotFound if the cluster has none by that id.
func (c *Client) Driver(ctx context.Context, id string) (*schemas.Driver, error) {
	ds, err := c.Drivers(ctx, id)
	return one(ds, err, "driver", id, func(d schemas.Driver) string { return d.ID })
}

// one picks the item with id out of a list answer.
func one[T any](items []T, err error, kind, id string, idOf func(T) string) (*T, error) {
	if err != nil {
		return nil, err
	}
	if i := slices.IndexFunc(items, func(v T) bool { return idOf(v) == id }); i >= 0 {
		return &items[i], nil
	}
	return nil, fmt.Errorf("%s %s: %w", kind, id, bus.ErrNotFound)
}

// Apps lists the applications with the given ids, or every application,
// with their executors.
func (c *Client) Apps(ctx context.Context, ids ...string) ([]schemas.AppView, error) {
	var list schemas.AppList
	err := c.call(ctx, bus.APIAppsList, &schemas.ListRequest{IDs: ids}, &list)
	return list.Apps, err
}

// App gets one application; bus.ErrNotFound if the cluster has none by that id.
func (c *Client) App(ctx context.Context, id string) (*schemas.AppView, error) {
	as, err := c.Apps(ctx, id)
	return one(as, err, "app", id, func(a schemas.AppView) string { return a.ID })
}

// WorkersWhere, DriversWhere and AppsWhere list what req selects (ids,
// states, live only); work not ended comes first.
func (c *Client) WorkersWhere(ctx context.Context, req schemas.ListRequest) ([]schemas.WorkerView, error) {
	var list schemas.WorkerList
	err := c.call(ctx, bus.APIWorkersList, &req, &list)
	return list.Workers, err
}

// DriversWhere: see WorkersWhere.
func (c *Client) DriversWhere(ctx context.Context, req schemas.ListRequest) ([]schemas.Driver, error) {
	var list schemas.DriverList
	err := c.call(ctx, bus.APIDriversList, &req, &list)
	return list.Drivers, err
}

// AppsWhere: see WorkersWhere.
func (c *Client) AppsWhere(ctx context.Context, req schemas.ListRequest) ([]schemas.AppView, error) {
	var list schemas.AppList
	err := c.call(ctx, bus.APIAppsList, &req, &list)
	return list.Apps, err
}

// Status is the cluster's leader, epoch, phase and totals.
func (c *Client) Status(ctx context.Context) (*schemas.Status, error) {
	var st schemas.Status
	if err := c.call(ctx, bus.APIStatus, &schemas.ListRequest{}, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// SchedulerStatus is the leading scheduler's pace of placement: its
// window of executors in flight and what is in flight now. With no
// leader the request has no responder (an error).
func (c *Client) SchedulerStatus(ctx context.Context) (*schemas.SchedulerStatus, error) {
	var st schemas.SchedulerStatus
	if err := c.call(ctx, bus.SchedulerStatus, &schemas.ListRequest{}, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Submit submits a driver (cluster mode).
func (c *Client) Submit(ctx context.Context, req schemas.SubmitDriver) (*schemas.SubmitDriverReply, error) {
	var reply schemas.SubmitDriverReply
	if err := c.call(ctx, bus.APIDriversSubmit, &req, &reply); err != nil {
		return nil, err
	}
	return &reply, nil
}

// Kill kills a driver (driver-...) or an application (app-...) and its
// executors. A refusal is an error wrapping bus.ErrRefused.
func (c *Client) Kill(ctx context.Context, id string) (*schemas.Ack, error) {
	req := schemas.KillRequest{ID: id}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	subject := bus.APIAppsKill
	if strings.HasPrefix(id, schemas.DriverIDPrefix) {
		subject = bus.APIDriversKill
	}
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	return bus.CallAck(ctx, c.nc, subject, &req)
}

// WorkerOf is the worker a driver or an executor (<appid>.<execid>) runs or
// ran on.
func (c *Client) WorkerOf(ctx context.Context, id string) (string, error) {
	if strings.HasPrefix(id, schemas.DriverIDPrefix) {
		d, err := c.Driver(ctx, id)
		if err != nil {
			return "", err
		}
		if d.WorkerID == "" {
			return "", fmt.Errorf("driver %s has not been placed on a worker yet (%s)", id, d.State)
		}
		return d.WorkerID, nil
	}
	appID, execID, err := schemas.ParseExecutorKey(id)
	if err != nil {
		return "", err
	}
	a, err := c.App(ctx, appID)
	if err != nil {
		return "", err
	}
	for _, x := range a.Executors {
		if x.ID == execID {
			return x.WorkerID, nil
		}
	}
	return "", fmt.Errorf("app %s has no executor %d", appID, execID)
}

// Logs reads the tail of a driver's or an executor's stdout or stderr from
// the agent of the worker it ran on.
func (c *Client) Logs(ctx context.Context, req schemas.LogsRequest) (*schemas.LogsReply, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if err := c.launchFailed(ctx, req.ID); err != nil {
		return nil, err
	}
	wid, err := c.WorkerOf(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	var reply schemas.LogsReply
	if err := c.call(ctx, bus.WorkerLogsSubject(wid), &req, &reply); err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, c.workerGone(ctx, wid, req.ID)
		}
		return nil, fmt.Errorf("logs from worker %s: %w", wid, err)
	}
	return &reply, nil
}

// ErrNoLog is wrapped by Logs for an executor that never started (its
// launch failed: the error says why) and for a worker whose agent is not
// running (its logs stay on its host until it runs again).
var ErrNoLog = errors.New("no log")

// launchFailed is an error wrapping ErrNoLog with the launch error when id
// is an executor whose launch failed, else nil.
func (c *Client) launchFailed(ctx context.Context, id string) error {
	appID, execID, err := schemas.ParseExecutorKey(id)
	if err != nil {
		return nil
	}
	a, err := c.App(ctx, appID)
	if err != nil {
		return nil // WorkerOf reports it
	}
	for _, x := range a.Executors {
		if x.ID == execID && x.Error != "" {
			return fmt.Errorf("executor %s on %s %w: its launch failed: %s", id, x.WorkerID, ErrNoLog, x.Error)
		}
	}
	return nil
}

// workerGone says why nobody answers for worker wid's logs.
func (c *Client) workerGone(ctx context.Context, wid, id string) error {
	state, where := "not running", ""
	if ws, err := c.Workers(ctx); err == nil {
		for _, w := range ws {
			if w.ID == wid {
				state = string(w.State)
				if w.WorkDir != "" {
					where = fmt.Sprintf("; its files stay on %s under %s", w.Host, w.WorkDir)
				}
			}
		}
	}
	return fmt.Errorf("%s: %w: worker %s is %s (its agent is not running, so nobody serves its logs)%s; start its agent again to read them",
		id, ErrNoLog, wid, state, where)
}

// Events calls fn with the cluster's events that q selects, in order (see
// bus.ReadEvents).
func (c *Client) Events(ctx context.Context, q bus.EventQuery, fn func(bus.StoredEvent) error) error {
	return bus.ReadEvents(ctx, c.nc, q, fn)
}

// DefaultPollInterval is the Follow methods' look when no event came.
const DefaultPollInterval = 2 * time.Second

// Follow is what a Follow method reports at each look: the record, or the
// error of that look (the cluster may be failing over; following goes on).
type Follow[T any] struct {
	Value *T
	Err   error
}

// FollowDriver follows the driver and calls fn with each change (state or
// worker) and each failed look, until the driver is terminal; it returns
// the final record. When ctx ends first it returns the last record seen and
// ctx's error. It looks again when an event about the driver arrives
// (stoker.events.driver.<id>), and every PollInterval in case one was
// missed: each look is one record by id, whatever the history.
func (c *Client) FollowDriver(ctx context.Context, id string, fn func(Follow[schemas.Driver])) (*schemas.Driver, error) {
	wake, stop := c.wakeOn(nil, bus.EventSubject("driver", id))
	defer stop()
	return follow(ctx, c.PollInterval, wake, func(ctx context.Context) (*schemas.Driver, error) { return c.Driver(ctx, id) },
		func(a, b *schemas.Driver) bool { return a.State == b.State && a.WorkerID == b.WorkerID },
		func(d *schemas.Driver) bool { return d.State.Terminal() }, fn)
}

// FollowApp is FollowDriver for an application: a change is one of the
// application's state or of any executor's; it looks again on the app's
// events and its executors' (stoker.events.executor.<appid>_<n>).
func (c *Client) FollowApp(ctx context.Context, id string, fn func(Follow[schemas.AppView])) (*schemas.AppView, error) {
	mine := bus.EventSubject("executor", id+"_")
	wake, stop := c.wakeOn(func(subj string) bool {
		return !strings.HasPrefix(subj, bus.EventSubject("executor", "")) || strings.HasPrefix(subj, mine)
	}, bus.EventSubject("app", id), bus.EventSubject("executor", "*"))
	defer stop()
	return follow(ctx, c.PollInterval, wake, func(ctx context.Context) (*schemas.AppView, error) { return c.App(ctx, id) },
		sameApp, func(a *schemas.AppView) bool { return a.State.Terminal() }, fn)
}

// wakeOn subscribes to subjects and signals (without blocking, coalesced)
// on each message whose subject keep accepts (nil: all). A subscription
// refused (a credential that may not read events) leaves only the periodic
// look.
func (c *Client) wakeOn(keep func(subject string) bool, subjects ...string) (<-chan struct{}, func()) {
	wake := make(chan struct{}, 1)
	var subs []*nats.Subscription
	for _, subj := range subjects {
		sub, err := c.nc.Subscribe(subj, func(m *nats.Msg) {
			if keep != nil && !keep(m.Subject) {
				return
			}
			select {
			case wake <- struct{}{}:
			default:
			}
		})
		if err == nil {
			subs = append(subs, sub)
		}
	}
	// The subscriptions reach the server before the first look, so no
	// change after it goes unheard.
	_ = c.nc.Flush()
	return wake, func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
}

func sameApp(a, b *schemas.AppView) bool {
	if a.State != b.State || len(a.Executors) != len(b.Executors) {
		return false
	}
	for i := range a.Executors {
		if a.Executors[i].ID != b.Executors[i].ID || a.Executors[i].State != b.Executors[i].State {
			return false
		}
	}
	return true
}

// follow looks with get at once, on each wake and every interval,
// reporting changes (by same) and errors to fn, until done says the value
// is final or ctx ends.
func follow[T any](ctx context.Context, interval time.Duration, wake <-chan struct{}, get func(context.Context) (*T, error),
	same func(a, b *T) bool, done func(*T) bool, fn func(Follow[T])) (*T, error) {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	var last *T
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		v, err := get(ctx)
		switch {
		case err == nil:
			if last == nil || !same(last, v) {
				fn(Follow[T]{Value: v})
			}
			last = v
			if done(v) {
				return v, nil
			}
		case ctx.Err() == nil:
			fn(Follow[T]{Err: err})
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-t.C:
		case <-wake:
		}
	}
}
