package scheduler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"

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

	mu     *sync.Mutex // guards the fields below
	items  map[string]*T
	revs   map[string]uint64 // key → highest revision applied
	loaded bool              // the initial values arrived
}

func newMirror[T any](kv jetstream.KeyValue, mu *sync.Mutex, items map[string]*T, log zerolog.Logger, poison *bus.Reporter) *mirror[T] {
	return &mirror[T]{kv: kv, bucket: kv.Bucket(), mu: mu, items: items, revs: map[string]uint64{},
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
	defer func() { _ = w.Stop() }()
	apply := func(e jetstream.KeyValueEntry) {
		m.mu.Lock()
		m.setLocked(e.Key(), e.Revision(), e.Value(), bus.Deleted(e), false)
		m.mu.Unlock()
		changed()
	}
	caughtUp := func() bool {
		m.mu.Lock()
		m.loaded = true
		m.mu.Unlock()
		changed()
		return true
	}
	if err := bus.Follow(ctx, w, apply, caughtUp); errors.Is(err, bus.ErrWatchClosed) {
		m.log.Error().Msg("watch ended")
	}
}

// setLocked puts one record into the map if rev is newer than what it
// holds (or, with force, at least as new: to undo an optimistic Apply).
func (m *mirror[T]) setLocked(key string, rev uint64, data []byte, deleted, force bool) {
	if m.only != "" && key != m.only {
		return
	}
	if old := m.revs[key]; rev < old || (rev == old && !force) {
		return
	}
	m.revs[key] = rev
	if deleted {
		delete(m.items, key)
		return
	}
	v := new(T)
	if err := bus.DecodeChecked(key, data, v); err != nil {
		// A poisoned value replaces what the key held: the older record is
		// no longer the fact, and the new one is never acted upon.
		delete(m.items, key)
		m.poison.Report(bus.Poison{Bucket: m.bucket, Key: key, Revision: rev, Err: err})
		return
	}
	m.items[key] = v
}

// refresh re-reads one record after a write that did not go as planned,
// replacing what an optimistic Apply put in the map.
func (m *mirror[T]) refresh(ctx context.Context, key string) {
	e, err := m.kv.Get(ctx, key)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case err == nil:
		m.setLocked(key, e.Revision(), e.Value(), false, true)
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		m.setLocked(key, m.revs[key], nil, true, true)
	}
}

// view is the scheduler's mirror of the cluster: one mirror per bucket,
// one lock. snap's maps are the mirrors' maps.
type view struct {
	mu        sync.Mutex
	snap      *Snapshot
	clusterKV map[string]*schemas.Cluster

	workers   *mirror[schemas.Worker]
	drivers   *mirror[schemas.Driver]
	apps      *mirror[schemas.App]
	executors *mirror[schemas.Executor]
	cluster   *mirror[schemas.Cluster]
	poison    *bus.Reporter
}

func newView(st *bus.Store, log zerolog.Logger, poison *bus.Reporter) *view {
	v := &view{snap: NewSnapshot(), clusterKV: map[string]*schemas.Cluster{}, poison: poison}
	v.workers = newMirror(st.Workers, &v.mu, v.snap.Workers, log, poison)
	v.drivers = newMirror(st.Drivers, &v.mu, v.snap.Drivers, log, poison)
	v.apps = newMirror(st.Apps, &v.mu, v.snap.Apps, log, poison)
	v.executors = newMirror(st.Executors, &v.mu, v.snap.Executors, log, poison)
	v.cluster = newMirror(st.Cluster, &v.mu, v.clusterKV, log, poison)
	v.cluster.only = bus.KeyClusterState
	return v
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

// readyLocked reports whether every bucket's initial values arrived and
// the cluster is ALIVE for epoch: the only time a leader may schedule.
func (v *view) readyLocked(epoch uint64) bool {
	c := v.clusterKV[bus.KeyClusterState]
	return v.workers.loaded && v.drivers.loaded && v.apps.loaded && v.executors.loaded && v.cluster.loaded &&
		c != nil && c.Epoch == epoch && c.State == schemas.ClusterAlive
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
