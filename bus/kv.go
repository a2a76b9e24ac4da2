package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/schemas"
)

// Bucket names: the public KV contract (see docs/contract.md).
const (
	BucketWorkers   = "stoker-workers"
	BucketDrivers   = "stoker-drivers"
	BucketApps      = "stoker-apps"
	BucketExecutors = "stoker-executors"
	BucketLeader    = "stoker-leader"
	BucketCluster   = "stoker-cluster"
	// BucketTokens records join tokens by id (a hash, never the secret).
	BucketTokens = "stoker-tokens"

	// KeyScheduler is the scheduler's lease key in stoker-leader.
	KeyScheduler = "scheduler"
	// KeyClusterState is the phase of the current epoch in stoker-cluster.
	KeyClusterState = "state"

	// StreamEvents keeps stoker.events.> with bounded retention.
	StreamEvents = "stoker-events"
)

// Bucket is one bucket of the store: its name, the schemas type of its
// records and its handle in a Store. The table below is the one place a
// bucket is tied to its record type.
type Bucket struct {
	Name string
	// Record returns a new zero record of the bucket's type.
	Record func() any
	handle func(*Store) *jetstream.KeyValue
}

// In is the bucket's handle in st.
func (b Bucket) In(st *Store) jetstream.KeyValue { return *b.handle(st) }

// StoreBuckets lists every bucket of the store with its record type.
func StoreBuckets() []Bucket {
	return []Bucket{
		{BucketWorkers, func() any { return new(schemas.Worker) }, func(s *Store) *jetstream.KeyValue { return &s.Workers }},
		{BucketDrivers, func() any { return new(schemas.Driver) }, func(s *Store) *jetstream.KeyValue { return &s.Drivers }},
		{BucketApps, func() any { return new(schemas.App) }, func(s *Store) *jetstream.KeyValue { return &s.Apps }},
		{BucketExecutors, func() any { return new(schemas.Executor) }, func(s *Store) *jetstream.KeyValue { return &s.Executors }},
		{BucketLeader, func() any { return new(schemas.Lease) }, func(s *Store) *jetstream.KeyValue { return &s.Leader }},
		{BucketCluster, func() any { return new(schemas.Cluster) }, func(s *Store) *jetstream.KeyValue { return &s.Cluster }},
	}
}

// FindBucket finds a bucket by its full name (stoker-workers) or its short
// one (workers).
func FindBucket(name string) (Bucket, bool) {
	for _, b := range StoreBuckets() {
		if name == b.Name || bucketPrefix+name == b.Name {
			return b, true
		}
	}
	return Bucket{}, false
}

// bucketPrefix starts every bucket's name.
const bucketPrefix = "stoker-"

// Buckets names every bucket of the store.
func Buckets() []string {
	var out []string
	for _, b := range StoreBuckets() {
		out = append(out, b.Name)
	}
	return out
}

// ErrNotFound is returned when a key has no live value.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a compare-and-set lost to another writer
// more times than Mutate retries.
var ErrConflict = errors.New("conflicting concurrent writes")

// Store holds the handles to every bucket.
type Store struct {
	JS        jetstream.JetStream
	Workers   jetstream.KeyValue
	Drivers   jetstream.KeyValue
	Apps      jetstream.KeyValue
	Executors jetstream.KeyValue
	Leader    jetstream.KeyValue
	Cluster   jetstream.KeyValue
}

// retry runs fn with a 5s budget per attempt until it succeeds, fails with
// a permanent error, or ctx ends. Several owners create the same replicated
// streams at once on a cluster that may have just elected its meta leader:
// an attempt can time out while the next one succeeds.
func retry(ctx context.Context, fn func(context.Context) error) error {
	wait := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		var p permanent
		if errors.As(err, &p) {
			return p.error
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		if wait < 2*time.Second {
			wait *= 2
		}
	}
}

// Entry is a decoded KV value with its revision.
type Entry[T any] struct {
	Key      string
	Value    *T
	Revision uint64
	Created  time.Time // when this revision was written
}

// Get reads and decodes key. A missing or deleted key is ErrNotFound.
func Get[T any](ctx context.Context, kv jetstream.KeyValue, key string) (*T, uint64, error) {
	v, rev, err := get[T](ctx, kv, key)
	if err != nil {
		return nil, 0, err
	}
	return v, rev, nil
}

// get is Get that also returns the revision of a value it cannot decode
// (with the decode error), for MutateOrReplace.
func get[T any](ctx context.Context, kv jetstream.KeyValue, key string) (*T, uint64, error) {
	r, err := GetRecord(ctx, kv, key, func() any { return new(T) })
	if err != nil {
		return nil, r.Revision, err
	}
	return r.Value.(*T), r.Revision, nil
}

