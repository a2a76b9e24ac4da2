package registration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// index is registration's read side: every record of the four record
// buckets kept in memory by watching them (bus.Follow), with what the hot
// requests need indexed so that none of them costs a scan of the history
// (issue 12): executors by app, and what holds resources by worker.
// Listing, status and a registering worker's reconciliation read it after
// sync, which waits until it has applied every write the buckets held when
// the request arrived: a reply is never older than a direct read would
// have been (a client sees its own writes). Nothing here depends on
// retention: ended records are kept (and counted) until they are deleted.
//
// All fields below mu are guarded by it.
type index struct {
	st     *bus.Store
	log    zerolog.Logger
	poison *bus.Reporter

	mu      sync.RWMutex
	changed chan struct{} // closed and replaced after every applied entry
	workers map[string]*schemas.Worker
	drivers map[string]*schemas.Driver
	apps    map[string]*schemas.App
	// execByApp is every executor by app id, then key.
	execByApp map[string]map[string]*schemas.Executor
	nExec     int
	// holdExec and holdDrv are the executors and drivers whose state holds
	// resources, by the worker they name, then key / id.
	holdExec map[string]map[string]*schemas.Executor
	holdDrv  map[string]map[string]*schemas.Driver
	// revs is each indexed key's revision, by bucket (retention deletes at it).
	revs map[string]map[string]uint64
	// poisoned is the keys skipped, by bucket, with their revision.
	poisoned map[string]map[string]uint64
	// seen is the highest stream sequence applied per bucket; loaded says
	// the bucket's initial values arrived.
	seen   map[string]uint64
	loaded map[string]bool
	// stalled asks a bucket's follower to watch again (buffered, one).
	stalled map[string]chan struct{}
	// last reads each bucket's last sequence for sync, one stream info at
	// a time however many requests wait (svc.Fresh). Set at construction.
	last map[string]*svc.Fresh[uint64]
}

// lastSeqTimeout bounds one read of a bucket's last sequence; the requests
// waiting for it are bounded by their own contexts.
const lastSeqTimeout = 5 * time.Second

// reWatchDelay spaces the attempts to watch a bucket again.
const reWatchDelay = 500 * time.Millisecond

// stallAfter is how long sync lets a loaded watch stay behind the
// bucket's last sequence before it has the watch started again. A watch
// can stop delivering without closing: after a bus restart, nats.go may
// keep reporting its ordered consumer "not active" instead of recreating
// it (seen in the chaos test's bus restart: every list waited forever).
const stallAfter = 2 * time.Second

var timeAfter = time.After

func newIndex(st *bus.Store, log zerolog.Logger, poison *bus.Reporter) *index {
	x := &index{
		st: st, log: log, poison: poison, changed: make(chan struct{}),
		workers: map[string]*schemas.Worker{}, drivers: map[string]*schemas.Driver{}, apps: map[string]*schemas.App{},
		execByApp: map[string]map[string]*schemas.Executor{},
		holdExec:  map[string]map[string]*schemas.Executor{}, holdDrv: map[string]map[string]*schemas.Driver{},
		poisoned: map[string]map[string]uint64{}, revs: map[string]map[string]uint64{}, seen: map[string]uint64{}, loaded: map[string]bool{},
		stalled: map[string]chan struct{}{}, last: map[string]*svc.Fresh[uint64]{},
	}
	if st != nil {
		for _, kv := range x.indexed() {
			x.last[kv.Bucket()] = svc.NewFresh(context.Background(), lastSeqTimeout,
				func(ctx context.Context) (uint64, error) { return lastSeq(ctx, kv) })
		}
	}
	return x
}

// indexed is the buckets the index follows.
func (x *index) indexed() []jetstream.KeyValue {
	return []jetstream.KeyValue{x.st.Workers, x.st.Drivers, x.st.Apps, x.st.Executors}
}

// start watches every indexed bucket, its goroutines in g. A watch that
// ends (the bus went away long enough for the watcher to give up) is
// started again; until it catches up, sync waits.
func (x *index) start(ctx context.Context, g *svc.Group) error {
	for _, kv := range x.indexed() {
		x.stalled[kv.Bucket()] = make(chan struct{}, 1)
	}
	for _, kv := range x.indexed() {
		w, err := kv.WatchAll(ctx)
		if err != nil {
			return fmt.Errorf("watch %s: %w", kv.Bucket(), err)
		}
		g.Go(func(ctx context.Context) { x.follow(ctx, kv, w) })
	}
	return nil
}

