// Package registration is the write side of Stoker's front door: worker
// registration and departure, executor and driver state reports from agents,
// driver submission and kill, application registration, unregistration and
// kill, and the read-only list and status queries.
//
// It runs as the micro service "stoker-registration" in a queue group, so any
// number of replicas share the load. It keeps no state of its own but a
// watch-fed index of the records (index.go), read only after it caught up
// with the buckets; every write reads KV and is a compare-and-set
// (bus.Mutate), so two replicas answering two requests about the same record
// cannot both win.
//
// It does not place anything (the scheduler does), does not judge liveness
// (the heartbeat service does) and does not talk to agents except by
// answering their requests.
package registration

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
	DefaultHeartbeatInterval = svc.DefaultHeartbeatInterval
	DefaultWorkerTimeout     = svc.DefaultWorkerTimeout
)

// Config configures a registration service.
type Config struct {
	NC  *nats.Conn
	ID  string // instance id, in micro metadata; default random
	Log zerolog.Logger

	// HeartbeatInterval is told to agents (worker heartbeats) and to drivers
	// (app heartbeats). Default 1s.
	HeartbeatInterval time.Duration
	// WorkerTimeout is how long the heartbeat service waits before it marks
	// a silent worker DEAD; it must exceed HeartbeatInterval. Default 5s.
	WorkerTimeout time.Duration
	// Tokens mints join tokens' credentials (nil: no join tokens).
	Tokens Tokens
	// Retention bounds the ended records kept (retention.go). The zero
	// value keeps everything; DefaultRetention is Spark's bounds.
	Retention Retention
}

// Service is a running (or ready to run) registration instance.
type Service struct {
	cfg   Config
	log   zerolog.Logger
	nc    *nats.Conn
	st    *bus.Store
	micro micro.Service
	g     *svc.Group
	// poison reports the records listing skips, once each.
	poison *bus.Reporter
	// idx is the watch-fed index the list, status and register requests read.
	idx *index
	// reports takes the reports of state batches (handleStates).
	reports *svc.Pool
	// resets joins the failure resets of one app's RUNNING reports.
	resets resets

	// Counters are exposed for tests and stats.
	Counters bus.Counters

	stopOnce sync.Once
}

// New validates cfg and applies defaults.
func New(cfg Config) (*Service, error) {
	if cfg.NC == nil {
		return nil, errors.New("registration: Config.NC is required")
	}
	if cfg.ID == "" {
		cfg.ID = "registration-" + schemas.NewInstance()[:8]
	}
	if err := svc.LivenessTimings("registration", &cfg.HeartbeatInterval, &cfg.WorkerTimeout); err != nil {
		return nil, err
	}
	log := cfg.Log.With().Str("component", "registration").Str("instance", cfg.ID).Logger()
	return &Service{cfg: cfg, nc: cfg.NC, log: log, poison: bus.NewReporter(cfg.NC, log)}, nil
}

// ID is the instance id.
func (s *Service) ID() string { return s.cfg.ID }

// Start opens the store (provisioned by its owner, see bus.Provision) and serves every endpoint; it returns once
// the endpoints are subscribed.
func (s *Service) Start(ctx context.Context) error {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("registration: %w", err)
	}
	st, err := bus.OpenStore(ctx, js)
	if err != nil {
		return fmt.Errorf("registration: %w", err)
	}
	s.st = st
	// Handlers run under a context of their own: Stop cancels it, the
	// caller's ctx only bounds Start.
	s.g = svc.NewGroup(context.Background())
	s.reports = svc.NewPool(s.g, statePool)
	hctx := s.g.Context()
	s.idx = newIndex(st, s.log, s.poison)
	if err := s.idx.start(hctx, s.g); err != nil { // watches live as long as the service, not Start's ctx
		s.g.Stop()
		return fmt.Errorf("registration: %w", err)
	}

	m, err := micro.AddService(s.nc, micro.Config{
		Name:        bus.ServiceRegistration,
		Version:     svc.Version,
		Description: "Stoker worker registration, state reports, driver and app API",
		Metadata:    map[string]string{"instance": s.cfg.ID},
		QueueGroup:  bus.ServiceRegistration,
	})
	if err != nil {
		s.g.Stop()
		return fmt.Errorf("registration: add micro service: %w", err)
	}
	s.micro = m
	if r := s.cfg.Retention; r.RetainedApps > 0 || r.RetainedDrivers > 0 || r.DeadWorkerTTL > 0 || r.ArtifactGrace > 0 {
		if r.Interval <= 0 {
			r.Interval = DefaultRetentionInterval
		}
		s.g.Go(func(ctx context.Context) { s.retain(ctx, r) })
	}
	eps := s.endpoints(hctx)
	for _, e := range eps {
		if err := m.AddEndpoint(e.name, e.h, micro.WithEndpointSubject(e.subject)); err != nil {
			s.Stop()
			return fmt.Errorf("registration: endpoint %s: %w", e.subject, err)
		}
	}
	// Make sure the server has the subscriptions before callers send.
	if err := s.nc.FlushWithContext(ctx); err != nil {
		s.Stop()
		return fmt.Errorf("registration: flush: %w", err)
	}
	s.log.Info().Dur("heartbeat_interval", s.cfg.HeartbeatInterval).Msg("registration serving")
	return nil
}

