// Package recovery reconciles the persisted cluster with what agents and
// drivers report, once for every new scheduler epoch, then declares the
// cluster ALIVE so the scheduler may schedule (Spark's master failover:
// beginRecovery, MasterChanged, completeRecovery).
//
// For each epoch E of the scheduler lease (stoker-leader/scheduler) one
// recovery instance claims stoker-cluster/state with a compare-and-set, marks
// workers, apps and running drivers UNKNOWN, asks every agent and driver,
// waits until all answered or RecoveryTimeout passed, applies Reconcile's
// verdict and writes ALIVE for E. Whatever fails or panics on the way, the
// cluster still ends ALIVE for E with a message naming the error (Spark's
// SPARK-20305 left it RECOVERING forever); a claim left RECOVERING longer
// than StaleClaim (its instance died) is taken over by another instance.
//
// It does not promise that a recovery finishes: a newer epoch abandons an
// older one, and the newer one's recovery starts from what KV then says.
// Running executors and drivers are never killed by a failover; only
// processes the cluster already replaced or ended are.
package recovery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// Defaults.
const (
	DefaultRecoveryTimeout = 2 * time.Second
	// staleFactor: a claim older than staleFactor × RecoveryTimeout is stale.
	staleFactor = 3
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("recovery: invalid config")

// Config configures a recovery instance.
type Config struct {
	NC  *nats.Conn
	ID  string // this instance, recorded as the recoverer of the epochs it claims
	Log zerolog.Logger
	// RecoveryTimeout bounds the wait for agents and drivers to answer.
	// Default 2s.
	RecoveryTimeout time.Duration
	// StaleClaim: another instance takes over an epoch left RECOVERING this
	// long. Default 3 × RecoveryTimeout; must exceed RecoveryTimeout.
	StaleClaim time.Duration
}

// Service is one recovery instance.
type Service struct {
	cfg   Config
	log   zerolog.Logger
	group *svc.Group
	store *bus.Store
	micro micro.Service

	startOnce sync.Once
	stopOnce  sync.Once

	// claims counts the epochs this instance claimed (tests, logs).
	claims atomic.Int64
	// testHook, when set, is called at each named stage of a recovery run
	// (tests inject failures with it).
	testHook func(stage string)
}

// New validates cfg and applies defaults.
func New(cfg Config) (*Service, error) {
	if cfg.NC == nil {
		return nil, fmt.Errorf("%w: NC is required", ErrConfig)
	}
	if err := schemas.ValidID("recovery instance", cfg.ID); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if cfg.RecoveryTimeout < 0 || cfg.StaleClaim < 0 {
		return nil, fmt.Errorf("%w: timeouts must not be negative", ErrConfig)
	}
	if cfg.RecoveryTimeout == 0 {
		cfg.RecoveryTimeout = DefaultRecoveryTimeout
	}
	if cfg.StaleClaim == 0 {
		cfg.StaleClaim = staleFactor * cfg.RecoveryTimeout
	}
	if cfg.StaleClaim <= cfg.RecoveryTimeout {
		return nil, fmt.Errorf("%w: StaleClaim (%s) must exceed RecoveryTimeout (%s), or a live recovery would be taken over",
			ErrConfig, cfg.StaleClaim, cfg.RecoveryTimeout)
	}
	return &Service{
		cfg: cfg,
		log: cfg.Log.With().Str("component", "recovery").Str("instance", cfg.ID).Logger(),
	}, nil
}

// Start opens the store, registers the micro service and starts
// watching the scheduler lease. It returns once watching.
func (s *Service) Start(ctx context.Context) error {
	err := errors.New("recovery: already started")
	s.startOnce.Do(func() { err = s.start(ctx) })
	return err
}

func (s *Service) start(ctx context.Context) error {
	js, err := jetstream.New(s.cfg.NC)
	if err != nil {
		return fmt.Errorf("recovery: jetstream: %w", err)
	}
	st, err := bus.OpenStore(ctx, js)
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	s.store = st
	m, err := micro.AddService(s.cfg.NC, micro.Config{
		Name:        bus.ServiceRecovery,
		Version:     svc.Version,
		Description: "Stoker recovery: reconciles the cluster on every new scheduler epoch",
		Metadata:    map[string]string{"instance": s.cfg.ID},
	})
	if err != nil {
		return fmt.Errorf("recovery: micro: %w", err)
	}
	s.micro = m

	s.group = svc.NewGroup(context.Background())
	// The watch lives until Stop, not as long as Start's (possibly bounded) ctx.
	w, err := st.Leader.Watch(s.group.Context(), bus.KeyScheduler)
	if err != nil {
		_ = m.Stop()
		s.group.Stop()
		return fmt.Errorf("recovery: watch %s/%s: %w", bus.BucketLeader, bus.KeyScheduler, err)
	}
	s.group.Go(func(gctx context.Context) { s.control(gctx, w) })
	s.log.Info().Dur("recovery_timeout", s.cfg.RecoveryTimeout).Dur("stale_claim", s.cfg.StaleClaim).Msg("recovery started")
	return nil
}

// Stop cancels any recovery in progress (its epoch stays RECOVERING until
// another instance takes the stale claim over) and waits. Idempotent.
func (s *Service) Stop() {
	s.stopOnce.Do(func() {
		if s.group != nil {
			s.group.Stop()
		}
		if s.micro != nil {
			_ = s.micro.Stop()
		}
	})
}

// epochInfo is one lease epoch and its holder.
type epochInfo struct {
	epoch  uint64
	leader string
}

// run is one recovery in progress.
type run struct {
	epoch  uint64
	cancel context.CancelFunc
	done   chan struct{}
}

// control is the single goroutine that follows the lease: it starts a
// recovery for each new epoch (abandoning an older one still running) and,
// on a ticker, takes over stale claims and epochs nobody claimed.
func (s *Service) control(ctx context.Context, w jetstream.KeyWatcher) {
	var (
		highest uint64
		cur     *run
	)
	defer func() {
		if w != nil {
			_ = w.Stop()
		}
		if cur != nil {
			cur.cancel()
			<-cur.done
		}
	}()
	tick := time.NewTicker(max(s.cfg.StaleClaim/3, 50*time.Millisecond))
	defer tick.Stop()
	var doneC chan struct{}
	var watchFails int

	consider := func(ei epochInfo) {
		if ei.epoch > highest {
			highest = ei.epoch
		}
		if ei.epoch < highest {
			return
		}
		if cur != nil {
			if cur.epoch >= ei.epoch {
				return
			}
			s.log.Info().Uint64("epoch", cur.epoch).Uint64("newer", ei.epoch).Msg("abandoning recovery: a newer epoch began")
			cur.cancel()
			<-cur.done
			cur, doneC = nil, nil
		}
		if r := s.maybeRecover(ctx, ei); r != nil {
			cur, doneC = r, r.done
		}
	}

	updates := w.Updates()
	var rewatch <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-rewatch:
			rewatch = nil
			nw, err := s.store.Leader.Watch(ctx, bus.KeyScheduler)
			if err != nil {
				watchFails++
				s.log.Warn().Err(err).Msg("cannot watch the lease; the ticker still follows it")
				rewatch = time.After(svc.Backoff(watchFails, 100*time.Millisecond, 5*time.Second, nil))
				continue
			}
			w, updates, watchFails = nw, nw.Updates(), 0
		case e, ok := <-updates:
			if !ok {
				// The watcher ended (connection trouble): watch again with
				// backoff; the ticker keeps following the lease meanwhile.
				_ = w.Stop()
				w, updates = nil, nil
				watchFails++
				rewatch = time.After(svc.Backoff(watchFails, 100*time.Millisecond, 5*time.Second, nil))
				s.log.Warn().Msg("lease watch ended; watching again")
				continue
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue // initial values done, or the lease was deleted/expired
			}
			l := new(schemas.Lease)
			if err := bus.DecodeRecord(e.Value(), l); err != nil {
				s.log.Warn().Err(err).Msg("undecodable lease")
				continue
			}
			ep := l.Epoch
			if ep == 0 {
				ep = e.Revision()
			}
			consider(epochInfo{epoch: ep, leader: l.Holder})
		case <-doneC:
			cur, doneC = nil, nil
		case <-tick.C:
			if cur != nil {
				continue
			}
			lctx, cancel := context.WithTimeout(ctx, s.cfg.RecoveryTimeout)
			l, ep, err := bus.CurrentLease(lctx, s.store.Leader, bus.KeyScheduler)
			cancel()
			if err != nil {
				if !errors.Is(err, bus.ErrNotFound) && ctx.Err() == nil {
					s.log.Debug().Err(err).Msg("cannot read the lease")
				}
				continue
			}
			consider(epochInfo{epoch: ep, leader: l.Holder})
		}
	}
}

