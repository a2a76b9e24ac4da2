package recovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// kind is one bucket that mark and revert move records of.
type kind[T any] struct {
	name string // "worker", "app", "driver": events, logs, the was-map prefix
	kv   jetstream.KeyValue
	// describe is the record's state and the message its event carries.
	describe func(*T) (state, msg string)
}

func (s *Service) workerKind() kind[schemas.Worker] {
	return kind[schemas.Worker]{"worker", s.store.Workers, func(w *schemas.Worker) (string, string) { return string(w.State), w.Reason }}
}

func (s *Service) appKind() kind[schemas.App] {
	return kind[schemas.App]{"app", s.store.Apps, func(a *schemas.App) (string, string) { return string(a.State), a.Message }}
}

func (s *Service) driverKind() kind[schemas.Driver] {
	return kind[schemas.Driver]{"driver", s.store.Drivers, func(d *schemas.Driver) (string, string) { return string(d.State), d.Message }}
}

// moved is the outcome of one record's move: the state it left (when
// written), the value KV holds afterwards (nil if deleted) and the error.
type moved[T any] struct {
	id    string
	was   string
	v     *T
	wrote bool
	err   error
}

// moveParallel is how many records moveEach writes at once: a recovery
// marks every live app UNKNOWN and moves it back, so one write at a time
// made a failover grow with the number of apps (a write's round trip each).
const moveParallel = 32

// moveEach moves every record of recs that next accepts, by compare-and-set
// on KV's current value, up to moveParallel at once. next returns the
// record to write (nil: leave it); it must not modify its argument, since
// it runs on the snapshot's record first (to skip without a read) and again
// on KV's. Each write is emitted as an event; after is told every outcome,
// one call at a time (it may change recs: the records to move are chosen
// before any is written).
//
// Each write is retried while the bus answers with transient errors
// (attempts of per), until ctx ends: a write that timed out may have
// landed, and the retry's compare-and-set finds that out.
func moveEach[T any](ctx context.Context, nc *nats.Conn, epoch uint64, per time.Duration, k kind[T], recs map[string]*T, next func(id string, cur *T) *T, after func(moved[T])) {
	var todo []string
	for _, id := range slices.Sorted(maps.Keys(recs)) {
		if next(id, recs[id]) != nil {
			todo = append(todo, id)
		}
	}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, moveParallel)
	)
	for _, id := range todo {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			m := moved[T]{id: id}
			m.err = bus.RetryTransient(ctx, per, func(ctx context.Context) error {
				var err error
				m.v, _, err = bus.Mutate(ctx, k.kv, id, func(cur *T) (*T, error) {
					m.was, m.wrote = "", false
					if cur == nil {
						return nil, nil
					}
					n := next(id, cur)
					if n != nil {
						m.was, _ = k.describe(cur)
						m.wrote = true
					}
					return n, nil
				})
				return err
			})
			if m.err != nil {
				m.wrote = false
			}
			if m.wrote {
				state, msg := k.describe(m.v)
				bus.EmitEpoch(nc, epoch, k.name, id, state, msg)
			}
			mu.Lock()
			defer mu.Unlock()
			after(m)
		}()
	}
	wg.Wait()
}

// perWrite bounds one attempt of one write.
func (s *Service) perWrite() time.Duration { return s.cfg.RecoveryTimeout / 2 }

// mark moves ALIVE workers, live apps and running drivers to UNKNOWN,
// remembers what each was (for revert) and updates the snapshot with what
// KV holds afterwards.
func (s *Service) mark(ctx context.Context, log zerolog.Logger, snap *Snapshot, rs *runState, t *tally) {
	e, now := snap.Epoch, time.Now().UTC()
	moveEach(ctx, s.cfg.NC, e, s.perWrite(), s.workerKind(), snap.Workers, func(_ string, cur *schemas.Worker) *schemas.Worker {
		to, ok := cur.State.Next(schemas.WorkerEvRecovering)
		if !ok {
			return nil
		}
		n := *cur
		n.State, n.Epoch, n.UpdatedAt, n.Reason = to, e, now, fmt.Sprintf("recovering epoch %d", e)
		return &n
	}, marked(log, "worker", snap.Workers, rs, t))
	moveEach(ctx, s.cfg.NC, e, s.perWrite(), s.appKind(), snap.Apps, func(_ string, cur *schemas.App) *schemas.App {
		to, ok := cur.State.Next(schemas.AppEvRecovering)
		if !ok {
			return nil
		}
		n := *cur
		n.State, n.UpdatedAt, n.Message = to, now, fmt.Sprintf("recovering epoch %d (was %s)", e, cur.State)
		return &n
	}, marked(log, "app", snap.Apps, rs, t))
	moveEach(ctx, s.cfg.NC, e, s.perWrite(), s.driverKind(), snap.Drivers, func(_ string, cur *schemas.Driver) *schemas.Driver {
		to, ok := cur.State.Next(schemas.DriverEvRecovering)
		if !ok {
			return nil
		}
		n := *cur
		n.State, n.UpdatedAt, n.Message = to, now, fmt.Sprintf("recovering epoch %d (was %s)", e, cur.State)
		return &n
	}, marked(log, "driver", snap.Drivers, rs, t))
}

