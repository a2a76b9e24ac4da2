package bus

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Transient reports whether err is the kind of failure a degraded bus
// gives for a while and then stops giving: a request that timed out, no
// responder (a stream or service between leaders), a JetStream API error
// in the 5xx range (after a heal, JetStream answers 500/503 for seconds
// while its streams catch up), or a connection that is reconnecting.
// Decisions (a compare-and-set lost, a record not found, a refusal) are
// not transient: retrying them changes nothing.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code >= 500
	}
	for _, t := range []error{context.DeadlineExceeded, nats.ErrTimeout, nats.ErrNoResponders,
		jetstream.ErrNoStreamResponse, nats.ErrConnectionReconnecting, nats.ErrDisconnected,
		nats.ErrConnectionClosed, jetstream.ErrServerShutdown} {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// retryFirst and retryMax are the first and the longest pause of
// RetryTransient.
const (
	retryFirst = 50 * time.Millisecond
	retryMax   = time.Second
)

// RetryTransient runs fn, each attempt bounded by per (0: only by ctx),
// again after a growing pause (50 ms doubling to 1 s) while it fails with a
// Transient error and ctx lasts. It returns fn's last error: nil, a
// decision, or a transient error once ctx ended. A write retried after a
// timeout may have landed the first time, so fn must be a compare-and-set
// that finds out (bus.Mutate, bus.MutateIf), never a blind put.
func RetryTransient(ctx context.Context, per time.Duration, fn func(context.Context) error) error {
	wait := retryFirst
	for {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if per > 0 {
			actx, cancel = context.WithTimeout(ctx, per)
		}
		err := fn(actx)
		cancel()
		if !Transient(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}