func (x *index) follow(ctx context.Context, kv jetstream.KeyValue, w jetstream.KeyWatcher) {
	b := kv.Bucket()
	for {
		// The keys a (re)watch delivers before it caught up: what it did not
		// deliver was deleted while no watch ran.
		fresh := map[string]bool{}
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-x.stalled[b]:
				cancel()
			case <-wctx.Done():
			}
		}()
		err := bus.Follow(wctx, w, func(e jetstream.KeyValueEntry) {
			x.apply(b, e)
			if fresh != nil {
				fresh[e.Key()] = true
			}
		}, func() bool {
			x.mu.Lock()
			x.dropAllButLocked(b, fresh)
			fresh = nil
			x.loaded[b] = true
			x.notifyLocked()
			x.mu.Unlock()
			return true
		})
		cancel()
		_ = w.Stop()
		stalled := err != nil && errors.Is(err, context.Canceled)
		if ctx.Err() != nil || !(errors.Is(err, bus.ErrWatchClosed) || stalled) {
			return
		}
		// Until the new watch caught up, requests wait (sync).
		x.mu.Lock()
		x.loaded[b] = false
		x.mu.Unlock()
		why := "index watch closed; watching again"
		if stalled {
			why = "index watch stopped delivering; watching again"
		}
		x.log.Warn().Str("bucket", b).Msg(why)
		for {
			if w, err = kv.WatchAll(ctx); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-timeAfter(reWatchDelay):
			}
		}
	}
}

// dropAllButLocked forgets every key of bucket not in keep.
func (x *index) dropAllButLocked(bucket string, keep map[string]bool) {
	var gone []string
	switch bucket {
	case bus.BucketWorkers:
		for k := range x.workers {
			if !keep[k] {
				gone = append(gone, k)
			}
		}
	case bus.BucketDrivers:
		for k := range x.drivers {
			if !keep[k] {
				gone = append(gone, k)
			}
		}
	case bus.BucketApps:
		for k := range x.apps {
			if !keep[k] {
				gone = append(gone, k)
			}
		}
	case bus.BucketExecutors:
		for _, m := range x.execByApp {
			for k := range m {
				if !keep[k] {
					gone = append(gone, k)
				}
			}
		}
	}
	for k := range x.poisoned[bucket] {
		if !keep[k] {
			gone = append(gone, k)
		}
	}
	for _, k := range gone {
		x.removeLocked(bucket, k)
	}
}

