package scheduler

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/lease"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// Service defaults.
const (
	// DefaultLeaseTTL, DefaultBeatInterval and DefaultMissedBeats are the
	// lease package's defaults, named here for the command-line flags.
	DefaultLeaseTTL           = lease.DefaultTTL
	DefaultBeatInterval       = lease.DefaultBeatInterval
	DefaultMissedBeats        = lease.DefaultMissedBeats
	DefaultMaxExecutorRetries = 10
	DefaultLaunchTimeout      = 2 * time.Second
	DefaultTick               = time.Second
	DefaultDebounce           = 5 * time.Millisecond
	DefaultKillRetry          = 5 * time.Second
	DefaultAvoidFor           = 5 * time.Second
	// launchConcurrency bounds the commands in flight during one plan.
	launchConcurrency = 32
)

// ErrConfig is wrapped by every invalid Config.
var ErrConfig = errors.New("scheduler: invalid config")

// Config configures a scheduler instance.
type Config struct {
	NC *nats.Conn
	// ID names this instance: the lease holder when it leads. Unique.
	ID       string
	Replicas int
	Log      zerolog.Logger
	// Consolidate packs each application on as few workers as possible.
	// The default (false) spreads executors out, as Spark's
	// spark.deploy.spreadOut=true.
	Consolidate bool
	// MaxExecutorRetries: an app whose executors fail this many times in a
	// row with none running is FAILED. Default 10; negative disables.
	MaxExecutorRetries int
	// LeaseTTL (default 3s, also the lease bucket's TTL), RenewInterval
	// (default LeaseTTL/3), BeatInterval (default 100ms), MissedBeats
	// (default 3): see lease.Timings.
	LeaseTTL      time.Duration
	RenewInterval time.Duration
	BeatInterval  time.Duration
	MissedBeats   int
	// LaunchTimeout bounds the wait for an agent to acknowledge a launch or
	// kill. Default 2s.
	LaunchTimeout time.Duration
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
}

// Service is one scheduler instance: a standby until it wins the lease,
// then the active scheduler while stoker-cluster/state says ALIVE for its
// epoch.
type Service struct {
	cfg   Config
	log   zerolog.Logger
	group *svc.Group
	store *bus.Store
	el    *lease.Elector

	microMu      sync.Mutex    // guards the three fields below
	micro        micro.Service // re-created on every leadership change
	announced    string        // "<leader>/<epoch>" the running micro service says
	microStopped bool

	startOnce sync.Once
	stopOnce  sync.Once
	dirty     chan struct{}

	mu      sync.Mutex // guards the fields below
	snap    *Snapshot
	revs    map[string]uint64 // "<bucket>/<key>" → highest revision applied
	cluster *schemas.Cluster
	loaded  map[string]bool // buckets whose initial values arrived
	avoid   map[string]time.Time
	lastBad string
	rnd     *rand.Rand
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
	} {
		if d < 0 {
			return nil, bad("%s %s is negative", name, d)
		}
	}
	// Validate the lease timings now, not at Start.
	t, err := cfg.timings().WithDefaults()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	cfg.LeaseTTL, cfg.RenewInterval, cfg.BeatInterval, cfg.MissedBeats = t.TTL, t.RenewInterval, t.BeatInterval, t.MissedBeats
	return &Service{
		cfg:    cfg,
		log:    cfg.Log.With().Str("component", "scheduler").Str("scheduler_id", cfg.ID).Logger(),
		dirty:  make(chan struct{}, 1),
		snap:   NewSnapshot(),
		revs:   map[string]uint64{},
		loaded: map[string]bool{},
		avoid:  map[string]time.Time{},
		rnd:    rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}, nil
}

