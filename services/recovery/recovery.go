// Package recovery reconciles the persisted cluster with what agents and
// drivers report, once for every new scheduler epoch, then declares the
// cluster ALIVE so the scheduler may schedule (Spark's master failover:
// beginRecovery, MasterChanged, completeRecovery).
//
// For each epoch E of the scheduler lease (stoker-leader/scheduler) one
// recovery instance claims stoker-cluster/state with a compare-and-set, marks
// workers, apps and running drivers UNKNOWN, asks every agent and driver,
// waits until all answered or RecoveryTimeout passed (counted from the start
// of the asking: each phase has its own time), applies Reconcile's verdict
// and writes ALIVE for E. Recovery never writes a worker DEAD or an app
// FINISHED: those that did not answer stay UNKNOWN for the heartbeat
// service to judge once the cluster is ALIVE. Whatever fails or panics on the way, the
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
	// RecoveryTimeout bounds the wait for agents and drivers to answer,
	// counted from the start of the asking, and each of the marking and
	// applying phases (load gets twice as long). Default 2s.
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
	// poison reports the records load skips, once each.
	poison *bus.Reporter

	startOnce sync.Once
	stopOnce  sync.Once

	// claims counts the epochs this instance claimed (tests, logs).
	claims atomic.Int64
	// testHook, when set, is called at each named stage of a recovery run
	// (tests inject failures with it).
	testHook func(stage string)
	// testLoadErr, when set, is asked before each attempt to load the
	// records; an error it returns is that attempt's (tests make one
	// bucket unreadable while the others answer, as while JetStream
	// elects a leader for that bucket's stream).
	testLoadErr func() error
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
	log := cfg.Log.With().Str("component", "recovery").Str("instance", cfg.ID).Logger()
	return &Service{cfg: cfg, log: log, poison: bus.NewReporter(cfg.NC, log)}, nil
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