// apply puts one watched entry into the index. An entry no newer than
// what the index holds for its key is not decoded again: the index holds
// it already, written there by this service (wrote) before its watch
// brought it, or brought by an earlier watch (a stream's revision names
// one value of one key).
func (x *index) apply(bucket string, e jetstream.KeyValueEntry) {
	key, rev, deleted := e.Key(), e.Revision(), bus.Deleted(e)
	x.mu.RLock()
	known := rev <= x.revs[bucket][key]
	x.mu.RUnlock()
	var v any
	var perr error
	if !deleted && !known {
		v, perr = decodeFor(bucket, key, e.Value())
	}
	if perr != nil {
		x.poison.Report(bus.Poison{Bucket: bucket, Key: key, Revision: rev, Err: perr})
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if rev > x.seen[bucket] {
		x.seen[bucket] = rev
	}
	if rev <= x.revs[bucket][key] {
		x.notifyLocked()
		return
	}
	x.removeLocked(bucket, key)
	switch {
	case perr != nil:
		if x.poisoned[bucket] == nil {
			x.poisoned[bucket] = map[string]uint64{}
		}
		x.poisoned[bucket][key] = rev
	case !deleted:
		x.putRevLocked(bucket, key, v, rev)
	}
	x.notifyLocked()
}

// putRevLocked indexes v as key's value at revision rev.
func (x *index) putRevLocked(bucket, key string, v any, rev uint64) {
	x.putLocked(key, v)
	if x.revs[bucket] == nil {
		x.revs[bucket] = map[string]uint64{}
	}
	x.revs[bucket][key] = rev
}

// wrote puts a record this service has just written (or read) at rev into
// the index, ahead of the watch, which then has nothing to decode: an
// executor's RUNNING record came back by the watch and was decoded
// again, a tenth of registration's CPU while placing. v must not change
// afterwards. A revision the watch has reached is ignored: the watch
// applied it, and whatever followed it (a delete included), already. What
// the watch brings later than rev replaces it as usual. Requests still
// sync on the watch (seen is the watch's alone), so a reply is never
// older than it was without this.
func (x *index) wrote(bucket, key string, v any, rev uint64) {
	if rev == 0 || v == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if rev <= x.seen[bucket] || rev <= x.revs[bucket][key] {
		return
	}
	x.removeLocked(bucket, key)
	x.putRevLocked(bucket, key, v, rev)
	x.notifyLocked()
}

// decodeFor decodes and checks a value of bucket.
func decodeFor(bucket, key string, data []byte) (any, error) {
	var v any
	switch bucket {
	case bus.BucketWorkers:
		v = new(schemas.Worker)
	case bus.BucketDrivers:
		v = new(schemas.Driver)
	case bus.BucketApps:
		v = new(schemas.App)
	case bus.BucketExecutors:
		v = new(schemas.Executor)
	default:
		return nil, fmt.Errorf("bucket %s is not indexed", bucket)
	}
	if err := bus.DecodeChecked(key, data, v); err != nil {
		return nil, err
	}
	return v, nil
}

// removeLocked forgets what key held in bucket.
func (x *index) removeLocked(bucket, key string) {
	if p := x.poisoned[bucket]; p != nil {
		delete(p, key)
	}
	if r := x.revs[bucket]; r != nil {
		delete(r, key)
	}
	switch bucket {
	case bus.BucketWorkers:
		delete(x.workers, key)
	case bus.BucketApps:
		delete(x.apps, key)
	case bus.BucketDrivers:
		if d := x.drivers[key]; d != nil {
			delete(x.drivers, key)
			if m := x.holdDrv[d.WorkerID]; m != nil {
				delete(m, key)
				if len(m) == 0 {
					delete(x.holdDrv, d.WorkerID)
				}
			}
		}
	case bus.BucketExecutors:
		app, _, err := schemas.ParseExecutorKey(key)
		if err != nil {
			return
		}
		ex := x.execByApp[app][key]
		if ex == nil {
			return
		}
		delete(x.execByApp[app], key)
		if len(x.execByApp[app]) == 0 {
			delete(x.execByApp, app)
		}
		x.nExec--
		if m := x.holdExec[ex.WorkerID]; m != nil {
			delete(m, key)
			if len(m) == 0 {
				delete(x.holdExec, ex.WorkerID)
			}
		}
	}
}

// putLocked indexes a decoded, checked record under key.
func (x *index) putLocked(key string, v any) {
	switch r := v.(type) {
	case *schemas.Worker:
		x.workers[key] = r
	case *schemas.App:
		x.apps[key] = r
	case *schemas.Driver:
		x.drivers[key] = r
		if r.State.Holds() {
			if x.holdDrv[r.WorkerID] == nil {
				x.holdDrv[r.WorkerID] = map[string]*schemas.Driver{}
			}
			x.holdDrv[r.WorkerID][key] = r
		}
	case *schemas.Executor:
		if x.execByApp[r.AppID] == nil {
			x.execByApp[r.AppID] = map[string]*schemas.Executor{}
		}
		x.execByApp[r.AppID][key] = r
		x.nExec++
		if r.State.Holds() {
			if x.holdExec[r.WorkerID] == nil {
				x.holdExec[r.WorkerID] = map[string]*schemas.Executor{}
			}
			x.holdExec[r.WorkerID][key] = r
		}
	}
}

func (x *index) notifyLocked() {
	close(x.changed)
	x.changed = make(chan struct{})
}

// sync waits until the index holds every write the indexed buckets held
// when it was called: one stream-info request per bucket (the server
// answers it from the stream's counters, whatever its size), then a wait
// for the watches to reach those sequences.
func (x *index) sync(ctx context.Context, only ...jetstream.KeyValue) error {
	if len(only) == 0 {
		only = x.indexed()
	}
	want, err := x.lastSeqs(ctx, only)
	if err != nil {
		return err
	}
	stall := time.NewTimer(stallAfter)
	defer stall.Stop()
	for {
		x.mu.RLock()
		ok, ch := true, x.changed
		var behind []string
		for b, last := range want {
			if !x.loaded[b] || x.seen[b] < last {
				ok = false
			}
			if x.loaded[b] && x.seen[b] < last {
				behind = append(behind, b)
			}
		}
		x.mu.RUnlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the records index: %w", ctx.Err())
		case <-ch:
		case <-stall.C:
			for _, b := range behind {
				select {
				case x.stalled[b] <- struct{}{}:
				default:
				}
			}
			stall.Reset(stallAfter)
		}
	}
}

// lastSeqs is the last sequence of each bucket, by name, read at once;
// each read began after the call (svc.Fresh), so it covers every write
// the caller made before.
func (x *index) lastSeqs(ctx context.Context, kvs []jetstream.KeyValue) (map[string]uint64, error) {
	seqs := make([]uint64, len(kvs))
	errs := make([]error, len(kvs))
	var wg sync.WaitGroup
	for i, kv := range kvs {
		wg.Go(func() {
			if f := x.last[kv.Bucket()]; f != nil {
				seqs[i], errs[i] = f.Get(ctx)
			} else {
				seqs[i], errs[i] = lastSeq(ctx, kv)
			}
		})
	}
	wg.Wait()
	want := make(map[string]uint64, len(kvs))
	for i, kv := range kvs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		want[kv.Bucket()] = seqs[i]
	}
	return want, nil
}