func (c *Config) timings() lease.Timings {
	return lease.Timings{TTL: c.LeaseTTL, RenewInterval: c.RenewInterval, BeatInterval: c.BeatInterval, MissedBeats: c.MissedBeats}
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

// Start creates the buckets if needed, starts watching them, registers the
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
	st, err := bus.EnsureStore(ctx, js, bus.StoreConfig{Replicas: s.cfg.Replicas, LeaseTTL: s.cfg.LeaseTTL})
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	s.store = st
	s.group = svc.NewGroup(context.Background())
	for _, b := range []struct {
		name string
		kv   jetstream.KeyValue
	}{
		{bus.BucketWorkers, st.Workers}, {bus.BucketDrivers, st.Drivers}, {bus.BucketApps, st.Apps},
		{bus.BucketExecutors, st.Executors}, {bus.BucketCluster, st.Cluster},
	} {
		w, err := b.kv.WatchAll(s.group.Context())
		if err != nil {
			s.group.Stop()
			return fmt.Errorf("scheduler: watch %s: %w", b.name, err)
		}
		name := b.name
		s.group.Go(func(ctx context.Context) { s.watch(ctx, name, w) })
	}
	if err := s.announce(nil); err != nil {
		s.group.Stop()
		return fmt.Errorf("scheduler: micro: %w", err)
	}
	// el is declared first so the callbacks can read its state: both run
	// only after el.Start, which follows the assignment.
	var el *lease.Elector
	el, err = lease.NewElector(lease.Config{
		KV: st.Leader, NC: s.cfg.NC, Key: bus.KeyScheduler, ID: s.cfg.ID,
		Timings: s.cfg.timings(), ReleaseOnStop: true, Log: s.cfg.Log,
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
	if err == nil {
		err = el.Start(ctx)
	}
	if err != nil {
		s.stopMicro()
		s.group.Stop()
		return fmt.Errorf("scheduler: %w", err)
	}
	s.el = el
	s.log.Info().Bool("spread_out", !s.cfg.Consolidate).Int("max_executor_retries", s.cfg.MaxExecutorRetries).
		Dur("lease_ttl", s.cfg.LeaseTTL).Msg("scheduler started (standby until it wins the lease)")
	return nil
}

// Stop gives up the lease (released, so a standby takes over at once),
// stops every goroutine and the micro service. Idempotent.
func (s *Service) Stop() {
	s.stopOnce.Do(func() {
		s.microMu.Lock()
		s.microStopped = true // no re-creation while stepping down
		s.microMu.Unlock()
		if s.el != nil {
			s.el.Stop()
		}
		if s.group != nil {
			s.group.Stop()
		}
		s.stopMicro()
	})
}

// announce (re)creates the micro service so that its metadata says whether
// this instance leads and with which epoch ({"id", "leader", "epoch"};
// epoch 0 on a standby): micro metadata is fixed at AddService, so
// `nats micro info stoker-scheduler` could not show a leadership change
// otherwise. It reads el's state now rather than taking it as arguments, so
// calls racing around a change converge on the latest. el nil: standby.
func (s *Service) announce(el *lease.Elector) error {
	leader, epoch := false, uint64(0)
	if el != nil {
		leader, epoch = el.IsLeader(), el.Epoch()
	}
	s.microMu.Lock()
	defer s.microMu.Unlock()
	key := fmt.Sprintf("%t/%d", leader, epoch)
	if s.microStopped || (s.micro != nil && s.announced == key) {
		return nil
	}
	if s.micro != nil {
		_ = s.micro.Stop()
		s.micro = nil
	}
	m, err := micro.AddService(s.cfg.NC, micro.Config{
		Name:        bus.ServiceScheduler,
		Version:     svc.Version,
		Description: "Stoker scheduler: places drivers and executors while it holds the lease",
		Metadata: map[string]string{
			"id": s.cfg.ID, "leader": strconv.FormatBool(leader), "epoch": strconv.FormatUint(epoch, 10),
		},
	})
	if err != nil {
		return err
	}
	s.micro, s.announced = m, key
	return nil
}

// reannounce runs announce off the elector's goroutine.
func (s *Service) reannounce(el *lease.Elector) {
	s.group.Go(func(context.Context) {
		if err := s.announce(el); err != nil {
			s.log.Warn().Err(err).Msg("cannot re-create the micro service after a leadership change")
		}
	})
}

func (s *Service) stopMicro() {
	s.microMu.Lock()
	defer s.microMu.Unlock()
	s.microStopped = true
	if s.micro != nil {
		_ = s.micro.Stop()
		s.micro = nil
	}
}

func (s *Service) poke() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// watch keeps one bucket's records in the snapshot.
func (s *Service) watch(ctx context.Context, bucket string, w jetstream.KeyWatcher) {
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() == nil {
					s.log.Error().Str("bucket", bucket).Msg("watch ended")
				}
				return
			}
			s.mu.Lock()
			if e == nil {
				s.loaded[bucket] = true
			} else {
				del := e.Operation() != jetstream.KeyValuePut
				s.setLocked(bucket, e.Key(), e.Revision(), e.Value(), del, false)
			}
			s.mu.Unlock()
			s.poke()
		}
	}
}