// endpoint is one micro endpoint of the service.
type endpoint struct {
	name    string
	subject string
	h       micro.Handler
}

// workerLanes is how many of the agents' requests on one endpoint are
// served at once (bus.Lanes): one agent's requests stay in order. Each
// mostly waits for one KV write: at 200 agents and 10,000 executors
// starting, 128 placed 3,300–3,600/s where 32 placed 2,700–2,800/s
// (docs/benchmarks.md, Scale).
const workerLanes = 128

// endpoints is every subject registration serves, with its handler.
func (s *Service) endpoints(hctx context.Context) []endpoint {
	l, c := &s.log, &s.Counters
	return []endpoint{
		// Every agent's fan-in: served in lanes, one agent's requests in order.
		{"worker-register", bus.WorkerRegister, bus.Lanes(s.nc, s.g.Go, workerLanes, bus.MicroHandler(hctx, l, c, s.handleRegister))},
		{"worker-leave", bus.WorkerLeave, bus.Lanes(s.nc, s.g.Go, workerLanes, bus.MicroHandler(hctx, l, c, s.handleLeave))},
		{"worker-drain", bus.WorkerDrain, bus.Lanes(s.nc, s.g.Go, workerLanes, bus.MicroHandler(hctx, l, c, s.handleWorkerDrain))},
		{"worker-state", bus.WorkerState, bus.Lanes(s.nc, s.g.Go, workerLanes, bus.MicroHandler(hctx, l, c, s.handleState))},
		{"worker-states", bus.WorkerStates, bus.Lanes(s.nc, s.g.Go, workerLanes, bus.MicroHandler(hctx, l, c, s.handleStates))},
		{"drivers-submit", bus.APIDriversSubmit, bus.MicroHandler(hctx, l, c, s.handleSubmitDriver)},
		{"drivers-kill", bus.APIDriversKill, bus.MicroHandler(hctx, l, c, s.handleKillDriver)},
		{"drivers-list", bus.APIDriversList, bus.MicroHandler(hctx, l, c, s.handleListDrivers)},
		{"apps-register", bus.APIAppsRegister, bus.MicroHandler(hctx, l, c, s.handleRegisterApp)},
		{"app-register", bus.AppRegister, bus.MicroHandler(hctx, l, c, s.handleRegisterOwnApp)},
		{"app-unregister", bus.AppUnregister, bus.MicroHandler(hctx, l, c, s.handleUnregisterOwnApp)},
		{"app-executors", bus.AppExecutors, bus.MicroHandler(hctx, l, c, s.handleExecutorRequest)},
		{"tokens-create", bus.APITokensCreate, bus.MicroHandler(hctx, l, c, s.handleTokenCreate)},
		{"tokens-list", bus.APITokensList, bus.MicroHandler(hctx, l, c, s.handleTokenList)},
		{"tokens-revoke", bus.APITokensRevoke, bus.MicroHandler(hctx, l, c, s.handleTokenRevoke)},
		{"tokens-join", bus.APITokensJoin, bus.MicroHandler(hctx, l, c, s.handleJoin)},
		{"apps-unregister", bus.APIAppsUnregister, bus.MicroHandler(hctx, l, c, s.handleUnregisterApp)},
		{"apps-kill", bus.APIAppsKill, bus.MicroHandler(hctx, l, c, s.handleKillApp)},
		{"apps-list", bus.APIAppsList, bus.MicroHandler(hctx, l, c, s.handleListApps)},
		{"workers-list", bus.APIWorkersList, bus.MicroHandler(hctx, l, c, s.handleListWorkers)},
		{"workers-cordon", bus.APIWorkersCordon, bus.MicroHandler(hctx, l, c, s.handleCordon)},
		{"workers-drain", bus.APIWorkersDrain, bus.MicroHandler(hctx, l, c, s.handleDrain)},
		{"status", bus.APIStatus, bus.MicroHandler(hctx, l, c, s.handleStatus)},
	}
}

// Stop stops serving and waits for in-flight work. Idempotent.
func (s *Service) Stop() {
	s.stopOnce.Do(func() {
		if s.micro != nil {
			_ = s.micro.Stop()
		}
		if s.g != nil {
			s.g.Stop()
		}
	})
}

func (s *Service) heartbeatMS() int64 { return s.cfg.HeartbeatInterval.Milliseconds() }

// currentEpoch is the epoch of stoker-cluster/state, 0 if none.
func (s *Service) currentEpoch(ctx context.Context) (uint64, error) {
	c, _, err := bus.Get[schemas.Cluster](ctx, s.st.Cluster, bus.KeyClusterState)
	if errors.Is(err, bus.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return c.Epoch, nil
}

// emit publishes an event and logs the transition.
func (s *Service) emit(kind, id, state, msg string) {
	bus.Emit(s.nc, kind, id, state, msg)
	s.log.Info().Str("kind", kind).Str(kind+"_id", id).Str("state", state).Str("reason", msg).Msg("state change")
}

func now() time.Time { return time.Now().UTC() }
