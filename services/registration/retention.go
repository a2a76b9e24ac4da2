package registration

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// Retention bounds what the record buckets keep of ended work, as Spark's
// master does (spark.deploy.retainedApplications, retainedDrivers, and its
// removal of dead workers): the newest RetainedApps ended apps stay (with
// their executors), older ones and their executors are deleted; likewise
// the newest RetainedDrivers ended drivers; a worker DEAD or DECOMMISSIONED
// for longer than DeadWorkerTTL, with nothing placed on it, is deleted.
// What is deleted stays in the events history (stoker events). Zero or
// negative disables that part.
type Retention struct {
	RetainedApps    int
	RetainedDrivers int
	DeadWorkerTTL   time.Duration
	// Interval is how often a registration instance looks. Default 30s.
	Interval time.Duration
	// ArtifactGrace turns on the artifact collector: at each look, every
	// object of stoker-artifacts that no app or driver record (of any
	// state) names, and that was uploaded or last touched longer ago than
	// this, is deleted. It is how long a client may take between storing
	// an artifact and the record naming it existing. Zero or negative
	// keeps every artifact.
	ArtifactGrace time.Duration
}

// Defaults as Spark's (retainedApplications = retainedDrivers = 200; a
// dead worker is forgotten after 15 times the worker timeout of 60s).
const (
	DefaultRetainedApps      = 200
	DefaultRetainedDrivers   = 200
	DefaultDeadWorkerTTL     = 15 * time.Minute
	DefaultRetentionInterval = 30 * time.Second
	DefaultArtifactGrace     = 15 * time.Minute
)

// DefaultRetention is Spark's bounds.
func DefaultRetention() Retention {
	return Retention{RetainedApps: DefaultRetainedApps, RetainedDrivers: DefaultRetainedDrivers,
		DeadWorkerTTL: DefaultDeadWorkerTTL, Interval: DefaultRetentionInterval, ArtifactGrace: DefaultArtifactGrace}
}

// Removal is one record retention deletes, at the revision it was judged.
type Removal struct {
	Bucket   string
	Key      string
	Revision uint64
	Why      string
}

// Keyed is a record with the revision it was read at.
type Keyed[T any] struct {
	Value    *T
	Revision uint64
}

// RetentionInput is what Expired judges: the records with their revisions.
type RetentionInput struct {
	Workers   map[string]Keyed[schemas.Worker]
	Drivers   map[string]Keyed[schemas.Driver]
	Apps      map[string]Keyed[schemas.App]
	Executors map[string]map[string]Keyed[schemas.Executor] // by app, then key
	// Holding is the workers something holds resources on.
	Holding map[string]bool
}

// Expired is what r removes from in at now: pure, the order is apps (each
// app's executors first, so an app is never gone while executors name
// it), then drivers, then workers. An ended app with an executor still
// holding resources is kept until it lets go.
func Expired(r Retention, in RetentionInput, now time.Time) []Removal {
	var out []Removal
	if r.RetainedApps > 0 {
		beyond := beyondNewest(in.Apps, r.RetainedApps, func(a *schemas.App) (bool, time.Time, string) {
			return a.State.Terminal(), a.UpdatedAt, a.ID
		})
		why := fmt.Sprintf("retention: beyond the newest %d ended apps", r.RetainedApps)
	apps:
		for _, a := range beyond {
			execs := in.Executors[a.Value.ID]
			keys := make([]string, 0, len(execs))
			for k, e := range execs {
				if e.Value.State.Holds() {
					continue apps
				}
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				out = append(out, Removal{bus.BucketExecutors, k, execs[k].Revision, why})
			}
			out = append(out, Removal{bus.BucketApps, a.Value.ID, a.Revision, why})
		}
	}
	if r.RetainedDrivers > 0 {
		beyond := beyondNewest(in.Drivers, r.RetainedDrivers, func(d *schemas.Driver) (bool, time.Time, string) {
			return d.State.Terminal(), d.UpdatedAt, d.ID
		})
		why := fmt.Sprintf("retention: beyond the newest %d ended drivers", r.RetainedDrivers)
		for _, d := range beyond {
			out = append(out, Removal{bus.BucketDrivers, d.Value.ID, d.Revision, why})
		}
	}
	if r.DeadWorkerTTL > 0 {
		var gone []string
		for id, w := range in.Workers {
			if w.Value.State.Gone() && now.Sub(w.Value.UpdatedAt) > r.DeadWorkerTTL && !in.Holding[id] {
				gone = append(gone, id)
			}
		}
		sort.Strings(gone)
		for _, id := range gone {
			w := in.Workers[id]
			out = append(out, Removal{bus.BucketWorkers, id, w.Revision,
				fmt.Sprintf("retention: %s for more than %s", w.Value.State, r.DeadWorkerTTL)})
		}
	}
	return out
}