// setLocked puts one KV record into the snapshot if rev is newer than what
// it holds (or, with force, at least as new: to undo an optimistic Apply).
func (s *Service) setLocked(bucket, key string, rev uint64, data []byte, deleted, force bool) {
	id := bucket + "/" + key
	if old := s.revs[id]; rev < old || (rev == old && !force) {
		return
	}
	s.revs[id] = rev
	if deleted {
		switch bucket {
		case bus.BucketWorkers:
			delete(s.snap.Workers, key)
		case bus.BucketDrivers:
			delete(s.snap.Drivers, key)
		case bus.BucketApps:
			delete(s.snap.Apps, key)
		case bus.BucketExecutors:
			delete(s.snap.Executors, key)
		case bus.BucketCluster:
			if key == bus.KeyClusterState {
				s.cluster = nil
			}
		}
		return
	}
	var err error
	switch bucket {
	case bus.BucketWorkers:
		v := new(schemas.Worker)
		if err = bus.DecodeRecord(data, v); err == nil {
			s.snap.Workers[key] = v
		}
	case bus.BucketDrivers:
		v := new(schemas.Driver)
		if err = bus.DecodeRecord(data, v); err == nil {
			s.snap.Drivers[key] = v
		}
	case bus.BucketApps:
		v := new(schemas.App)
		if err = bus.DecodeRecord(data, v); err == nil {
			s.snap.Apps[key] = v
		}
	case bus.BucketExecutors:
		v := new(schemas.Executor)
		if err = bus.DecodeRecord(data, v); err == nil {
			s.snap.Executors[key] = v
		}
	case bus.BucketCluster:
		if key == bus.KeyClusterState {
			v := new(schemas.Cluster)
			if err = bus.DecodeRecord(data, v); err == nil {
				s.cluster = v
			}
		}
	}
	if err != nil {
		s.log.Warn().Err(err).Str("bucket", bucket).Str("key", key).Msg("undecodable record ignored")
	}
}

// refresh re-reads one record after a write that did not go as planned,
// replacing what an optimistic Apply put in the snapshot.
func (s *Service) refresh(ctx context.Context, kv jetstream.KeyValue, key string) {
	e, err := kv.Get(ctx, key)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil:
		s.setLocked(kv.Bucket(), key, e.Revision(), e.Value(), false, true)
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		s.setLocked(kv.Bucket(), key, s.revs[kv.Bucket()+"/"+key], nil, true, true)
	}
}

// lead runs passes while ctx (the leadership) lives.
func (s *Service) lead(ctx context.Context, epoch uint64) {
	log := s.log.With().Uint64("epoch", epoch).Logger()
	log.Info().Msg("leading; scheduling once the cluster is ALIVE for this epoch")
	defer log.Info().Msg("no longer leading")
	tick := time.NewTicker(s.cfg.Tick)
	defer tick.Stop()
	s.poke()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.dirty:
		case <-tick.C:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.Debounce):
		}
		select {
		case <-s.dirty:
		default:
		}
		p, ok := s.plan(epoch, &log)
		if !ok || p.Empty() {
			continue
		}
		s.apply(ctx, epoch, p, &log)
		s.poke()
	}
}

// plan runs one pass over the snapshot if this epoch may schedule, and
// applies the plan to the snapshot at once.
func (s *Service) plan(epoch uint64, log *zerolog.Logger) (Plan, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.loaded) < 5 || s.cluster == nil || s.cluster.Epoch != epoch || s.cluster.State != schemas.ClusterAlive {
		return Plan{}, false
	}
	now := time.Now()
	for k, at := range s.snap.Killing {
		if now.Sub(at) >= s.cfg.KillRetry {
			delete(s.snap.Killing, k)
		}
	}
	avoid := map[string]bool{}
	for w, until := range s.avoid {
		if now.After(until) {
			delete(s.avoid, w)
		} else {
			avoid[w] = true
		}
	}
	retries := max(s.cfg.MaxExecutorRetries, 0)
	p := Schedule(s.snap, Options{SpreadOut: !s.cfg.Consolidate, MaxExecutorRetries: retries, Rand: s.rnd, Avoid: avoid})
	if bad := fmt.Sprint(p.Inconsistencies); len(p.Inconsistencies) > 0 && bad != s.lastBad {
		log.Warn().Strs("inconsistencies", p.Inconsistencies).Msg("snapshot inconsistent")
		s.lastBad = bad
	}
	s.snap.Apply(p)
	return p, true
}

