package scheduler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// mirror keeps one bucket's records in an in-memory map by watching it.
// Every mirror of a view shares the view's lock, so a plan reads all of
// them at one instant; the maps are the Snapshot's maps, never replaced.
type mirror[T any] struct {
	kv     jetstream.KeyValue
	bucket string
	only   string // if set, the one key mirrored
	log    zerolog.Logger
	poison *bus.Reporter

	// skip, when set, leaves a value out of items (it is not needed for
	// planning); set is called with every value the watch brings, after
	// it is put in items or left out. Both run under mu.
	skip func(key string, v *T) bool
	set  func(key string, v *T)
	// quiet, when set, says a change from old to v cannot change a plan:
	// the watch applies it without asking for a pass. Runs under mu.
	quiet func(old, v *T) bool

	mu     *sync.Mutex // guards the fields below
	gen    *uint64     // the view's change count, raised by every change applied
	items  map[string]*T
	revs   map[string]uint64 // key → highest revision applied
	loaded bool              // the initial values arrived
	// seen is the highest stream sequence the watch delivered; need, the
	// bucket's last sequence read when this scheduler started leading: a
	// leader plans only once seen ≥ need (a watch that stalled after a bus
	// restart, not yet found out by the Keeper, counts as loaded).
	seen, need uint64
}

func newMirror[T any](kv jetstream.KeyValue, mu *sync.Mutex, gen *uint64, items map[string]*T, log zerolog.Logger, poison *bus.Reporter) *mirror[T] {
	return &mirror[T]{kv: kv, bucket: kv.Bucket(), mu: mu, gen: gen, items: items, revs: map[string]uint64{},
		log: log.With().Str("bucket", kv.Bucket()).Logger(), poison: poison}
}

// watch starts watching the bucket; updates run until ctx ends, calling
// changed after each.
func (m *mirror[T]) watch(ctx context.Context, g *svc.Group, changed func()) error {
	w, err := m.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", m.kv.Bucket(), err)
	}
	g.Go(func(ctx context.Context) { m.run(ctx, w, changed) })
	return nil
}

func (m *mirror[T]) run(ctx context.Context, w jetstream.KeyWatcher, changed func()) {
	// A Keeper, not a bare watch: a mirror whose watch closed or stalled
	// after a bus restart would let the leader plan on a frozen view. While
	// a replacement watch catches up the mirror is not loaded, so no pass
	// runs (readyLocked).
	bus.Keeper{
		KV:  m.kv,
		Log: m.log,
		Apply: func(e jetstream.KeyValueEntry) {
			m.mu.Lock()
			// Reaching the barrier (need) is worth a pass too.
			reached := m.seen < m.need && e.Revision() >= m.need
			m.seen = max(m.seen, e.Revision())
			matters := m.setLocked(e.Key(), e.Revision(), e.Value(), bus.Deleted(e), false) || reached
			m.mu.Unlock()
			if matters {
				changed()
			}
		},
		CaughtUp: func() {
			m.mu.Lock()
			m.loaded = true
			m.mu.Unlock()
			changed()
		},
		Lost: func() {
			m.mu.Lock()
			m.loaded = false
			m.mu.Unlock()
		},
	}.Run(ctx, w, false)
}

// setLocked puts one record into the map if rev is newer than what it
// holds (or, with force, at least as new: to undo an optimistic Apply).
// It reports whether the change may change a plan (see quiet).
func (m *mirror[T]) setLocked(key string, rev uint64, data []byte, deleted, force bool) bool {
	if m.only != "" && key != m.only {
		return false
	}
	if old := m.revs[key]; rev < old || (rev == old && !force) {
		return false
	}
	m.revs[key] = rev
	*m.gen++
	if deleted {
		delete(m.items, key)
		return true
	}
	v := new(T)
	if err := bus.DecodeChecked(key, data, v); err != nil {
		// A poisoned value replaces what the key held: the older record is
		// no longer the fact, and the new one is never acted upon.
		delete(m.items, key)
		m.poison.Report(bus.Poison{Bucket: m.bucket, Key: key, Revision: rev, Err: err})
		return true
	}
	old := m.installLocked(key, v)
	return old == nil || m.quiet == nil || !m.quiet(old, v)
}

// installLocked puts v into items as key's value, or leaves it out (skip),
// and returns what items held. A value left out was seen too (set): the
// end of an executor of an ended app is what a kill of the app's teardown
// waits for (the window's samples, the kill no longer in flight).
func (m *mirror[T]) installLocked(key string, v *T) (old *T) {
	old = m.items[key]
	if m.skip != nil && m.skip(key, v) {
		delete(m.items, key)
	} else {
		m.items[key] = v
	}
	if m.set != nil {
		m.set(key, v)
	}
	return old
}

