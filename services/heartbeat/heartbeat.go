// Package heartbeat judges liveness: workers by their agents' heartbeats,
// applications by their drivers' heartbeats.
//
// Every instance sees every heartbeat (no queue group) and keeps one timer
// per worker and per application, reset on each heartbeat, in the style of
// Nomad's nomad/heartbeat.go. When a timer fires, the instance marks the
// worker DEAD (or the application FINISHED) with a compare-and-set that only
// succeeds if the record is still the one the timer was armed for, so any
// number of instances produce exactly one transition.
//
// It learns which workers and applications exist by watching their buckets,
// and whether a recovery is running by watching stoker-cluster/state; it
// never creates records. While a recovery runs, UNKNOWN workers and apps
// are the recovery's to settle; once the cluster is ALIVE again, those left
// UNKNOWN (silent to recovery, or whose recovery writes failed) are judged
// here like any other (issue 16 item 3): a heartbeat sends the agent
// through registration (ALIVE again, reconciled, told the epoch) or brings
// the app back to RUNNING/WAITING; silence for the timeout makes the worker
// DEAD or the app FINISHED. Heartbeats are not written to KV. A heartbeat
// from a worker the cluster does not know as ALIVE with that agent
// instance, or from an agent behind the cluster's epoch, is answered with
// schemas.Reregister.
package heartbeat

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

// Defaults applied by New.
const (
	DefaultWorkerTimeout     = svc.DefaultWorkerTimeout
	DefaultHeartbeatInterval = svc.DefaultHeartbeatInterval
	DefaultDisconnectGrace   = 600 * time.Millisecond
)

// Config configures a heartbeat service.
type Config struct {
	NC  *nats.Conn
	ID  string // instance id, in micro metadata; default random
	Log zerolog.Logger

	// WorkerTimeout is how long a worker (or an application's driver) may
	// stay silent before it is judged gone. Default 5s.
	WorkerTimeout time.Duration
	// HeartbeatInterval is what agents and drivers are told; only used to
	// validate WorkerTimeout. Default 1s.
	HeartbeatInterval time.Duration
	// DisconnectGrace: when the bus reports an agent's connection closed
	// (bus.ConnClosed), the worker is DEAD unless a heartbeat from it
	// arrives within this grace, instead of after the full WorkerTimeout.
	// It covers a reconnect: the agent beats as soon as it is back.
	// Default 600ms (at most half the WorkerTimeout); it must be below
	// WorkerTimeout.
	DisconnectGrace time.Duration
	// BeatsOnly ignores the bus's connection events: timeouts alone.
	BeatsOnly bool
	// Clock runs the deadlines and stamps records; nil is the wall clock.
	// Tests pass a svc.FakeClock to move time themselves.
	Clock svc.Clock
}

// Service is a heartbeat instance.
type Service struct {
	cfg   Config
	log   zerolog.Logger
	nc    *nats.Conn
	st    *bus.Store
	micro micro.Service
	g     *svc.Group
	// poison reports the records the watches skip, once each.
	poison *bus.Reporter

	// Counters counts heartbeats (worker and app) and bad ones.
	Counters bus.Counters

	mu      sync.Mutex
	stopped bool
	workers map[string]*workerTimer
	apps    map[string]*appTimer
	// cluster is stoker-cluster/state as last watched (zero: not known).
	cluster schemas.Cluster
	// confirmQ holds the heartbeats whose answer waits for a KV read.
	confirmQ chan confirmJob
	// quorumAt is when the workers bucket's stream last showed a quorum
	// (unix nanoseconds; 0: never): heartbeats are acknowledged only while
	// it is recent (quorumFresh), so an instance cut off with a minority
	// proves nothing to the agents that still reach it.
	quorumAt atomic.Int64

	stopOnce sync.Once
}

// deadline is one liveness timer. gen grows on every arm; a firing timer
// whose generation is stale (a heartbeat re-armed it meanwhile) does nothing.
type deadline struct {
	timer svc.Timer
	gen   uint64
}