// GetRecord is Get for a record type known at run time (a Bucket's
// Record). A value it cannot decode is an error, with the Record's
// revision and time set.
func GetRecord(ctx context.Context, kv jetstream.KeyValue, key string, newRecord func() any) (Record, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return Record{}, fmt.Errorf("%s %q: %w", kv.Bucket(), key, ErrNotFound)
	}
	if err != nil {
		return Record{}, fmt.Errorf("%s %q: %w", kv.Bucket(), key, err)
	}
	r := Record{Key: key, Value: newRecord(), Revision: e.Revision(), Created: e.Created(), Raw: e.Value()}
	if err := DecodeRecord(e.Value(), r.Value); err != nil {
		r.Value = nil
		return r, &undecodableError{fmt.Errorf("%s %q: %w", kv.Bucket(), key, err)}
	}
	return r, nil
}

// undecodableError marks a value that is there but cannot be decoded.
type undecodableError struct{ err error }

func (e *undecodableError) Error() string { return e.err.Error() }
func (e *undecodableError) Unwrap() error { return e.err }

// CreateNew creates a record under a fresh key: newKey names one, v builds
// the value for it; a key already taken (an id collision) is tried again
// with another, at most tries times. It returns the key written.
func CreateNew(ctx context.Context, kv jetstream.KeyValue, tries int, newKey func() string, v func(key string) any) (string, error) {
	for i := 0; ; i++ {
		key := newKey()
		_, err := Create(ctx, kv, key, v(key))
		if err == nil {
			return key, nil
		}
		if !IsCASConflict(err) || i+1 >= tries {
			return "", err
		}
	}
}

// Create writes key only if it has no live value (jetstream.ErrKeyExists otherwise).
func Create(ctx context.Context, kv jetstream.KeyValue, key string, v any) (uint64, error) {
	b, err := EncodeRecord(v)
	if err != nil {
		return 0, err
	}
	return kv.Create(ctx, key, b)
}

// Update writes key only if its last revision is rev
// (jetstream.ErrKeyRevisionMismatch otherwise).
func Update(ctx context.Context, kv jetstream.KeyValue, key string, v any, rev uint64) (uint64, error) {
	b, err := EncodeRecord(v)
	if err != nil {
		return 0, err
	}
	return kv.Update(ctx, key, b, rev)
}

// IsCASConflict reports whether err is a lost compare-and-set.
func IsCASConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// Mutate reads key, calls fn with the current value (nil if absent) and
// writes what fn returns with compare-and-set, retrying on conflict. fn must
// be a pure function of its argument: it may run several times. fn returning
// (nil, nil) writes nothing. Returns the value written (or the current one
// when nothing was written) and its revision. A value that cannot be
// decoded is an error.
func Mutate[T any](ctx context.Context, kv jetstream.KeyValue, key string, fn func(cur *T) (*T, error)) (*T, uint64, error) {
	return mutate(ctx, kv, key, fn, nil)
}

// MutateFrom is Mutate starting from a value the caller believes current
// (cur at revision rev, e.g. from a watch-fed index), saving the read: it
// is trusted only when fn changes it and the revision-guarded write
// succeeds, which proves it was the latest. Otherwise (no hint, fn
// changes nothing or fails on it, or the write finds a newer revision) it
// is Mutate, reading the record. fn may run twice and must not change cur.
func MutateFrom[T any](ctx context.Context, kv jetstream.KeyValue, key string, cur *T, rev uint64, fn func(cur *T) (*T, error)) (*T, uint64, error) {
	if cur != nil && rev > 0 {
		if next, err := fn(cur); err == nil && next != nil {
			nrev, err := Update(ctx, kv, key, next, rev)
			if err == nil {
				return next, nrev, nil
			}
			if !IsCASConflict(err) {
				return nil, 0, err
			}
		}
	}
	return mutate(ctx, kv, key, fn, nil)
}

// MutateOrReplace is Mutate for a record that must never block its writer:
// a value that cannot be decoded is reported to bad and counts as absent
// for fn, and what fn returns replaces it (still revision-guarded).
func MutateOrReplace[T any](ctx context.Context, kv jetstream.KeyValue, key string, bad func(error), fn func(cur *T) (*T, error)) (*T, uint64, error) {
	return mutate(ctx, kv, key, fn, bad)
}