// beyondNewest is the ended records of in past the newest keep, newest
// first (by update time, then id): what retention removes of one kind.
func beyondNewest[T any](in map[string]Keyed[T], keep int, judge func(*T) (ended bool, at time.Time, id string)) []Keyed[T] {
	type item struct {
		k  Keyed[T]
		at time.Time
		id string
	}
	var ended []item
	for _, k := range in {
		if done, at, id := judge(k.Value); done {
			ended = append(ended, item{k, at, id})
		}
	}
	sort.Slice(ended, func(i, j int) bool { return newer(ended[i].at, ended[j].at, ended[i].id, ended[j].id) })
	var out []Keyed[T]
	for _, e := range ended[min(keep, len(ended)):] {
		out = append(out, e.k)
	}
	return out
}

// newer orders by time, newest first, then by id.
func newer(a, b time.Time, ida, idb string) bool {
	if !a.Equal(b) {
		return a.After(b)
	}
	return ida > idb
}

// retentionInputLocked is the index as Expired reads it.
func (x *index) retentionInputLocked() RetentionInput {
	in := RetentionInput{
		Workers: map[string]Keyed[schemas.Worker]{}, Drivers: map[string]Keyed[schemas.Driver]{},
		Apps: map[string]Keyed[schemas.App]{}, Executors: map[string]map[string]Keyed[schemas.Executor]{},
		Holding: map[string]bool{},
	}
	for k, w := range x.workers {
		in.Workers[k] = Keyed[schemas.Worker]{w, x.revs[bus.BucketWorkers][k]}
	}
	for k, d := range x.drivers {
		in.Drivers[k] = Keyed[schemas.Driver]{d, x.revs[bus.BucketDrivers][k]}
	}
	for k, a := range x.apps {
		if !a.State.Terminal() {
			continue // only ended apps are judged: no need to copy their executors
		}
		in.Apps[k] = Keyed[schemas.App]{a, x.revs[bus.BucketApps][k]}
		m := map[string]Keyed[schemas.Executor]{}
		for ek, e := range x.execByApp[k] {
			m[ek] = Keyed[schemas.Executor]{e, x.revs[bus.BucketExecutors][ek]}
		}
		in.Executors[k] = m
	}
	for wid := range x.holdExec {
		in.Holding[wid] = true
	}
	for wid := range x.holdDrv {
		in.Holding[wid] = true
	}
	return in
}

// retain runs Expired on the index every r.Interval until ctx ends.
// Every registration instance runs it: each deletion is guarded by the
// revision it was judged at (a record that changed since is left for the
// next look), so two instances deleting at once delete each record once
// and never a record that came back to life.
func (s *Service) retain(ctx context.Context, r Retention) {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := s.retainOnce(ctx, r); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Int("removed", n).Msg("retention")
		}
		if r.ArtifactGrace > 0 {
			if n, err := s.collectArtifacts(ctx, r.ArtifactGrace); err != nil && ctx.Err() == nil {
				s.log.Warn().Err(err).Int("removed", n).Msg("artifact retention")
			}
		}
	}
}