// avoidWorker keeps placements off a worker for AvoidFor.
func (s *Service) avoidWorker(wid string) {
	s.mu.Lock()
	s.avoid[wid] = time.Now().Add(s.cfg.AvoidFor)
	s.mu.Unlock()
}

// parallel runs fn(0..n-1) with bounded concurrency and waits.
func parallel(n int, fn func(i int)) {
	sem := make(chan struct{}, launchConcurrency)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(i)
		}()
	}
	wg.Wait()
}

// apply carries out a plan: record changes by compare-and-set, then
// commands. Every write re-checks the record it changes (the plan may be
// stale); a write that finds otherwise re-reads the record.
func (s *Service) apply(ctx context.Context, epoch uint64, p Plan, log *zerolog.Logger) {
	st := s.store
	now := func() time.Time { return time.Now().UTC() }

	for _, u := range p.ExecutorUpdates {
		var wrote bool
		_, _, err := bus.Mutate(ctx, st.Executors, u.Key, func(cur *schemas.Executor) (*schemas.Executor, error) {
			wrote = false
			if cur == nil || cur.State != u.From || cur.WorkerID != u.WorkerID {
				return nil, nil
			}
			n := *cur
			n.State, n.Message, n.UpdatedAt = u.State, u.Message, now()
			wrote = true
			return &n, nil
		})
		s.after(ctx, log, st.Executors, u.Key, err, wrote, "executor", string(u.State), u.Message)
	}
	for _, u := range p.DriverUpdates {
		var wrote bool
		_, _, err := bus.Mutate(ctx, st.Drivers, u.DriverID, func(cur *schemas.Driver) (*schemas.Driver, error) {
			wrote = false
			if cur == nil || cur.State != u.From || cur.WorkerID != u.FromWorker {
				return nil, nil
			}
			n := *cur
			n.State, n.WorkerID, n.Message, n.UpdatedAt = u.State, u.WorkerID, u.Message, now()
			wrote = true
			return &n, nil
		})
		s.after(ctx, log, st.Drivers, u.DriverID, err, wrote, "driver", string(u.State), u.Message)
	}
	var placed []AppUpdate
	for _, u := range p.AppUpdates {
		if !u.State.Terminal() {
			placed = append(placed, u)
			continue
		}
		s.updateApp(ctx, log, u)
	}

	// Kills, driver launches and executor records, all at once.
	failures := map[string]int{}
	var fmu sync.Mutex
	created := make([]bool, len(p.LaunchExecutors))
	nk, nd := len(p.Kills), len(p.LaunchDrivers)
	parallel(nk+nd+len(p.LaunchExecutors), func(i int) {
		switch {
		case i < nk:
			s.sendKill(ctx, epoch, p.Kills[i], log)
		case i < nk+nd:
			s.launchDriver(ctx, epoch, p.LaunchDrivers[i-nk], log)
		default:
			j := i - nk - nd
			e := p.LaunchExecutors[j].Executor
			e.Epoch, e.CreatedAt, e.UpdatedAt = epoch, now(), now()
			if _, err := bus.Create(ctx, st.Executors, e.Key(), &e); err != nil {
				log.Warn().Err(err).Str("executor", e.Key()).Msg("cannot create executor record; not launching it")
				s.refresh(ctx, st.Executors, e.Key())
				return
			}
			created[j] = true
			bus.Emit(s.cfg.NC, "executor", e.Key(), string(e.State), "placed on "+e.WorkerID)
		}
	})
	for _, u := range placed {
		s.updateApp(ctx, log, u)
	}
	parallel(len(p.LaunchExecutors), func(j int) {
		if !created[j] {
			return
		}
		l := p.LaunchExecutors[j]
		if err := s.launchExecutor(ctx, epoch, l, log); err != nil {
			fmu.Lock()
			failures[l.Executor.AppID]++
			fmu.Unlock()
		}
	})
	for app, n := range failures {
		_, _, err := bus.Mutate(ctx, st.Apps, app, func(cur *schemas.App) (*schemas.App, error) {
			if cur == nil || cur.State.Terminal() {
				return nil, nil
			}
			c := *cur
			c.ConsecutiveFailures += n
			c.UpdatedAt = now()
			return &c, nil
		})
		if err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Str("app_id", app).Msg("cannot count launch failures")
		}
	}
}

