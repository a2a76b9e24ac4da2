package bus

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Keeper follows a KV bucket for as long as its context lives, through bus
// outages: a watch that closes, or that stops delivering while the bucket
// holds newer writes, is replaced by a new one. The second case is real:
// after a bus restart nats.go can keep an ordered consumer "not active"
// without recreating it, and the watch then delivers nothing, with no
// error, forever (found in the registration index, stop 18; a scheduler
// whose mirror stalled so would plan on a frozen view).
//
// A replacement watch delivers every key's latest entry again, values
// Apply has seen and deletes it may have missed: a delete or purge leaves
// a marker as the key's latest entry, and no Stoker bucket ever removes
// markers (nothing calls PurgeDeletes, and only the lease bucket has a
// MaxAge). So the follower needs no "what was not delivered is gone" rule,
// which would be wrong anyway: the server may leave a key out of a new
// watch's initial values when the key is written while the watch is
// created, delivering the new value just after the end-of-initial marker
// (seen in TestKeeper_ReplacesAStalledOrClosedWatch).
type Keeper struct {
	KV  jetstream.KeyValue
	Log zerolog.Logger
	// Apply gets every entry, in order (revisions only grow per key, but
	// a replacement watch delivers values Apply has seen before).
	Apply func(jetstream.KeyValueEntry)
	// CaughtUp runs when a watch delivered every entry the bucket held
	// when it started: the first watch (unless Run was told it had) and
	// each replacement.
	CaughtUp func()
	// Lost runs when a watch is given up: until the next CaughtUp the
	// follower's view may be behind the bucket.
	Lost func()
	// StallAfter is how long a watch may stay behind a write the bucket
	// reported before it is replaced (default 2 s): the bucket's last
	// sequence is read every StallAfter.
	StallAfter time.Duration
	// RetryWait spaces attempts to watch again (default 500 ms).
	RetryWait time.Duration
}

// Run follows k.KV starting with w (the caller's first watch, so that a
// failure to watch at all is the caller's error to return) until ctx
// ends. loaded says the caller already consumed w's initial values (the
// marker that ends them). Run stops every watch it was given or made.
func (k Keeper) Run(ctx context.Context, w jetstream.KeyWatcher, loaded bool) {
	stallAfter, retry := k.StallAfter, k.RetryWait
	if stallAfter <= 0 {
		stallAfter = 2 * time.Second
	}
	if retry <= 0 {
		retry = 500 * time.Millisecond
	}
	b := k.KV.Bucket()
	for {
		why := k.follow(ctx, w, loaded, stallAfter)
		_ = w.Stop()
		if ctx.Err() != nil {
			return
		}
		k.Log.Warn().Str("bucket", b).Msgf("watch %s; watching again", why)
		if k.Lost != nil {
			k.Lost()
		}
		loaded = false
		for {
			var err error
			if w, err = k.KV.WatchAll(ctx); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
		}
	}
}

// follow applies w's entries until ctx ends (""), w closes or w stalls
// (why it ended).
func (k Keeper) follow(ctx context.Context, w jetstream.KeyWatcher, loaded bool, stallAfter time.Duration) string {
	initial := !loaded // the entries before the end-of-initial marker
	// seen: the highest sequence applied. target: a write the bucket held
	// a check ago, and then: seen at that check. A watch that applied
	// nothing for a whole period while behind target has stalled (one
	// still loading a big bucket is behind, but moving).
	var seen, target, then uint64
	tick := time.NewTicker(stallAfter)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ""
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return "closed"
			case e != nil:
				seen = max(seen, e.Revision())
				k.Apply(e)
			case initial:
				initial = false
				if k.CaughtUp != nil {
					k.CaughtUp()
				}
			}
		case <-tick.C:
			if target > 0 && seen < target && seen == then {
				return "stopped delivering"
			}
			target, then = 0, seen
			if last, err := LastSeq(ctx, k.KV); err == nil && last > seen {
				target = last
			}
		}
	}
}

// LastSeq is the last sequence of kv's stream: every key's latest revision
// is at most this, and a watch that applied it has seen every write made
// before it was read.
func LastSeq(ctx context.Context, kv jetstream.KeyValue) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := kv.Status(ctx)
	if err != nil {
		return 0, err
	}
	bs, ok := s.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return 0, errors.New("no stream info")
	}
	return bs.StreamInfo().State.LastSeq, nil
}
