package bus

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrWatchClosed is returned by Follow when the watcher closed under it.
var ErrWatchClosed = errors.New("bus: KV watcher closed")

// Follow hands a KV watcher's entries to apply, in order, until ctx ends
// (ctx.Err()) or the watcher closes (ErrWatchClosed). The nil entry that
// marks the end of the initial values calls caughtUp: it returns whether to
// keep following (false: Follow returns nil, to load the initial values
// before serving). A nil caughtUp keeps following. The caller stops w.
func Follow(ctx context.Context, w jetstream.KeyWatcher, apply func(jetstream.KeyValueEntry), caughtUp func() bool) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return ErrWatchClosed
			case e != nil:
				apply(e)
			case caughtUp != nil && !caughtUp():
				return nil
			}
		}
	}
}

// Deleted reports whether a watch entry removes its key (a delete, a purge
// or, in a bucket with limit markers, an expiry).
func Deleted(e jetstream.KeyValueEntry) bool {
	op := e.Operation()
	return op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge
}
