package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/lease"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// Service defaults.
const (
	// DefaultBeatInterval and DefaultMissedBeats are the lease package's
	// defaults, named here for the command-line flags. The lease TTL is
	// the lease bucket's (bus.DefaultLeaseTTL unless its owner said otherwise).
	DefaultBeatInterval       = lease.DefaultBeatInterval
	DefaultMissedBeats        = lease.DefaultMissedBeats
	DefaultMaxExecutorRetries = 10
	DefaultLaunchTimeout      = 2 * time.Second
	DefaultTick               = time.Second
	DefaultDebounce           = 5 * time.Millisecond
	DefaultKillRetry          = 5 * time.Second
	DefaultAvoidFor           = 5 * time.Second
	// DefaultMaxInFlight is Config.MaxInFlight's default: at 1,000
	// simulated agents and 100,000 executors on 2 cores it kept every
	// state report within its timeout (docs/benchmarks.md, Scale).
	DefaultMaxInFlight = 8192
	// DefaultFlowTarget is Config.FlowTarget's default: an agent's first
	// wait for its state report. At 1,000 simulated agents creation →
	// RUNNING took 0.8–1.6 s at the median with no report retried; 1 s
	// cut the window for the load of the machine, not for a queue.
	DefaultFlowTarget = 2 * time.Second
	// MinInFlight is the smallest window FlowTarget sizes, and where it
	// starts (or MaxInFlight if that is smaller).
	MinInFlight = 256
)

// ErrConfig is wrapped by every invalid Config.
var ErrConfig = errors.New("scheduler: invalid config")

// Config configures a scheduler instance.
type Config struct {
	NC *nats.Conn
	// ID names this instance: the lease holder when it leads. Unique.
	ID  string
	Log zerolog.Logger
	// Consolidate packs each application on as few workers as possible.
	// The default (false) spreads executors out, as Spark's
	// spark.deploy.spreadOut=true.
	Consolidate bool
	// WorkerSelection orders the workers offered to drivers (Spark 4's
	// spark.deploy.workerSelectionPolicy); the default is round robin over
	// shuffled workers (spark.deploy.spreadOutDrivers=true).
	WorkerSelection WorkerSelection
	// MaxExecutorRetries: an app whose executors fail this many times in a
	// row with none running is FAILED. Default 10; negative disables.
	MaxExecutorRetries int
	// DefaultCores caps the cores of an application that sets none (Spark's
	// spark.deploy.defaultCores). 0, the default: no cap, an app takes what
	// is free.
	DefaultCores int
	// RenewInterval (default lease TTL/3), BeatInterval (default 100ms),
	// MissedBeats (default 3): see lease.Timings. The lease TTL itself is
	// not configured here: it is the stoker-leader bucket's TTL, set by
	// the store's owner (bus.Provision) and read at Start, where these
	// timings are checked against it.
	RenewInterval time.Duration
	BeatInterval  time.Duration
	MissedBeats   int
	// BeatsOnly ignores the server's connection events (bus.ConnClosed):
	// a standby takes over only after missed beats, even when the bus
	// reports the leader's connection closed. For comparison; the
	// default follows the events (lease.Config.ConnEvents).
	BeatsOnly bool
	// LaunchTimeout bounds the wait for an agent to acknowledge a launch or
	// kill. Default 2s.
	LaunchTimeout time.Duration
	// MaxInFlight bounds the executors LAUNCHING at once (placed, launch
	// not yet reported RUNNING), and the executor kills in flight (sent,
	// not yet reported ended); the rest follow as reports arrive
	// (Options.MaxInFlight). 0: DefaultMaxInFlight; negative: no bound.
	// With FlowTarget it is the window's ceiling.
	MaxInFlight int
	// FlowTarget sizes the window between MinInFlight and MaxInFlight so
	// that launches and kills come back within it: placed → reported out
	// of LAUNCHING, kill sent → reported ended (the window is cut in half
	// when most of a window's worth take longer, grown while they do not:
	// flowWindow). 0: DefaultFlowTarget; negative: the window is
	// MaxInFlight, constant.
	FlowTarget time.Duration
	// Tick is the period of passes without changes. Default 1s.
	Tick time.Duration
	// Debounce gathers a burst of KV changes into one pass. Default 5ms.
	Debounce time.Duration
	// KillRetry: a kill not acted on (the target still holds resources)
	// is sent again after this long. Default 5s.
	KillRetry time.Duration
	// AvoidFor: nothing is placed on a worker for this long after a launch
	// to it failed. Default 5s.
	AvoidFor time.Duration
	// AppCreds, when set, mints the credential (role app, name the app id)
	// that each launch carries to its executor or driver; a driver's app id
	// is then reserved at launch. Nil on a bus without authentication.
	AppCreds func(appID string) ([]byte, error)

	// storeHook, for tests, sees the store before anything uses it (to
	// put a fault in front of a bucket: an answer lost after the write).
	storeHook func(*bus.Store)
}

