package bus

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/schemas"
)

// CurrentLease reads stoker-leader/<key> and returns the lease with its
// epoch: the revision that created it (carried in the value after the first
// renewal, otherwise the entry's own revision). ErrNotFound if nobody holds it.
func CurrentLease(ctx context.Context, leader jetstream.KeyValue, key string) (*schemas.Lease, uint64, error) {
	l, rev, err := Get[schemas.Lease](ctx, leader, key)
	if err != nil {
		return nil, 0, err
	}
	return l, l.EpochOf(rev), nil
}
