package bus

import (
	"context"

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