// lastSeq is the last sequence of the bucket's stream: every key's latest
// revision is at most this, and a watcher that applied it has seen them all.
func lastSeq(ctx context.Context, kv jetstream.KeyValue) (uint64, error) {
	s, err := kv.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("status of %s: %w", kv.Bucket(), err)
	}
	bs, ok := s.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return 0, fmt.Errorf("status of %s: no stream info", kv.Bucket())
	}
	// The leader answers from its own state; one that lost its peers would
	// let the index serve records it can no longer prove current.
	if err := bus.StreamQuorum(bs.StreamInfo()); err != nil {
		return 0, err
	}
	return bs.StreamInfo().State.LastSeq, nil
}

// executor is the indexed record of executor key of app and its
// revision, without waiting for the index to catch up (a copy; nil and 0
// when it holds none): a hint for a revision-guarded write, never a fact.
func (x *index) executor(app, key string) (*schemas.Executor, uint64) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e := x.execByApp[app][key]
	if e == nil {
		return nil, 0
	}
	c := *e
	return &c, x.revs[bus.BucketExecutors][key]
}

// workerInstance is the agent instance of worker wid as indexed, without
// waiting for the index to catch up ("" when it holds no record): a hint,
// never a fact.
func (x *index) workerInstance(wid string) string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if w := x.workers[wid]; w != nil {
		return w.Instance
	}
	return ""
}

// appFailures is the failure count fields of app id as indexed (ok false
// when it holds no record), without waiting for the index to catch up.
func (x *index) appFailures(id string) (a schemas.App, ok bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	c := x.apps[id]
	if c == nil {
		return schemas.App{}, false
	}
	return schemas.App{FailuresFrom: c.FailuresFrom, ConsecutiveFailures: c.ConsecutiveFailures,
		FailedExecutors: slices.Clone(c.FailedExecutors)}, true
}

// workersLocked copies the worker map.
func (x *index) workersLocked() map[string]*schemas.Worker {
	out := make(map[string]*schemas.Worker, len(x.workers))
	for k, w := range x.workers {
		out[k] = w
	}
	return out
}

// usageLocked is every worker's usage from the holding indexes, leaving
// out (and reporting) records that hold resources on a worker without a
// record (schemas.CheckPlaced), as listing does.
func (x *index) usageLocked(ps *bus.Poisons) schemas.Usages {
	u := schemas.Usages{}
	for wid, m := range x.holdExec {
		for k, e := range m {
			if x.workers[wid] == nil {
				ps.Add(bus.Poison{Bucket: bus.BucketExecutors, Key: k, Err: schemas.CheckPlaced(true, wid, false)})
				continue
			}
			u.AddExecutor(e)
		}
	}
	for wid, m := range x.holdDrv {
		for k, d := range m {
			if x.workers[wid] == nil {
				ps.Add(bus.Poison{Bucket: bus.BucketDrivers, Key: k, Err: schemas.CheckPlaced(true, wid, false)})
				continue
			}
			u.AddDriver(d)
		}
	}
	return u
}

// poisonedLocked adds the skipped keys to ps.
func (x *index) poisonedLocked(ps *bus.Poisons) {
	for b, m := range x.poisoned {
		for k, rev := range m {
			ps.Add(bus.Poison{Bucket: b, Key: k, Revision: rev, Err: errors.New("poisoned")})
		}
	}
}

// executorsOfLocked is the executors of app, sorted by key, without those
// holding resources on a worker that has no record.
func (x *index) executorsOfLocked(app string, ps *bus.Poisons) []schemas.Executor {
	m := x.execByApp[app]
	out := make([]schemas.Executor, 0, len(m))
	for k, e := range m {
		if e.State.Holds() && x.workers[e.WorkerID] == nil {
			ps.Add(bus.Poison{Bucket: bus.BucketExecutors, Key: k, Err: schemas.CheckPlaced(true, e.WorkerID, false)})
			continue
		}
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// placedOn is what the records place on worker wid and hold there: the
// registration's reconciliation reads it before writing the worker ALIVE.
func (x *index) placedOn(ctx context.Context, wid string) (placed, error) {
	p := placed{read: true, executors: map[string]*schemas.Executor{}, drivers: map[string]*schemas.Driver{}}
	if err := x.sync(ctx); err != nil {
		return p, err
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	for k, e := range x.holdExec[wid] {
		p.executors[k] = e
	}
	for k, d := range x.holdDrv[wid] {
		p.drivers[k] = d
	}
	return p, nil
}