// arm (re)starts the timer on clock: after d, fire runs with this arm's
// generation.
func (dl *deadline) arm(clock svc.Clock, d time.Duration, fire func(gen uint64)) {
	dl.gen++
	gen := dl.gen
	if dl.timer != nil {
		dl.timer.Stop()
	}
	dl.timer = clock.AfterFunc(d, func() { fire(gen) })
}

// stop stops the timer; a stopped deadline is not armed.
func (dl *deadline) stop() {
	if dl.timer != nil {
		dl.timer.Stop()
		dl.timer = nil
	}
}

// workerTimer is what the service knows of one worker record plus its timer.
type workerTimer struct {
	deadline
	state    schemas.WorkerState
	instance string
	// closedAt is when the bus reported the agent's connection closed
	// with no heartbeat since: the timer then runs the short grace.
	closedAt time.Time
	// rev is the KV revision the state and instance come from.
	rev uint64
}

type appTimer struct {
	deadline
	state schemas.AppState
	// reviving: a revive of this app (UNKNOWN, heartbeating) is in flight.
	reviving bool
}

// New validates cfg and applies defaults.
func New(cfg Config) (*Service, error) {
	if cfg.NC == nil {
		return nil, errors.New("heartbeat: Config.NC is required")
	}
	if cfg.ID == "" {
		cfg.ID = "heartbeat-" + schemas.NewInstance()[:8]
	}
	if err := svc.LivenessTimings("heartbeat", &cfg.HeartbeatInterval, &cfg.WorkerTimeout); err != nil {
		return nil, err
	}
	switch {
	case cfg.DisconnectGrace < 0:
		return nil, fmt.Errorf("heartbeat: disconnect grace %s is negative", cfg.DisconnectGrace)
	case cfg.DisconnectGrace == 0:
		cfg.DisconnectGrace = min(DefaultDisconnectGrace, cfg.WorkerTimeout/2)
	case cfg.DisconnectGrace >= cfg.WorkerTimeout:
		return nil, fmt.Errorf("heartbeat: disconnect grace %s must be below the worker timeout %s", cfg.DisconnectGrace, cfg.WorkerTimeout)
	}
	if cfg.Clock == nil {
		cfg.Clock = svc.RealClock
	}
	log := cfg.Log.With().Str("component", "heartbeat").Str("instance", cfg.ID).Logger()
	return &Service{
		cfg:      cfg,
		nc:       cfg.NC,
		log:      log,
		poison:   bus.NewReporter(cfg.NC, log),
		workers:  map[string]*workerTimer{},
		apps:     map[string]*appTimer{},
		confirmQ: make(chan confirmJob, 1024),
	}, nil
}

// ID is the instance id.
func (s *Service) ID() string { return s.cfg.ID }

// Start loads the current workers and applications (each gets a full
// timeout before judgement), starts watching their buckets and subscribes
// to heartbeats. It returns once serving.
func (s *Service) Start(ctx context.Context) error {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	st, err := bus.OpenStore(ctx, js)
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	s.st = st
	s.g = svc.NewGroup(context.Background())
	s.g.Go(s.confirmLoop)
	s.g.Go(s.quorumLoop)
	if err := s.watch(ctx); err != nil {
		s.Stop()
		return err
	}
	if !s.cfg.BeatsOnly {
		sub, err := bus.OnClosed(s.nc, s.connClosed)
		if err != nil {
			s.Stop()
			return fmt.Errorf("heartbeat: subscribe to connection events: %w", err)
		}
		s.g.Go(func(ctx context.Context) {
			<-ctx.Done()
			_ = sub.Unsubscribe()
		})
	}
	if err := s.serve(ctx); err != nil {
		s.Stop()
		return err
	}
	bus.OnReconnect(s.nc, "heartbeat-rearm", s.rearmAll)
	s.log.Info().Dur("worker_timeout", s.cfg.WorkerTimeout).Dur("disconnect_grace", s.cfg.DisconnectGrace).
		Bool("beats_only", s.cfg.BeatsOnly).Msg("heartbeat serving")
	return nil
}