// wrote puts a record this scheduler has just written at rev into the
// map, ahead of the watch, whose copy of rev then finds it held
// (setLocked ignores a revision it holds) and is not decoded again: the
// echo of each executor record the scheduler creates was half of what it
// decoded while placing. v must not change afterwards. A revision the
// watch has reached is ignored: the watch applied it, and whatever
// followed it, already. It asks for no pass: the plan that wrote v was
// applied to the view already (only the write's stamps differ).
func (m *mirror[T]) wrote(key string, rev uint64, v *T) {
	if rev == 0 || v == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if (m.only != "" && key != m.only) || rev <= m.seen || rev <= m.revs[key] {
		return
	}
	m.revs[key] = rev
	*m.gen++
	m.installLocked(key, v)
}

// refreshFor bounds how long refresh retries a read the bus does not
// answer (a stream electing a leader after a node died, a reconnect). A
// variable for tests.
var refreshFor = 10 * time.Second

// refresh re-reads one record after a write that did not go as planned,
// replacing what an optimistic Apply put in the map. It reads on a context
// of its own (the write's may be what expired) and retries transient
// failures for up to refreshFor. A key the bucket never gave this mirror
// (its revision 0: the value is the planner's own, a create whose outcome
// is unknown) is forgotten if it still cannot be read: if the create
// landed, the watch brings the record. Kept, the planned value would count
// as placed forever: an app whose two executor creates timed out while a
// bus node died stayed WAITING with no executor, its cores reserved by two
// records that did not exist (TestChaos_BusNodeKills).
//
// It returns the record read, decoded apart from the map (nil if there is
// none or it could not be read): an applier whose write failed looks in it
// for its own change, landed with its answer lost.
func (m *mirror[T]) refresh(ctx context.Context, key string) *T {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshFor)
	defer cancel()
	var e jetstream.KeyValueEntry
	err := bus.RetryTransient(ctx, 2*time.Second, func(ctx context.Context) error {
		var err error
		e, err = m.kv.Get(ctx, key)
		return err
	})
	var read *T
	if err == nil && e.Operation() == jetstream.KeyValuePut {
		if v := new(T); bus.DecodeChecked(key, e.Value(), v) == nil {
			read = v
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case err == nil:
		m.setLocked(key, e.Revision(), e.Value(), false, true)
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		m.setLocked(key, m.revs[key], nil, true, true)
	case m.revs[key] == 0:
		m.setLocked(key, 0, nil, true, true)
		m.log.Warn().Err(err).Str("key", key).Msg("cannot read back a record whose write failed; forgetting the planned value (the watch brings the record if the write landed)")
	default:
		m.log.Warn().Err(err).Str("key", key).Msg("cannot read back a record whose write failed; the view keeps the planned value until the watch brings a newer one")
	}
	return read
}

// view is the scheduler's mirror of the cluster: one mirror per bucket,
// one lock. snap's maps are the mirrors' maps.
type view struct {
	mu        sync.Mutex
	snap      *Snapshot
	clusterKV map[string]*schemas.Cluster
	// gen counts the changes applied to the mirrors (under mu): a pass
	// over an unchanged view plans what the last one did.
	gen uint64

	workers   *mirror[schemas.Worker]
	drivers   *mirror[schemas.Driver]
	apps      *mirror[schemas.App]
	executors *mirror[schemas.Executor]
	cluster   *mirror[schemas.Cluster]
	poison    *bus.Reporter
}

func newView(st *bus.Store, log zerolog.Logger, poison *bus.Reporter) *view {
	v := &view{snap: NewSnapshot(), clusterKV: map[string]*schemas.Cluster{}, poison: poison}
	v.workers = newMirror(st.Workers, &v.mu, &v.gen, v.snap.Workers, log, poison)
	v.drivers = newMirror(st.Drivers, &v.mu, &v.gen, v.snap.Drivers, log, poison)
	v.apps = newMirror(st.Apps, &v.mu, &v.gen, v.snap.Apps, log, poison)
	v.executors = newMirror(st.Executors, &v.mu, &v.gen, v.snap.Executors, log, poison)
	v.cluster = newMirror(st.Cluster, &v.mu, &v.gen, v.clusterKV, log, poison)
	v.cluster.only = bus.KeyClusterState
	v.historyOut()
	v.executors.quiet = startedAsPlaced
	return v
}

// historyOut keeps history out of the snapshot.
func (v *view) historyOut() {
	// History stays out of the plan (issue 12): an ended executor of an
	// ended app changes no decision (placement, reconciliation and run-once
	// counting read live apps only; what holds resources is always kept), so
	// it is not mirrored, and an app that ends drops its ended executors.
	// A pass then costs the same with 0 or 100,000 finished executors stored.
	v.executors.skip = func(_ string, e *schemas.Executor) bool {
		a := v.snap.Apps[e.AppID]
		return !e.State.Holds() && a != nil && a.State.Terminal()
	}
	v.apps.set = func(id string, a *schemas.App) {
		if !a.State.Terminal() {
			return
		}
		for n := 0; n < a.NextExecutorID; n++ {
			k := schemas.ExecutorKey(id, n)
			if e := v.snap.Executors[k]; e != nil && !e.State.Holds() {
				delete(v.snap.Executors, k)
			}
		}
	}
}