// after logs and emits the outcome of a record change; wrote says whether
// the compare-and-set wrote it (the event follows the write, not the plan).
func (s *Service) after(ctx context.Context, log *zerolog.Logger, kv jetstream.KeyValue, key string, err error, wrote bool, kind, state, msg string) {
	if err != nil {
		if ctx.Err() == nil {
			log.Warn().Err(err).Str(kind, key).Msg("cannot update record")
		}
		s.refresh(context.WithoutCancel(ctx), kv, key)
		return
	}
	// Mutate wrote nothing when the record moved on: re-read it (cheap,
	// rare) so the snapshot does not keep the optimistic value.
	s.refresh(ctx, kv, key)
	if wrote {
		bus.Emit(s.cfg.NC, kind, key, state, msg)
		log.Info().Str(kind, key).Str("state", state).Str("why", msg).Msg("record updated")
	}
}

func (s *Service) updateApp(ctx context.Context, log *zerolog.Logger, u AppUpdate) {
	var changedState bool
	_, _, err := bus.Mutate(ctx, s.store.Apps, u.AppID, func(cur *schemas.App) (*schemas.App, error) {
		changedState = false
		if cur == nil {
			return nil, nil
		}
		n := *cur
		if u.State != "" && cur.State == u.From {
			n.State, changedState = u.State, true
			if u.Message != "" {
				n.Message = u.Message
			}
		}
		if u.NextExecutorID > n.NextExecutorID {
			n.NextExecutorID = u.NextExecutorID
		} else if !changedState {
			return nil, nil
		}
		n.UpdatedAt = time.Now().UTC()
		return &n, nil
	})
	if err != nil {
		if ctx.Err() == nil {
			log.Warn().Err(err).Str("app_id", u.AppID).Msg("cannot update app")
		}
		s.refresh(context.WithoutCancel(ctx), s.store.Apps, u.AppID)
		return
	}
	if !changedState {
		s.refresh(ctx, s.store.Apps, u.AppID)
		return
	}
	bus.Emit(s.cfg.NC, "app", u.AppID, string(u.State), u.Message)
	log.Info().Str("app_id", u.AppID).Str("state", string(u.State)).Str("why", u.Message).Msg("app updated")
}

func (s *Service) sendKill(ctx context.Context, epoch uint64, k KillCmd, log *zerolog.Logger) {
	k.Kill.Epoch = epoch
	cctx, cancel := context.WithTimeout(ctx, s.cfg.LaunchTimeout)
	defer cancel()
	var ack schemas.Ack
	err := bus.Call(cctx, s.cfg.NC, bus.WorkerCmdKillSubject(k.WorkerID), &k.Kill, &ack)
	l := log.With().Str("worker_id", k.WorkerID).Str("target", KillTarget(k.Kill)).Logger()
	if err != nil {
		// Sent again after KillRetry if the target still holds resources.
		l.Warn().Err(err).Msg("kill not acknowledged")
		return
	}
	l.Info().Str("reason", k.Kill.Reason).Msg("kill sent")
}

