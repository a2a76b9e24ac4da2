package scheduler

import (
	"context"
	"errors"
	"fmt"
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
	kv   jetstream.KeyValue
	only string // if set, the one key mirrored
	log  zerolog.Logger

	mu     *sync.Mutex // guards the fields below
	items  map[string]*T
	revs   map[string]uint64 // key → highest revision applied
	loaded bool              // the initial values arrived
}

func newMirror[T any](kv jetstream.KeyValue, mu *sync.Mutex, items map[string]*T, log zerolog.Logger) *mirror[T] {
	return &mirror[T]{kv: kv, mu: mu, items: items, revs: map[string]uint64{},
		log: log.With().Str("bucket", kv.Bucket()).Logger()}
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
	if err := bus.DecodeRecord(data, v); err != nil {
		m.log.Warn().Err(err).Str("key", key).Msg("undecodable record ignored")
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
}

func newView(st *bus.Store, log zerolog.Logger) *view {
	v := &view{snap: NewSnapshot(), clusterKV: map[string]*schemas.Cluster{}}
	v.workers = newMirror(st.Workers, &v.mu, v.snap.Workers, log)
	v.drivers = newMirror(st.Drivers, &v.mu, v.snap.Drivers, log)
	v.apps = newMirror(st.Apps, &v.mu, v.snap.Apps, log)
	v.executors = newMirror(st.Executors, &v.mu, v.snap.Executors, log)
	v.cluster = newMirror(st.Cluster, &v.mu, v.clusterKV, log)
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
