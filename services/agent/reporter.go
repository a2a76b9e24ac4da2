package agent

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// Reporter timings: one attempt waits reportTimeout; retries back off from
// reportBackoffBase to reportBackoffMax.
const (
	reportTimeout     = 2 * time.Second
	reportBackoffBase = 100 * time.Millisecond
	reportBackoffMax  = 5 * time.Second
)

// reporter sends state changes one at a time, in the order they happened,
// each retried until the cluster acknowledges it: a report is never dropped
// because the bus or the registration service is away for a while (only a
// report the cluster rejects as malformed is, since it never could succeed).
type reporter struct {
	nc      *nats.Conn
	subject string
	log     zerolog.Logger
	// onAck is called with each acknowledged report and its answer.
	onAck func(schemas.StateChange, *schemas.StateAck)

	mu    sync.Mutex
	queue []schemas.StateChange
	wake  chan struct{}
	// retries counts attempts after a report's first (stoker bench's figure).
	retries atomic.Int64
}

func newReporter(nc *nats.Conn, subject string, log zerolog.Logger, onAck func(schemas.StateChange, *schemas.StateAck)) *reporter {
	return &reporter{nc: nc, subject: subject, log: log, onAck: onAck, wake: make(chan struct{}, 1)}
}

// push queues a report; it never blocks.
func (r *reporter) push(sc schemas.StateChange) {
	r.mu.Lock()
	r.queue = append(r.queue, sc)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// pending is the number of reports not yet acknowledged.
func (r *reporter) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

func (r *reporter) head() (schemas.StateChange, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 {
		return schemas.StateChange{}, false
	}
	return r.queue[0], true
}

func (r *reporter) pop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queue[0] = schemas.StateChange{}
	r.queue = r.queue[1:]
}

// run drains the queue until ctx is cancelled.
func (r *reporter) run(ctx context.Context) {
	for {
		sc, ok := r.head()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-r.wake:
				continue
			}
		}
		ack, ok := r.send(ctx, sc)
		if !ok {
			return
		}
		r.pop()
		if r.onAck != nil {
			r.onAck(sc, ack)
		}
	}
}

// send delivers one report, retrying until it is acknowledged (true) or
// ctx is cancelled (false). A report refused as malformed is logged and
// given up (true, nil ack): retrying it would block every later one.
func (r *reporter) send(ctx context.Context, sc schemas.StateChange) (*schemas.StateAck, bool) {
	log := r.log.With().Str("id", reportID(sc)).Str("state", sc.State).Logger()
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, reportTimeout)
		var ack schemas.StateAck
		err := bus.Call(cctx, r.nc, r.subject, &sc, &ack)
		cancel()
		if err == nil {
			if attempt > 0 {
				log.Info().Int("attempts", attempt+1).Msg("state report delivered")
			}
			return &ack, true
		}
		if ctx.Err() != nil {
			return nil, false
		}
		if code := bus.ErrorCode(err); code == bus.CodeBadRequest || code == bus.CodeGone || code == bus.CodeConflict {
			// Conflict: this agent instance was replaced by a newer one,
			// whose registration settled what runs on the worker.
			log.Error().Err(err).Msg("state report refused; dropping it")
			return nil, true
		}
		r.retries.Add(1)
		if attempt == 0 || attempt%20 == 0 {
			log.Warn().Err(err).Int("attempt", attempt+1).Msg("state report not acknowledged; retrying")
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-time.After(svc.Backoff(attempt, reportBackoffBase, reportBackoffMax, rand.Int64N)):
		}
	}
}

func reportID(sc schemas.StateChange) string {
	if sc.DriverID != "" {
		return sc.DriverID
	}
	return schemas.ExecutorKey(sc.AppID, sc.ExecutorID)
}