// retainOnce removes what has expired now; it returns how many records it
// deleted.
func (s *Service) retainOnce(ctx context.Context, r Retention) (int, error) {
	if err := s.idx.sync(ctx); err != nil {
		return 0, err
	}
	s.idx.mu.RLock()
	in := s.idx.retentionInputLocked()
	s.idx.mu.RUnlock()
	kvs := map[string]jetstream.KeyValue{
		bus.BucketWorkers: s.st.Workers, bus.BucketDrivers: s.st.Drivers,
		bus.BucketApps: s.st.Apps, bus.BucketExecutors: s.st.Executors,
	}
	n := 0
	var errs []error
	skipApp := map[string]bool{} // an app one of whose executors could not go
	for _, rm := range Expired(r, in, now()) {
		if rm.Bucket == bus.BucketApps && skipApp[rm.Key] {
			continue
		}
		err := kvs[rm.Bucket].Purge(ctx, rm.Key, jetstream.LastRevision(rm.Revision))
		switch {
		case err == nil:
			n++
		case bus.IsCASConflict(err) || errors.Is(err, jetstream.ErrKeyNotFound):
			// Changed or gone since it was judged: the next look decides.
		default:
			errs = append(errs, fmt.Errorf("%s %s: %w", rm.Bucket, rm.Key, err))
		}
		if err != nil && rm.Bucket == bus.BucketExecutors {
			if app, _, perr := schemas.ParseExecutorKey(rm.Key); perr == nil {
				skipApp[app] = true
			}
		}
		if err == nil && rm.Bucket != bus.BucketExecutors {
			kind := map[string]string{bus.BucketApps: "app", bus.BucketDrivers: "driver", bus.BucketWorkers: "worker"}[rm.Bucket]
			s.emit(kind, rm.Key, StateRemoved, rm.Why)
		}
	}
	return n, errors.Join(errs...)
}

// StateRemoved is the state of the event retention emits for a record it
// deleted (not a record state: the record is gone).
const StateRemoved = "REMOVED"

// UnusedArtifacts is what the artifact collector deletes of objs at now:
// pure. An object goes when no record names its digest (refs holds the
// digests of every app and driver record still stored, whatever its
// state: an ended app keeps its files for as long as retention keeps the
// app) and its metadata was written longer than grace before now (a
// submission uploads or touches its files before its record exists).
// The result is ordered by digest.
func UnusedArtifacts(objs []bus.ArtifactObject, refs map[string]bool, now time.Time, grace time.Duration) []bus.ArtifactObject {
	var out []bus.ArtifactObject
	for _, o := range objs {
		if refs[o.Digest] || now.Sub(o.ModTime) <= grace {
			continue
		}
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out
}

// artifactRefsLocked is every digest an app or driver record names.
func (x *index) artifactRefsLocked() map[string]bool {
	refs := map[string]bool{}
	for _, d := range x.drivers {
		for _, a := range d.Artifacts {
			refs[a.Digest] = true
		}
	}
	for _, a := range x.apps {
		for _, f := range a.Executor.Artifacts {
			refs[f.Digest] = true
		}
	}
	return refs
}

// collectArtifacts deletes the artifacts UnusedArtifacts picks; it returns
// how many it deleted. The order is what makes it safe against a
// submission racing it: the clock is read first, then the objects (each
// with the sequence of its metadata message), then the records (after a
// sync, so the index is at least as new as the listing); each delete is
// guarded by the metadata sequence it was judged at. A client touches or
// uploads (a new metadata message) before it writes its record, so
// either the collector listed that new message (then it is younger than
// grace, unless the client took longer than grace to write its record),
// or the delete finds the sequence changed and deletes nothing, or the
// delete came first and the client's touch sees no object and uploads it
// again. Two registration instances deleting the same object: one wins,
// the other finds it changed.
func (s *Service) collectArtifacts(ctx context.Context, grace time.Duration) (int, error) {
	at := now()
	js, err := jetstream.New(s.nc)
	if err != nil {
		return 0, err
	}
	objs, err := bus.ListArtifacts(ctx, js)
	if err != nil || len(objs) == 0 {
		return 0, err
	}
	if err := s.idx.sync(ctx); err != nil {
		return 0, err
	}
	s.idx.mu.RLock()
	refs := s.idx.artifactRefsLocked()
	s.idx.mu.RUnlock()
	n := 0
	var errs []error
	for _, o := range UnusedArtifacts(objs, refs, at, grace) {
		err := bus.DeleteArtifactIf(ctx, js, o)
		switch {
		case err == nil:
			n++
			s.emit("artifact", o.Digest, StateRemoved,
				fmt.Sprintf("retention: no app or driver record names it, stored %s ago", at.Sub(o.ModTime).Round(time.Second)))
		case errors.Is(err, bus.ErrArtifactChanged):
			// Touched, re-uploaded or deleted since it was listed: the next look decides.
		default:
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}