// maybeRecover claims ei.epoch if it is this instance's to recover and, if
// so, starts the recovery and returns it.
func (s *Service) maybeRecover(ctx context.Context, ei epochInfo) *run {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.RecoveryTimeout)
	defer cancel()
	_, claimed, err := s.claim(cctx, ei)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn().Err(err).Uint64("epoch", ei.epoch).Msg("cannot claim the epoch; will retry")
		}
		return nil
	}
	if !claimed {
		return nil
	}
	s.claims.Add(1)
	bus.Emit(s.cfg.NC, "cluster", fmt.Sprint(ei.epoch), string(schemas.ClusterRecovering),
		fmt.Sprintf("recovery %s claimed epoch %d (leader %s)", s.cfg.ID, ei.epoch, ei.leader))
	rctx, rcancel := context.WithCancel(ctx)
	r := &run{epoch: ei.epoch, cancel: rcancel, done: make(chan struct{})}
	if !s.group.Go(func(context.Context) {
		defer close(r.done)
		s.recover(rctx, ei)
	}) {
		rcancel()
		return nil
	}
	return r
}

// claim moves stoker-cluster/state to RECOVERING for ei with compare-and-set:
// from an older epoch (or no record, or an undecodable one), or from a stale
// RECOVERING claim of the same epoch. It reports whether this call claimed.
func (s *Service) claim(ctx context.Context, ei epochInfo) (*schemas.Cluster, bool, error) {
	now := time.Now().UTC()
	next := &schemas.Cluster{Epoch: ei.epoch, Leader: ei.leader, State: schemas.ClusterRecovering,
		Since: now, Recoverer: s.cfg.ID}
	return s.casCluster(ctx, func(cur *schemas.Cluster) *schemas.Cluster {
		switch {
		case cur == nil, cur.Epoch < ei.epoch:
			return next
		case cur.Epoch == ei.epoch && cur.State == schemas.ClusterRecovering && now.Sub(cur.Since) > s.cfg.StaleClaim:
			s.log.Warn().Uint64("epoch", ei.epoch).Str("recoverer", cur.Recoverer).Time("since", cur.Since).
				Msg("taking over a stale recovery claim")
			n := *next
			n.Message = fmt.Sprintf("took over from %s (claim stale since %s)", cur.Recoverer, cur.Since.Format(time.RFC3339))
			return &n
		}
		return nil
	})
}

