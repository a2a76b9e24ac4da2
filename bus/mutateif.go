package bus

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// MutateIf is Mutate for a change to an existing record that may no longer
// apply: fn gets a copy of the current record (never nil) and returns
// whether to write it, after changing it. It reports whether the change was
// written; false with no error means the record is absent or fn declined
// (the record moved on). fn may run several times, each on a fresh copy.
func MutateIf[T any](ctx context.Context, kv jetstream.KeyValue, key string, fn func(rec *T) bool) (*T, bool, error) {
	var wrote bool
	v, _, err := Mutate(ctx, kv, key, func(cur *T) (*T, error) {
		wrote = false
		if cur == nil {
			return nil, nil
		}
		next := *cur
		if !fn(&next) {
			return nil, nil
		}
		wrote = true
		return &next, nil
	})
	if err != nil {
		return nil, false, err
	}
	return v, wrote, nil
}

// MutateIfRetrying is MutateIf retried while the bus answers with
// transient errors (RetryTransient: each attempt bounded by per, until ctx
// ends). A write that landed without its answer is read back by the next
// attempt, so fn sees it there and must recognise it (it is the record's
// value now, not the one fn started from).
func MutateIfRetrying[T any](ctx context.Context, per time.Duration, kv jetstream.KeyValue, key string, fn func(rec *T) bool) (*T, bool, error) {
	var (
		v     *T
		wrote bool
	)
	err := RetryTransient(ctx, per, func(ctx context.Context) error {
		var err error
		v, wrote, err = MutateIf(ctx, kv, key, fn)
		return err
	})
	return v, wrote, err
}