// watch loads the cluster state, the workers and the applications, then
// follows their buckets.
// Initial values are applied before serving, so the first heartbeat of a
// known worker is never mistaken for an unknown one.
func (s *Service) watch(ctx context.Context) error {
	for _, b := range []struct {
		kv    jetstream.KeyValue
		apply func(jetstream.KeyValueEntry)
	}{{s.st.Cluster, s.applyCluster}, {s.st.Workers, s.applyWorker}, {s.st.Apps, s.applyApp}} {
		w, err := b.kv.WatchAll(s.g.Context())
		if err != nil {
			return fmt.Errorf("heartbeat: watch %s: %w", b.kv.Bucket(), err)
		}
		if err := bus.Follow(ctx, w, b.apply, func() bool { return false }); err != nil {
			_ = w.Stop()
			return fmt.Errorf("heartbeat: load %s: %w", b.kv.Bucket(), err)
		}
		// Followed by a Keeper: a watch that closes or stalls after a bus
		// restart is replaced, or timers would stay armed on stale states.
		s.g.Go(func(ctx context.Context) {
			bus.Keeper{KV: b.kv, Log: s.log, Apply: b.apply}.Run(ctx, w, true)
		})
	}
	return nil
}

// serve registers the micro service and its two endpoints, which every
// instance serves (no queue group: each must see every heartbeat).
func (s *Service) serve(ctx context.Context) error {
	m, err := micro.AddService(s.nc, micro.Config{
		Name:               bus.ServiceHeartbeat,
		Version:            svc.Version,
		Description:        "Stoker worker and application liveness",
		Metadata:           map[string]string{"instance": s.cfg.ID},
		QueueGroupDisabled: true,
	})
	if err != nil {
		return fmt.Errorf("heartbeat: add micro service: %w", err)
	}
	s.micro = m
	gctx, l, c := s.g.Context(), &s.log, &s.Counters
	if err := m.AddEndpoint("worker-heartbeat", bus.MicroHandler(gctx, l, c, s.handleHeartbeat),
		micro.WithEndpointSubject(bus.WorkerHeartbeat), micro.WithEndpointQueueGroupDisabled()); err != nil {
		return fmt.Errorf("heartbeat: endpoint %s: %w", bus.WorkerHeartbeat, err)
	}
	if err := m.AddEndpoint("app-heartbeat", bus.MicroHandler(gctx, l, c, s.handleAppHeartbeat),
		micro.WithEndpointSubject(bus.AppHeartbeat), micro.WithEndpointQueueGroupDisabled()); err != nil {
		return fmt.Errorf("heartbeat: endpoint %s: %w", bus.AppHeartbeat, err)
	}
	if err := s.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("heartbeat: flush: %w", err)
	}
	return nil
}

// Stop stops serving, stops every timer and waits for in-flight work.
// Idempotent.
func (s *Service) Stop() {
	s.stopOnce.Do(func() {
		if s.micro != nil {
			_ = s.micro.Stop()
		}
		s.mu.Lock()
		s.stopped = true
		for _, w := range s.workers {
			w.stop()
		}
		for _, a := range s.apps {
			a.stop()
		}
		s.mu.Unlock()
		if s.g != nil {
			s.g.Stop()
		}
	})
}

// decodeLocked is what every watch entry gets first: nothing after Stop, a
// deleted key loses its deadline, and so does a poisoned one (undecodable
// or impossible: bus.DecodeChecked), reported once. It returns the record, or nil when there is nothing more to do.
// Caller holds s.mu.
func decodeLocked[T any, D interface{ stop() }](s *Service, e jetstream.KeyValueEntry, timers map[string]D) *T {
	if s.stopped {
		return nil
	}
	if bus.Deleted(e) {
		drop(timers, e.Key())
		return nil
	}
	rec := new(T)
	if err := bus.DecodeChecked(e.Key(), e.Value(), rec); err != nil {
		// Poisoned: reported, and its deadline dropped, so nothing is
		// ever written on its account (no DEAD, no FINISHED).
		drop(timers, e.Key())
		s.poison.Report(bus.Poison{Bucket: e.Bucket(), Key: e.Key(), Revision: e.Revision(), Err: err})
		return nil
	}
	return rec
}

// drop stops and forgets one deadline, if there is one.
func drop[D interface{ stop() }](timers map[string]D, id string) {
	if d, ok := timers[id]; ok {
		d.stop()
		delete(timers, id)
	}
}