// casCluster is bus.Mutate for the cluster record, except that an
// undecodable record counts as absent (it must not block recovery forever).
// fn returns the record to write or nil for none.
func (s *Service) casCluster(ctx context.Context, fn func(cur *schemas.Cluster) *schemas.Cluster) (*schemas.Cluster, bool, error) {
	kv := s.store.Cluster
	for i := 0; i < 20; i++ {
		var (
			cur *schemas.Cluster
			rev uint64
		)
		e, err := kv.Get(ctx, bus.KeyClusterState)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		case err != nil:
			return nil, false, err
		default:
			rev = e.Revision()
			c := new(schemas.Cluster)
			if derr := bus.DecodeRecord(e.Value(), c); derr != nil {
				s.log.Warn().Err(derr).Msg("undecodable cluster record; overwriting it")
			} else {
				cur = c
			}
		}
		next := fn(cur)
		if next == nil {
			return cur, false, nil
		}
		if rev == 0 {
			_, err = bus.Create(ctx, kv, bus.KeyClusterState, next)
		} else {
			_, err = bus.Update(ctx, kv, bus.KeyClusterState, next, rev)
		}
		if err == nil {
			return next, true, nil
		}
		if !bus.IsCASConflict(err) {
			return nil, false, err
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(time.Duration(i+1) * time.Millisecond):
		}
	}
	return nil, false, fmt.Errorf("%s %q: %w", bus.BucketCluster, bus.KeyClusterState, bus.ErrConflict)
}