// launchExecutor sends the launch of an executor whose record exists; on
// no acknowledgement or a refusal the record goes LAUNCHING → FAILED.
func (s *Service) launchExecutor(ctx context.Context, epoch uint64, l ExecutorLaunch, log *zerolog.Logger) error {
	e := l.Executor
	cmd := &schemas.LaunchExecutor{
		Epoch: epoch, AppID: e.AppID, ExecutorID: e.ID, Command: l.Command, Env: l.Env,
		Cores: e.Cores, MemoryMB: e.MemoryMB,
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.LaunchTimeout)
	var ack schemas.Ack
	err := bus.Call(cctx, s.cfg.NC, bus.WorkerCmdLaunchSubject(e.WorkerID), cmd, &ack)
	cancel()
	if err == nil {
		log.Debug().Str("executor", e.Key()).Str("worker_id", e.WorkerID).Msg("executor launch sent")
		return nil
	}
	if ctx.Err() != nil {
		return nil // lost the lease: the next leader's recovery sorts it out
	}
	s.avoidWorker(e.WorkerID)
	msg := fmt.Sprintf("launch on %s failed: %v", e.WorkerID, err)
	log.Warn().Str("executor", e.Key()).Str("worker_id", e.WorkerID).Err(err).Msg("executor launch failed")
	var wrote bool
	_, _, merr := bus.Mutate(ctx, s.store.Executors, e.Key(), func(cur *schemas.Executor) (*schemas.Executor, error) {
		wrote = false
		if cur == nil || cur.State != schemas.ExecutorLaunching || cur.Epoch != epoch {
			return nil, nil
		}
		n := *cur
		n.State, n.Message, n.UpdatedAt = schemas.ExecutorFailed, msg, time.Now().UTC()
		wrote = true
		return &n, nil
	})
	s.after(ctx, log, s.store.Executors, e.Key(), merr, wrote, "executor", string(schemas.ExecutorFailed), msg)
	return err
}

// launchDriver moves the driver to RUNNING on its worker, then sends the
// launch; without an acknowledgement it goes back to SUBMITTED.
func (s *Service) launchDriver(ctx context.Context, epoch uint64, l DriverLaunch, log *zerolog.Logger) {
	st := s.store
	dlog := log.With().Str("driver_id", l.DriverID).Str("worker_id", l.WorkerID).Int("attempt", l.Attempt).Logger()
	var placed bool
	d, _, err := bus.Mutate(ctx, st.Drivers, l.DriverID, func(cur *schemas.Driver) (*schemas.Driver, error) {
		placed = false
		if cur == nil || cur.State != l.From || cur.WorkerID != l.FromWorker || cur.KillRequested {
			return nil, nil
		}
		n := *cur
		n.State, n.WorkerID, n.Attempts, n.Message, n.UpdatedAt = schemas.DriverRunning, l.WorkerID, l.Attempt, "", time.Now().UTC()
		placed = true
		return &n, nil
	})
	if err != nil || !placed {
		if err != nil && ctx.Err() == nil {
			dlog.Warn().Err(err).Msg("cannot place driver")
		}
		s.refresh(context.WithoutCancel(ctx), st.Drivers, l.DriverID)
		return
	}
	bus.Emit(s.cfg.NC, "driver", l.DriverID, string(schemas.DriverRunning), fmt.Sprintf("placed on %s (attempt %d)", l.WorkerID, l.Attempt))
	cmd := &schemas.LaunchDriver{
		Epoch: epoch, DriverID: d.ID, Command: d.Command, Env: d.Env, Cores: d.Cores, MemoryMB: d.MemoryMB,
		Supervise: d.Supervise, Attempt: l.Attempt,
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.LaunchTimeout)
	var ack schemas.Ack
	err = bus.Call(cctx, s.cfg.NC, bus.WorkerCmdLaunchDriverSubject(l.WorkerID), cmd, &ack)
	cancel()
	if err == nil {
		dlog.Info().Msg("driver launch sent")
		return
	}
	if ctx.Err() != nil {
		return
	}
	s.avoidWorker(l.WorkerID)
	msg := fmt.Sprintf("launch on %s failed: %v", l.WorkerID, err)
	dlog.Warn().Err(err).Msg("driver launch failed; back to SUBMITTED")
	var wrote bool
	_, _, merr := bus.Mutate(ctx, st.Drivers, l.DriverID, func(cur *schemas.Driver) (*schemas.Driver, error) {
		wrote = false
		if cur == nil || cur.State != schemas.DriverRunning || cur.WorkerID != l.WorkerID || cur.Attempts != l.Attempt {
			return nil, nil
		}
		n := *cur
		n.State, n.WorkerID, n.Message, n.UpdatedAt = schemas.DriverSubmitted, "", msg, time.Now().UTC()
		wrote = true
		return &n, nil
	})
	s.after(ctx, log, st.Drivers, l.DriverID, merr, wrote, "driver", string(schemas.DriverSubmitted), msg)
}