// marked records the outcome of one marking write: in the snapshot (a
// failed write keeps the loaded record: not asked, not changed) and, when
// written, the state it left in rs.was.
func marked[T any](log zerolog.Logger, name string, m map[string]*T, rs *runState, t *tally) func(moved[T]) {
	return func(o moved[T]) {
		switch {
		case o.err != nil:
			if !errors.Is(o.err, context.Canceled) {
				log.Warn().Err(o.err).Str("kind", name).Str("id", o.id).Msg("cannot mark record UNKNOWN")
				t.fail(o.err)
			}
		case o.v == nil:
			delete(m, o.id) // deleted meanwhile
		default:
			m[o.id] = o.v
		}
		if o.wrote {
			rs.was[name+"/"+o.id] = o.was
		}
	}
}

// safeRevert is revert under a recover and a time bound.
func (s *Service) safeRevert(ctx context.Context, log zerolog.Logger, epoch uint64, rs *runState) {
	defer keepGoing(log)
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RecoveryTimeout)
	defer cancel()
	s.revert(rctx, log, epoch, rs)
}

// revert is the error path's best effort: records still UNKNOWN go back to
// what they were, so that nothing waits forever on a recovery that failed.
// A worker back to ALIVE that is really gone is then the heartbeat
// service's to declare DEAD; one that is alive simply goes on. An app or
// driver marked by an abandoned epoch (not in rs.was) goes back to WAITING
// or RUNNING; the scheduler moves it on.
func (s *Service) revert(ctx context.Context, log zerolog.Logger, epoch uint64, rs *runState) {
	now := time.Now().UTC()
	why := fmt.Sprintf("recovery for epoch %d failed; restored", epoch)
	moveEach(ctx, s.cfg.NC, epoch, s.perWrite(), s.workerKind(), rs.snap.Workers, func(_ string, cur *schemas.Worker) *schemas.Worker {
		to, ok := cur.State.Next(schemas.WorkerEvAnswered)
		if !ok {
			return nil
		}
		n := *cur
		n.State, n.Reason, n.UpdatedAt = to, why, now
		return &n
	}, func(moved[schemas.Worker]) {})
	moveEach(ctx, s.cfg.NC, epoch, s.perWrite(), s.appKind(), rs.snap.Apps, func(id string, cur *schemas.App) *schemas.App {
		ev := schemas.AppEvAnsweredWaiting
		if rs.was["app/"+id] == string(schemas.AppRunning) {
			ev = schemas.AppEvAnsweredRunning
		}
		to, ok := cur.State.Next(ev)
		if !ok {
			return nil
		}
		n := *cur
		n.State, n.Message, n.UpdatedAt = to, why, now
		return &n
	}, func(moved[schemas.App]) {})
	moveEach(ctx, s.cfg.NC, epoch, s.perWrite(), s.driverKind(), rs.snap.Drivers, func(id string, cur *schemas.Driver) *schemas.Driver {
		ev := schemas.DriverEvRunning
		if rs.was["driver/"+id] == string(schemas.DriverRelaunching) {
			ev = schemas.DriverEvRelaunching
		}
		to, ok := cur.State.Next(ev)
		if !ok || cur.State != schemas.DriverUnknown {
			return nil
		}
		n := *cur
		n.State, n.Message, n.UpdatedAt = to, why, now
		return &n
	}, func(moved[schemas.Driver]) {})
	log.Info().Msg("restored records left UNKNOWN by the failed recovery")
}