// Service is one scheduler instance: a standby until it wins the lease,
// then the active scheduler while stoker-cluster/state says ALIVE for its
// epoch. It wires the parts, as Nomad splits them: a view of the buckets
// (one typed mirror each), a planner (the pure Schedule over the view) and
// an applier (plans into writes and commands), plus the lease elector and
// the micro announcement.
type Service struct {
	cfg     Config
	log     zerolog.Logger
	group   *svc.Group
	el      *lease.Elector
	ann     *announcer
	view    *view
	planner *planner
	applier *applier

	startOnce sync.Once
	stopOnce  sync.Once
	dirty     chan struct{}
}

// New validates cfg and applies defaults.
func New(cfg Config) (*Service, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	if cfg.NC == nil {
		return nil, bad("NC is required")
	}
	if err := schemas.ValidID("scheduler", cfg.ID); err != nil {
		return nil, bad("%v", err)
	}
	if cfg.MaxExecutorRetries == 0 {
		cfg.MaxExecutorRetries = DefaultMaxExecutorRetries
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.FlowTarget == 0 {
		cfg.FlowTarget = DefaultFlowTarget
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.LaunchTimeout, DefaultLaunchTimeout)
	def(&cfg.Tick, DefaultTick)
	def(&cfg.Debounce, DefaultDebounce)
	def(&cfg.KillRetry, DefaultKillRetry)
	def(&cfg.AvoidFor, DefaultAvoidFor)
	for name, d := range map[string]time.Duration{
		"LaunchTimeout": cfg.LaunchTimeout, "Tick": cfg.Tick, "Debounce": cfg.Debounce,
		"KillRetry": cfg.KillRetry, "AvoidFor": cfg.AvoidFor,
		"RenewInterval": cfg.RenewInterval, "BeatInterval": cfg.BeatInterval,
	} {
		if d < 0 {
			return nil, bad("%s %s is negative", name, d)
		}
	}
	if cfg.DefaultCores < 0 {
		return nil, bad("DefaultCores %d is negative", cfg.DefaultCores)
	}
	if cfg.MissedBeats < 0 {
		return nil, bad("MissedBeats %d is negative", cfg.MissedBeats)
	}
	return &Service{
		cfg:   cfg,
		log:   cfg.Log.With().Str("component", "scheduler").Str("scheduler_id", cfg.ID).Logger(),
		ann:   &announcer{nc: cfg.NC, id: cfg.ID},
		dirty: make(chan struct{}, 1),
	}, nil
}

// timings are the lease timings under the lease bucket's TTL, with defaults.
func (c *Config) timings(ttl time.Duration) (lease.Timings, error) {
	return lease.Timings{TTL: ttl, RenewInterval: c.RenewInterval, BeatInterval: c.BeatInterval, MissedBeats: c.MissedBeats}.WithDefaults()
}

// authorize proves this instance still leads epoch, for a command about to
// be sent: the elector's authority, renewed first if it would end within a
// beat.
func (s *Service) authorize(ctx context.Context, epoch uint64) (time.Time, error) {
	if s.el == nil {
		return time.Time{}, lease.ErrNoAuthority
	}
	e, until, err := s.el.Confirm(ctx, s.el.Timings().BeatInterval)
	if err != nil {
		return time.Time{}, err
	}
	if e != epoch {
		return time.Time{}, fmt.Errorf("%w: leading epoch %d, not %d", lease.ErrNoAuthority, e, epoch)
	}
	return until, nil
}

// IsLeader reports whether this instance holds the scheduler lease.
func (s *Service) IsLeader() bool { return s.el != nil && s.el.IsLeader() }

// Epoch is the epoch of this instance's leadership, 0 when not leading.
func (s *Service) Epoch() uint64 {
	if s.el == nil {
		return 0
	}
	return s.el.Epoch()
}

// Start opens the store, reads the lease TTL from the lease bucket and
// checks the lease timings against it, starts watching the buckets, registers the
// micro service and campaigns for the lease. It returns once watching.
func (s *Service) Start(ctx context.Context) error {
	err := errors.New("scheduler: already started")
	s.startOnce.Do(func() { err = s.start(ctx) })
	return err
}

func (s *Service) start(ctx context.Context) error {
	js, err := jetstream.New(s.cfg.NC)
	if err != nil {
		return fmt.Errorf("scheduler: jetstream: %w", err)
	}
	st, err := bus.OpenStore(ctx, js)
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	if s.cfg.storeHook != nil {
		s.cfg.storeHook(st)
	}
	ttl, err := bus.LeaseTTL(ctx, st.Leader)
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	// The timings against the bucket's TTL, before anything starts.
	t, err := s.cfg.timings(ttl)
	if err != nil {
		return fmt.Errorf("%w: lease bucket %s has TTL %s: %w", ErrConfig, bus.BucketLeader, ttl, err)
	}
	s.group = svc.NewGroup(context.Background())
	s.view = newView(st, s.log, bus.NewReporter(s.cfg.NC, s.log))
	s.planner = newPlanner(s.view, s.cfg)
	s.applier = &applier{nc: s.cfg.NC, id: s.cfg.ID, v: s.view, launchTimeout: s.cfg.LaunchTimeout, avoid: s.planner.avoidWorker,
		appCreds: s.cfg.AppCreds, authorize: s.authorize}
	if err := s.view.watch(s.group.Context(), s.group, s.poke); err != nil {
		s.group.Stop()
		return fmt.Errorf("scheduler: watch: %w", err)
	}
	log := s.log
	s.ann.status = bus.MicroHandler(s.group.Context(), &log, nil, s.handleStatus)
	if err := s.ann.announce(false, 0); err != nil {
		s.group.Stop()
		return fmt.Errorf("scheduler: micro: %w", err)
	}
	if err := s.campaign(ctx, st.Leader, t); err != nil {
		s.ann.stop()
		s.group.Stop()
		return fmt.Errorf("scheduler: %w", err)
	}
	s.log.Info().Bool("spread_out", !s.cfg.Consolidate).Int("max_executor_retries", s.cfg.MaxExecutorRetries).
		Int("default_cores", s.cfg.DefaultCores).
		Dur("lease_ttl", ttl).Msg("scheduler started (standby until it wins the lease)")
	return nil
}

// campaign starts the elector: leading runs passes under the leader
// context, and every change of leadership is re-announced.
func (s *Service) campaign(ctx context.Context, kv jetstream.KeyValue, t lease.Timings) error {
	// el is declared first so the callbacks can read its state: both run
	// only after el.Start, which follows the assignment.
	var el *lease.Elector
	el, err := lease.NewElector(lease.Config{
		KV: kv, NC: s.cfg.NC, Key: bus.KeyScheduler, ID: s.cfg.ID,
		Timings: t, ReleaseOnStop: true, ConnEvents: !s.cfg.BeatsOnly, Log: s.cfg.Log,
		OnStartedLeading: func(lctx context.Context, epoch uint64) {
			s.reannounce(el)
			s.group.Go(func(gctx context.Context) {
				ctx, cancel := context.WithCancel(lctx)
				defer context.AfterFunc(gctx, cancel)()
				defer cancel()
				s.lead(ctx, epoch)
			})
		},
		OnStoppedLeading: func() { s.reannounce(el) },
	})
	if err != nil {
		return err
	}
	// Set before Start: the leader's goroutine reads it (authorize).
	s.el = el
	return el.Start(ctx)
}

// Stop gives up the lease (released, so a standby takes over at once),
// stops every goroutine and the micro service. Idempotent.
func (s *Service) Stop() {
	s.stopOnce.Do(func() {
		s.ann.freeze() // no re-creation while stepping down
		if s.el != nil {
			s.el.Stop()
		}
		if s.group != nil {
			s.group.Stop()
		}
		s.ann.stop()
	})
}

// handleStatus answers stoker.leader.scheduler.status (served while
// leading; a standby whose micro service is being re-created refuses).
func (s *Service) handleStatus(_ context.Context, _ bus.Inbound, _ *schemas.ListRequest) (any, error) {
	epoch := s.Epoch()
	if !s.IsLeader() || epoch == 0 {
		return nil, bus.Errorf(bus.CodeUnavailable, "scheduler %s does not lead", s.cfg.ID)
	}
	st := s.planner.status()
	st.ID, st.Epoch = s.cfg.ID, epoch
	return &st, nil
}

// reannounce re-announces off the elector's goroutine, reading el's state
// when it runs.
// A failure is retried with backoff until it succeeds or the service stops:
// `nats micro` must end up telling the truth about who leads.
func (s *Service) reannounce(el *lease.Elector) {
	s.group.Go(func(ctx context.Context) {
		wait := 50 * time.Millisecond
		for {
			err := s.ann.announce(el.IsLeader(), el.Epoch())
			if err == nil {
				return
			}
			s.log.Warn().Err(err).Dur("retry_in", wait).Msg("cannot re-create the micro service after a leadership change")
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, time.Second)
		}
	})
}

