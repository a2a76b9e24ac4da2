package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// Reporter timings: one attempt waits reportTimeout (a batch also
// reportTimeoutEach per report: registration writes each), doubled after
// every attempt in a row that went unanswered, up to reportTimeoutMax;
// retries back off from reportBackoffBase to reportBackoffMax.
//
// The doubling is what lets a busy registration catch up. It drops a
// request that waited longer than its requester waits (bus.Lanes), so
// with a fixed wait, once its backlog is longer than that wait, every
// attempt expires in the queue and is sent again behind the others:
// 10,000 simulated agents' 100,000 executors killed at once took 80 s with
// 124,640 report retries. A retry that waits longer is served.
const (
	reportTimeout     = 2 * time.Second
	reportTimeoutMax  = 16 * time.Second
	reportTimeoutEach = 50 * time.Millisecond
	reportBackoffBase = 100 * time.Millisecond
	reportBackoffMax  = 5 * time.Second
)

// maxReportBatch bounds the reports sent in one StateChanges (at most
// schemas.MaxStateBatch); batchOffFor is how long the reporter sends one
// report at a time after the cluster did not take a batch at all (a
// registration from before batches, or a credential without the subject).
const (
	maxReportBatch = 128
	minBatchStep   = 8
	batchOffFor    = time.Minute
)

// reporter sends state changes in the order they happened, each retried
// until the cluster acknowledges it: a report is never dropped because the
// bus or the registration service is away for a while (only a report the
// cluster rejects as malformed is, since it never could succeed). With
// more than one queued it sends them together (StateChanges on
// batchSubject): registration takes one process's reports in order, and
// what it did not take stays queued, in order, for the next attempt.
type reporter struct {
	nc           *nats.Conn
	subject      string
	batchSubject string
	log          zerolog.Logger
	// onAck is called with each acknowledged report and its answer.
	onAck func(schemas.StateChange, *schemas.StateAck)

	mu    sync.Mutex
	queue []schemas.StateChange
	wake  chan struct{}
	// retries counts attempts after a report's first (stoker bench's figure).
	retries atomic.Int64
	// batchOff: until then, one report at a time; batchMax: the most sent
	// in one batch, halved when a batch is not acknowledged, raised again
	// by minBatchStep after one is (run's goroutine only).
	batchOff time.Time
	batchMax int
	// unanswered counts the attempts in a row that went without an answer
	// (run's goroutine only): the next attempt waits longer (waitFor).
	unanswered int
}

// waitFor is how long an attempt waits for its answer, base doubled for
// every attempt in a row that went unanswered, at most reportTimeoutMax.
func (r *reporter) waitFor(base time.Duration) time.Duration {
	d := base
	for i := 0; i < r.unanswered && d < reportTimeoutMax; i++ {
		d *= 2
	}
	return min(d, reportTimeoutMax)
}

// answered notes whether an attempt got an answer (any answer: a busy
// or refusing registration is reachable), for waitFor.
func (r *reporter) answered(err error) {
	switch {
	case err == nil:
		r.unanswered = 0
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		r.unanswered++
	default:
		r.unanswered = 0
	}
}

func newReporter(nc *nats.Conn, subject, batchSubject string, log zerolog.Logger, onAck func(schemas.StateChange, *schemas.StateAck)) *reporter {
	return &reporter{nc: nc, subject: subject, batchSubject: batchSubject, log: log, onAck: onAck, wake: make(chan struct{}, 1),
		batchMax: maxReportBatch}
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

// peek copies up to n reports from the head of the queue.
func (r *reporter) peek(n int) []schemas.StateChange {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.queue[:min(n, len(r.queue))])
}

// drop removes the reports settled[i] of the queue's first len(settled)
// (only run removes, and only from what it peeked: push appends behind).
func (r *reporter) drop(settled []bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(settled, false) { // the common case: the whole head
		clear(r.queue[:len(settled)])
		r.queue = r.queue[len(settled):]
		return
	}
	kept := make([]schemas.StateChange, 0, len(r.queue))
	for i, sc := range r.queue {
		if i >= len(settled) || !settled[i] {
			kept = append(kept, sc)
		}
	}
	r.queue = kept
}