func mutate[T any](ctx context.Context, kv jetstream.KeyValue, key string, fn func(cur *T) (*T, error), bad func(error)) (*T, uint64, error) {
	const attempts = 20
	for i := 0; i < attempts; i++ {
		cur, rev, err := get[T](ctx, kv, key)
		var undecodable *undecodableError
		switch {
		case err == nil, errors.Is(err, ErrNotFound):
		case bad != nil && errors.As(err, &undecodable):
			bad(err)
		default:
			return nil, 0, err
		}
		next, err := fn(cur)
		if err != nil {
			return cur, rev, err
		}
		if next == nil {
			return cur, rev, nil
		}
		var nrev uint64
		if rev == 0 {
			nrev, err = Create(ctx, kv, key, next)
		} else {
			nrev, err = Update(ctx, kv, key, next, rev)
		}
		if err == nil {
			return next, nrev, nil
		}
		if !IsCASConflict(err) {
			return nil, 0, err
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(time.Duration(i+1) * time.Millisecond):
		}
	}
	return nil, 0, fmt.Errorf("%s %q: %w", kv.Bucket(), key, ErrConflict)
}

// List reads every live record of a bucket through one ordered watcher
// (one round trip per bucket, not one per key). A value that cannot be
// decoded is an error.
func List[T any](ctx context.Context, kv jetstream.KeyValue) ([]Entry[T], error) {
	return ListSkipping[T](ctx, kv, nil)
}

// ListSkipping is List for readers that must not be stopped by one bad
// record: each value that does not decode or breaks its record's invariants
// (DecodeChecked) is passed to skip and left out. A nil skip makes it List.
func ListSkipping[T any](ctx context.Context, kv jetstream.KeyValue, skip func(Poison)) ([]Entry[T], error) {
	var skipRecord func(Record, Poison)
	if skip != nil {
		skipRecord = func(_ Record, p Poison) { skip(p) }
	}
	es, err := ListRecords(ctx, kv, func() any { return new(T) }, skipRecord)
	if err != nil {
		return nil, err
	}
	out := make([]Entry[T], len(es))
	for i, e := range es {
		out[i] = Entry[T]{Key: e.Key, Value: e.Value.(*T), Revision: e.Revision, Created: e.Created}
	}
	return out, nil
}

// Record is an Entry whose type is known at run time: Value is what the
// bucket's Record function made (a pointer to a schemas type).
type Record struct {
	Key      string
	Value    any
	Revision uint64
	Created  time.Time
	// Raw is the stored value as it is (shown for a poisoned one).
	Raw []byte
}

// ListRecords is ListSkipping for a record type known at run time (a
// Bucket's Record): every live value decoded into a new newRecord() and
// checked (DecodeChecked), in one ordered watch. skip gets a poisoned
// record without its Value; a nil skip makes a poisoned record an error.
func ListRecords(ctx context.Context, kv jetstream.KeyValue, newRecord func() any, skip func(Record, Poison)) ([]Record, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	var out []Record
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok || e == nil { // closed, or the initial values delivered
				return out, nil
			}
			r := Record{Key: e.Key(), Value: newRecord(), Revision: e.Revision(), Created: e.Created(), Raw: e.Value()}
			if err := DecodeChecked(e.Key(), e.Value(), r.Value); err != nil {
				p := Poison{Bucket: kv.Bucket(), Key: e.Key(), Revision: e.Revision(), Err: err}
				if skip == nil {
					return nil, p
				}
				r.Value = nil
				skip(r, p)
				continue
			}
			out = append(out, r)
		}
	}
}

// CheckPlacedIn is schemas.CheckPlaced for any record: an executor or a
// driver holding resources on a worker that known does not know. Other
// records pass.
func CheckPlacedIn(v any, known func(workerID string) bool) error {
	switch r := v.(type) {
	case *schemas.Executor:
		return schemas.CheckPlaced(r.State.Holds(), r.WorkerID, known(r.WorkerID))
	case *schemas.Driver:
		return schemas.CheckPlaced(r.State.Holds(), r.WorkerID, known(r.WorkerID))
	}
	return nil
}

// DropUnplaced leaves out of es the records that CheckPlacedIn refuses,
// passing each to skip: the rule across buckets, applied after listing.
func DropUnplaced[T any](bucket string, es []Entry[T], known func(workerID string) bool, skip func(Poison)) []Entry[T] {
	out := es[:0]
	for _, e := range es {
		if err := CheckPlacedIn(e.Value, known); err != nil {
			if skip != nil {
				skip(Poison{Bucket: bucket, Key: e.Key, Revision: e.Revision, Err: err})
			}
			continue
		}
		out = append(out, e)
	}
	return out
}

// KnownWorkers is the known function of DropUnplaced over listed workers.
func KnownWorkers(ws []Entry[schemas.Worker]) func(string) bool {
	ids := make(map[string]bool, len(ws))
	for _, w := range ws {
		ids[w.Key] = true
	}
	return func(id string) bool { return ids[id] }
}

// Map is a List result keyed by KV key.
func Map[T any](es []Entry[T]) map[string]*T {
	out := make(map[string]*T, len(es))
	for _, e := range es {
		out[e.Key] = e.Value
	}
	return out
}