func (s *Service) poke() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// lead runs passes while ctx (the leadership) lives: after a change (or a
// tick), plan and apply. A pass that follows an applied plan first waits
// Debounce to gather the burst of changes its own writes and the agents'
// answers bring; an idle scheduler plans at once (debounceWait).
func (s *Service) lead(ctx context.Context, epoch uint64) {
	log := s.log.With().Uint64("epoch", epoch).Logger()
	log.Info().Msg("leading; scheduling once the cluster is ALIVE for this epoch")
	defer log.Info().Msg("no longer leading")
	s.view.barrier(ctx, &log)
	tick := time.NewTicker(s.cfg.Tick)
	defer tick.Stop()
	s.poke()
	var (
		last     time.Time // when the last pass started
		busy     bool      // it applied a plan
		unproven bool      // the leadership could not be proven at the last pass
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.dirty:
		case <-tick.C:
		}
		if wait := debounceWait(busy, time.Since(last), s.cfg.Debounce); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		select {
		case <-s.dirty:
		default:
		}
		if s.planner.idle(epoch) {
			busy = false
			continue
		}
		// No pass without the leadership proven now: its commands could
		// not go out (each checks), and a pass folds its plan into the
		// view at once, so placements planned and then not made would
		// hold their resources in the view with nothing behind them
		// (while JetStream stalls after a heal, the lease held and its
		// renewal not yet answered). A later pass plans them.
		if _, err := s.authorize(ctx, epoch); err != nil {
			if !unproven && ctx.Err() == nil {
				log.Warn().Err(err).Msg("not scheduling: leadership not proven now; again once it is")
			}
			unproven = true
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.el.Timings().BeatInterval):
			}
			s.poke()
			continue
		}
		if unproven {
			log.Info().Msg("leadership proven again; scheduling")
			unproven = false
		}
		last = time.Now()
		p, ok := s.planner.plan(epoch, &log)
		if busy = ok && !p.Empty(); !busy {
			continue
		}
		s.applier.apply(ctx, epoch, p, &log)
		// Another pass, for what the plan's writes and the answers to its
		// commands changed, unless it filled the window of executors in
		// flight: then the report that frees a quarter of it asks for the
		// pass (planner.quietLocked), or the tick runs it.
		if !s.planner.windowFull() {
			s.poke()
		}
	}
}

// debounceWait is how long a pass waits before planning, given whether
// the last pass applied a plan and how long ago it started. After a plan
// it waits the whole debounce: the plan's own writes and the agents'
// answers come in a burst, gathered into one pass. Otherwise the cluster
// was idle, and a change (a submission) is planned at once (the debounce
// was 5 of the 8.5 ms from submission to 4 executors RUNNING), no sooner
// than a debounce after the last pass started: a stream of changes that
// plan nothing still costs at most one pass per debounce.
func debounceWait(busy bool, sinceLast, debounce time.Duration) time.Duration {
	if busy {
		return debounce
	}
	return debounce - sinceLast
}
