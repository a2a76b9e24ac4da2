package bus

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/schemas"
)

// Poison is one stored value that readers skip: it does not decode, or it
// breaks an invariant of its record type (schemas.Checker), or a rule
// across buckets (schemas.CheckPlaced). Such a value is reported and never
// acted upon; `stoker kv get` shows it and `stoker kv rm` deletes it.
type Poison struct {
	Bucket   string `json:"bucket"`
	Key      string `json:"key"`
	Revision uint64 `json:"revision"`
	Err      error  `json:"-"`
}

// Error is the reason, with the bucket and key.
func (p Poison) Error() string {
	return fmt.Sprintf("%s %q (revision %d): %v", p.Bucket, p.Key, p.Revision, p.Err)
}

// Unwrap is the reason.
func (p Poison) Unwrap() error { return p.Err }

// EventKindPoisoned is the kind of the event a Reporter emits.
const EventKindPoisoned = "poisoned"

// DecodeChecked decodes a KV value stored under key into v and checks the
// record's invariants when v has them. Every reader of the cluster's
// records goes through it (listing, the scheduler's mirror, recovery, the
// heartbeat service), so what it refuses is refused everywhere.
func DecodeChecked(key string, data []byte, v any) error {
	if err := DecodeRecord(data, v); err != nil {
		return err
	}
	return CheckRecord(key, v)
}

// CheckRecord runs v's invariants (schemas.Checker) for key; a type
// without any passes.
func CheckRecord(key string, v any) error {
	if c, ok := v.(schemas.Checker); ok {
		return c.Check(key)
	}
	return nil
}

// Reporter reports each poisoned value once per (bucket, key, revision): a
// warning in the log and a "poisoned" event. The event carries a
// Nats-Msg-Id of bucket/key/revision, so the events stream keeps one even
// when several services report the same value within its duplicate window.
// Safe for concurrent use; the zero value with a nil connection only logs.
type Reporter struct {
	NC  *nats.Conn
	Log zerolog.Logger

	mu       sync.Mutex
	seen     map[string]uint64 // bucket/key → revision reported
	reported int
}

// NewReporter returns a Reporter publishing events on nc (nil: none).
func NewReporter(nc *nats.Conn, log zerolog.Logger) *Reporter {
	return &Reporter{NC: nc, Log: log}
}

// Report reports p if its (bucket, key, revision) was not reported yet. A
// nil Reporter reports nothing.
func (r *Reporter) Report(p Poison) {
	if r == nil {
		return
	}
	id := p.Bucket + "/" + p.Key
	r.mu.Lock()
	if r.seen == nil {
		r.seen = map[string]uint64{}
	}
	if rev, ok := r.seen[id]; ok && rev == p.Revision {
		r.mu.Unlock()
		return
	}
	r.seen[id] = p.Revision
	r.reported++
	r.mu.Unlock()
	r.Log.Warn().Str("bucket", p.Bucket).Str("key", p.Key).Uint64("revision", p.Revision).
		Err(p.Err).Msg("impossible record skipped (see it with stoker kv get, delete it with stoker kv rm)")
	emitPoison(r.NC, p)
}

// Reported is how many reports were made.
func (r *Reporter) Reported() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reported
}

// emitPoison publishes the poisoned event with its deduplication id.
func emitPoison(nc *nats.Conn, p Poison) {
	if nc == nil {
		return
	}
	m, err := eventMsg(EventKindPoisoned, p.Bucket+"/"+p.Key, "POISONED", p.Error(), nc.Opts.Name, 0)
	if err != nil {
		return
	}
	m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("%s/%s/%d", p.Bucket, p.Key, p.Revision))
	if pub := publisherFor(nc); pub != nil {
		pub.add(m, time.Now())
	}
}

// Poisons collects the poisoned values of one read (for a status reply).
// Safe for concurrent use.
type Poisons struct {
	mu  sync.Mutex
	all []Poison
	r   *Reporter
}

// NewPoisons collects, and reports each to r (nil: only collects).
func NewPoisons(r *Reporter) *Poisons { return &Poisons{r: r} }

// Add collects p and reports it.
func (ps *Poisons) Add(p Poison) {
	if ps == nil {
		return
	}
	ps.mu.Lock()
	ps.all = append(ps.all, p)
	ps.mu.Unlock()
	ps.r.Report(p)
}

// ByBucket is the collected keys by bucket, sorted.
func (ps *Poisons) ByBucket() map[string][]string {
	if ps == nil {
		return nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if len(ps.all) == 0 {
		return nil
	}
	out := map[string][]string{}
	for _, p := range ps.all {
		if !slices.Contains(out[p.Bucket], p.Key) {
			out[p.Bucket] = append(out[p.Bucket], p.Key)
		}
	}
	for _, keys := range out {
		slices.Sort(keys)
	}
	return out
}

// IsImpossible reports whether err is a poisoned value's reason that is a
// broken invariant (not a decoding error).
func IsImpossible(err error) bool { return errors.Is(err, schemas.ErrImpossible) }