// run drains the queue until ctx is cancelled.
func (r *reporter) run(ctx context.Context) {
	attempt := 0 // batches in a row with a report not taken
	for {
		batch := r.peek(r.batchMax)
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-r.wake:
				continue
			}
		}
		if len(batch) > 1 && r.batchSubject != "" && time.Now().After(r.batchOff) {
			again, ok := r.sendBatch(ctx, batch)
			if !ok {
				return
			}
			if again == 0 {
				attempt = 0
				continue
			}
			if again > 0 {
				r.retries.Add(int64(again))
				select {
				case <-ctx.Done():
					return
				case <-time.After(svc.Backoff(attempt, reportBackoffBase, reportBackoffMax, rand.Int64N)):
				}
				attempt++
				continue
			}
			// The batch was not taken at all: the head alone, as before.
		}
		ack, ok := r.send(ctx, batch[0])
		if !ok {
			return
		}
		r.drop([]bool{true})
		if r.onAck != nil {
			r.onAck(batch[0], ack)
		}
	}
}

// sendBatch sends batch (the queue's head) as one StateChanges and drops
// what the cluster took or refused for good. It returns how many it must
// send again (0: all settled), or -1 when the cluster did not answer the
// batch at all: then batches are off for batchOffFor if nobody serves the
// subject or it is not permitted, and the caller sends the head alone. ok
// is false once ctx is cancelled.
func (r *reporter) sendBatch(ctx context.Context, batch []schemas.StateChange) (again int, ok bool) {
	cctx, cancel := context.WithTimeout(ctx, r.waitFor(reportTimeout+time.Duration(len(batch))*reportTimeoutEach))
	var acks schemas.StateAcks
	err := bus.Call(cctx, r.nc, r.batchSubject, &schemas.StateChanges{Reports: batch}, &acks)
	cancel()
	if ctx.Err() != nil {
		return 0, false
	}
	r.answered(err)
	if err == nil && len(acks.Results) != len(batch) {
		err = fmt.Errorf("%s: %d results for %d reports", r.batchSubject, len(acks.Results), len(batch))
	}
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, bus.ErrDenied) {
			r.batchOff = time.Now().Add(batchOffFor)
			r.log.Info().Err(err).Dur("for", batchOffFor).Msg("state reports one at a time: the cluster does not take them together")
		} else {
			// Not acknowledged: every report of it is sent again, and
			// batches are smaller until one is (a registration this busy
			// answers a smaller one sooner).
			r.batchMax = max(minBatchStep, r.batchMax/2)
			r.retries.Add(int64(len(batch)))
			r.log.Warn().Err(err).Int("reports", len(batch)).Msg("state reports not acknowledged; retrying")
		}
		return -1, true
	}
	r.batchMax = min(maxReportBatch, r.batchMax+minBatchStep)
	settled := make([]bool, len(batch))
	for i, res := range acks.Results {
		sc := batch[i]
		switch {
		case res.Code == 0:
			settled[i] = true
			if r.onAck != nil {
				r.onAck(sc, &schemas.StateAck{Kill: res.Kill, Reason: res.Reason})
			}
		case bus.RefusedForGood(res.Code):
			settled[i] = true
			r.log.Error().Str("id", reportID(sc)).Str("state", sc.State).Int("code", res.Code).Str("error", res.Error).
				Msg("state report refused; dropping it")
		default:
			again++
		}
	}
	r.drop(settled)
	if again > 0 {
		r.log.Warn().Int("not_taken", again).Int("reports", len(batch)).Msg("state reports not acknowledged; retrying")
	}
	return again, true
}

// send delivers one report, retrying until it is acknowledged (true) or
// ctx is cancelled (false). A report refused as malformed is logged and
// given up (true, nil ack): retrying it would block every later one.
func (r *reporter) send(ctx context.Context, sc schemas.StateChange) (*schemas.StateAck, bool) {
	log := r.log.With().Str("id", reportID(sc)).Str("state", sc.State).Logger()
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, r.waitFor(reportTimeout))
		var ack schemas.StateAck
		err := bus.Call(cctx, r.nc, r.subject, &sc, &ack)
		cancel()
		if ctx.Err() == nil {
			r.answered(err)
		}
		if err == nil {
			if attempt > 0 {
				log.Info().Int("attempts", attempt+1).Msg("state report delivered")
			}
			return &ack, true
		}
		if ctx.Err() != nil {
			return nil, false
		}
		if bus.RefusedForGood(bus.ErrorCode(err)) {
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