// startedAsPlaced says an executor only went from LAUNCHING to RUNNING
// where it was placed, holding the same resources: the agent's report of
// a launch the plan already counted. No decision of Schedule turns on it
// alone (usage, placement and reconciliation count both states alike; an
// app with a RUNNING executor is only spared being failed), so the watch
// does not ask for a pass: at 10,000 executors starting, each report
// re-planned the whole snapshot (30 – 400 ms of CPU each on a loaded
// 2-core machine, a fifth of the process). The next pass or tick sees it.
func startedAsPlaced(old, e *schemas.Executor) bool {
	return old.State == schemas.ExecutorLaunching && e.State == schemas.ExecutorRunning &&
		old.WorkerID == e.WorkerID && old.AppID == e.AppID && old.Cores == e.Cores &&
		old.MemoryMB == e.MemoryMB && maps.EqualFunc(old.Resources, e.Resources, slices.Equal[[]string])
}

// watch starts every mirror.
func (v *view) watch(ctx context.Context, g *svc.Group, changed func()) error {
	for _, m := range []interface {
		watch(context.Context, *svc.Group, func()) error
	}{v.workers, v.drivers, v.apps, v.executors, v.cluster} {
		if err := m.watch(ctx, g, changed); err != nil {
			return err
		}
	}
	return nil
}

// readyLocked reports whether every bucket's initial values arrived, every
// mirror delivered what its bucket held when this leader started (barrier)
// and the cluster is ALIVE for epoch: the only time a leader may schedule.
func (v *view) readyLocked(epoch uint64) bool {
	c := v.clusterKV[bus.KeyClusterState]
	return v.workers.loaded && v.drivers.loaded && v.apps.loaded && v.executors.loaded && v.cluster.loaded &&
		v.workers.seen >= v.workers.need && v.drivers.seen >= v.drivers.need && v.apps.seen >= v.apps.need &&
		v.executors.seen >= v.executors.need && v.cluster.seen >= v.cluster.need &&
		c != nil && c.Epoch == epoch && c.State == schemas.ClusterAlive
}

// barrier reads every mirrored bucket's last sequence, so that no pass
// plans before each mirror has delivered it (readyLocked). A new leader
// calls it before its first pass: its mirrors were a standby's, and after
// a bus restart a watch can stall unnoticed for seconds (a leader then
// placed an app's executors a second time, seen in TestChaos_LeaderKills).
// A bucket whose sequence cannot be read within a few tries is left
// without a barrier (as before), and logged.
func (v *view) barrier(ctx context.Context, log *zerolog.Logger) {
	type bucket struct {
		kv   jetstream.KeyValue
		need *uint64
	}
	for _, b := range []bucket{{v.workers.kv, &v.workers.need}, {v.drivers.kv, &v.drivers.need},
		{v.apps.kv, &v.apps.need}, {v.executors.kv, &v.executors.need}, {v.cluster.kv, &v.cluster.need}} {
		var last uint64
		var err error
		for try := 0; try < 3; try++ {
			if last, err = bus.LastSeq(ctx, b.kv); err == nil || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Warn().Err(err).Str("bucket", b.kv.Bucket()).Msg("cannot read the bucket's last sequence: planning without waiting for the mirror to reach it")
			}
			continue
		}
		v.mu.Lock()
		*b.need = last
		v.mu.Unlock()
	}
}

// clusterState is the mirrored stoker-cluster/state, nil if absent.
func (v *view) clusterState() *schemas.Cluster {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.clusterKV[bus.KeyClusterState]
}

// placedLocked is the snapshot a plan may act on: the view's, without the
// executors and drivers that hold resources on a worker with no record
// (reported, never acted upon: no LOST, no kill, no usage). The maps are
// the view's own when nothing is left out, the common case.
func (v *view) placedLocked() *Snapshot {
	known := func(id string) bool { return v.snap.Workers[id] != nil }
	execs := dropUnplaced(v.snap.Executors, v.executors, known)
	drivers := dropUnplaced(v.snap.Drivers, v.drivers, known)
	if len(execs) == len(v.snap.Executors) && len(drivers) == len(v.snap.Drivers) {
		return v.snap
	}
	s := *v.snap
	s.Executors, s.Drivers = execs, drivers
	return &s
}

// dropUnplaced is items without what bus.CheckPlacedIn refuses, reported
// with m's revision; items itself when it refuses nothing.
func dropUnplaced[T any](items map[string]*T, m *mirror[T], known func(string) bool) map[string]*T {
	var bad []string
	for k, x := range items {
		if err := bus.CheckPlacedIn(x, known); err != nil {
			bad = append(bad, k)
			m.poison.Report(bus.Poison{Bucket: m.bucket, Key: k, Revision: m.revs[k], Err: err})
		}
	}
	if len(bad) == 0 {
		return items
	}
	out := maps.Clone(items)
	for _, k := range bad {
		delete(out, k)
	}
	return out
}
