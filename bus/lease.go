package bus

import (
	"context"
	"fmt"
	"time"

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

// LeaseTTL is the lease bucket's TTL: the one place a lease's time-to-live
// is set (by the store's owner, see Provision). Electors read it here
// instead of carrying a copy that must match.
func LeaseTTL(ctx context.Context, leader jetstream.KeyValue) (time.Duration, error) {
	st, err := leader.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("bus: lease bucket: %w", err)
	}
	if st.TTL() <= 0 {
		return 0, fmt.Errorf("bus: lease bucket %s has no TTL: %w (provision the store again)", st.Bucket(), ErrStoreMismatch)
	}
	return st.TTL(), nil
}
