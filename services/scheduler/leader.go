package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// Elector defaults.
const (
	DefaultLeaseTTL     = 3 * time.Second
	DefaultBeatInterval = 100 * time.Millisecond
	DefaultMissedBeats  = 3
)

// ErrElectorConfig is wrapped by every invalid ElectorConfig.
var ErrElectorConfig = errors.New("scheduler: invalid elector config")

// ElectorConfig configures an Elector, in the manner of client-go's
// leaderelection.LeaderElectionConfig. Every instance competing for a key
// must use the same LeaseTTL, BeatInterval and MissedBeats.
type ElectorConfig struct {
	// KV is the lease bucket (stoker-leader). Its bucket-level TTL must be
	// LeaseTTL: renewals (Update) carry no per-key TTL (the TTL trap).
	KV jetstream.KeyValue
	NC *nats.Conn
	// Key is the lease key; default bus.KeyScheduler. Beats go to
	// bus.LeaderBeatSubject(Key).
	Key string
	// ID names this candidate; it must be unique among candidates.
	ID string
	// LeaseTTL is how long a lease lives without renewal. Default 3s.
	LeaseTTL time.Duration
	// RenewInterval is the time between renewals; below LeaseTTL. Default LeaseTTL/3.
	RenewInterval time.Duration
	// BeatInterval is the time between lease beats. Default 100ms.
	BeatInterval time.Duration
	// MissedBeats: a standby that hears no beat from the holder for
	// MissedBeats×BeatInterval deletes the lease (revision-guarded) and
	// campaigns. Default 3.
	MissedBeats int
	// ReleaseOnStop deletes the lease on Stop (revision-guarded), so a
	// standby takes over at once instead of after missed beats.
	ReleaseOnStop bool
	// OnStartedLeading runs in its own goroutine when this candidate wins;
	// ctx is cancelled the instant leadership is lost. Required.
	OnStartedLeading func(ctx context.Context, epoch uint64)
	// OnStoppedLeading is called (synchronously, after ctx is cancelled)
	// when leadership is lost or given up. Optional.
	OnStoppedLeading func()
	Log              zerolog.Logger
}

func (c *ElectorConfig) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrElectorConfig, fmt.Sprintf(format, args...))
	}
	if c.KV == nil || c.NC == nil {
		return bad("KV and NC are required")
	}
	if c.Key == "" {
		c.Key = bus.KeyScheduler
	}
	if err := schemas.ValidID("lease key", c.Key); err != nil {
		return bad("%v", err)
	}
	if c.ID == "" {
		return bad("ID is required")
	}
	if c.OnStartedLeading == nil {
		return bad("OnStartedLeading is required")
	}
	return c.timings()
}

// timings applies the timing defaults and checks how they relate.
func (c *ElectorConfig) timings() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrElectorConfig, fmt.Sprintf(format, args...))
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.RenewInterval == 0 {
		c.RenewInterval = c.LeaseTTL / 3
	}
	if c.BeatInterval == 0 {
		c.BeatInterval = DefaultBeatInterval
	}
	if c.MissedBeats == 0 {
		c.MissedBeats = DefaultMissedBeats
	}
	switch {
	case c.LeaseTTL < 100*time.Millisecond:
		return bad("LeaseTTL %s is below 100ms", c.LeaseTTL)
	case c.RenewInterval <= 0 || c.RenewInterval >= c.LeaseTTL:
		return bad("RenewInterval %s must be positive and below LeaseTTL %s", c.RenewInterval, c.LeaseTTL)
	case c.BeatInterval <= 0 || c.BeatInterval > c.RenewInterval:
		return bad("BeatInterval %s must be positive and at most RenewInterval %s", c.BeatInterval, c.RenewInterval)
	case c.MissedBeats < 1:
		return bad("MissedBeats %d must be at least 1", c.MissedBeats)
	case time.Duration(c.MissedBeats)*c.BeatInterval >= c.LeaseTTL:
		return bad("MissedBeats×BeatInterval (%s) must be below LeaseTTL %s", time.Duration(c.MissedBeats)*c.BeatInterval, c.LeaseTTL)
	}
	return nil
}

// Elector campaigns for one lease key in the lease bucket. The epoch is the
// KV revision of the Create that won the lease, so epochs only grow.
//
// A leader renews with Update(lastRevision) and steps down the instant a
// renewal fails, its own watch shows the key deleted or written by someone
// else, or it cannot publish beats. Standbys campaign when the key is
// deleted or expires, and delete the key of a holder whose beats stopped.
// A candidate that won by deleting a silent holder's key waits half the
// missed-beat window before starting, so a holder that was merely slow sees
// the delete and stops first. None of this fences on its own: commands carry
// the epoch and agents refuse lower ones.
type Elector struct {
	cfg ElectorConfig
	log zerolog.Logger

	leader atomic.Bool
	epoch  atomic.Uint64

	mu      sync.Mutex
	started bool
	stopped bool
	cancel  context.CancelFunc
	done    chan struct{}

	// Owned by the run goroutine.
	seenRev     uint64 // highest lease-key revision observed
	present     bool   // a live lease exists
	holder      string
	holderEpoch uint64
	holderRev   uint64
	lastSeen    time.Time // last sign of life from holder
	myRev       uint64
	since       time.Time
	lastRenew   time.Time
	lastBeatOK  time.Time
	leaderStop  context.CancelFunc
}

// NewElector validates cfg and applies defaults.
func NewElector(cfg ElectorConfig) (*Elector, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Elector{
		cfg: cfg,
		log: cfg.Log.With().Str("component", "elector").Str("lease", cfg.Key).Str("candidate", cfg.ID).Logger(),
	}, nil
}

// IsLeader reports whether this candidate holds the lease now.
func (e *Elector) IsLeader() bool { return e.leader.Load() }

// Epoch is the epoch of the current leadership, 0 when not leading.
func (e *Elector) Epoch() uint64 {
	if !e.leader.Load() {
		return 0
	}
	return e.epoch.Load()
}

// Start checks the bucket, subscribes to beats, watches the key and
// campaigns in the background. It returns once watching.
func (e *Elector) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		return errors.New("scheduler: elector already started")
	}
	st, err := e.cfg.KV.Status(ctx)
	if err != nil {
		return fmt.Errorf("scheduler: lease bucket: %w", err)
	}
	if st.TTL() != e.cfg.LeaseTTL {
		return fmt.Errorf("%w: lease bucket %s has TTL %s, LeaseTTL is %s", ErrElectorConfig, st.Bucket(), st.TTL(), e.cfg.LeaseTTL)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w, err := e.cfg.KV.Watch(rctx, e.cfg.Key)
	if err != nil {
		cancel()
		return fmt.Errorf("scheduler: watch lease: %w", err)
	}
	beats := make(chan schemas.LeaseBeat, 64)
	sub, err := e.cfg.NC.Subscribe(bus.LeaderBeatSubject(e.cfg.Key), func(m *nats.Msg) {
		var b schemas.LeaseBeat
		if bus.DecodeMsg(m, &b) != nil {
			return
		}
		select {
		case beats <- b:
		default:
		}
	})
	if err != nil {
		w.Stop()
		cancel()
		return fmt.Errorf("scheduler: subscribe to beats: %w", err)
	}
	e.started, e.cancel, e.done = true, cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		defer func() { _ = sub.Unsubscribe() }()
		e.run(rctx, w, beats)
	}()
	return nil
}

// Stop gives up leadership (cancelling the leader context and, with
// ReleaseOnStop, deleting the lease) and waits for the elector to end.
// Idempotent.
func (e *Elector) Stop() {
	e.mu.Lock()
	if !e.started || e.stopped {
		e.stopped = true
		e.mu.Unlock()
		return
	}
	e.stopped = true
	e.mu.Unlock()
	e.cancel()
	<-e.done
}

func (e *Elector) run(ctx context.Context, w jetstream.KeyWatcher, beats <-chan schemas.LeaseBeat) {
	defer func() { _ = w.Stop() }()
	tick := time.NewTicker(e.cfg.BeatInterval)
	defer tick.Stop()
	e.campaign(ctx, false)
	for {
		select {
		case <-ctx.Done():
			e.shutdown()
			return
		case ent, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					continue
				}
				// The watcher ended under us: start another.
				nw, err := e.cfg.KV.Watch(ctx, e.cfg.Key)
				if err != nil {
					e.log.Warn().Err(err).Msg("cannot watch the lease again; retrying")
					select {
					case <-ctx.Done():
					case <-time.After(e.cfg.BeatInterval):
					}
					continue
				}
				w = nw
				continue
			}
			if ent != nil {
				e.observe(ctx, ent)
			}
		case b := <-beats:
			if e.present && b.Holder == e.holder && b.Epoch == e.holderEpoch {
				e.lastSeen = time.Now()
			}
		case <-tick.C:
			e.tick(ctx)
		}
	}
}

// observe handles one watch entry of the lease key.
func (e *Elector) observe(ctx context.Context, ent jetstream.KeyValueEntry) {
	if ent.Revision() <= e.seenRev {
		return // our own write, or older than what we know
	}
	e.seenRev = ent.Revision()
	if op := ent.Operation(); op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge {
		e.present, e.holder = false, ""
		if e.leader.Load() {
			e.stepDown("lease deleted or expired")
		}
		e.campaign(ctx, false)
		return
	}
	var l schemas.Lease
	if err := bus.DecodeRecord(ent.Value(), &l); err != nil {
		e.log.Warn().Err(err).Msg("undecodable lease record")
		return
	}
	epoch := l.Epoch
	if epoch == 0 {
		epoch = ent.Revision()
	}
	if e.leader.Load() && (l.Holder != e.cfg.ID || epoch != e.epoch.Load()) {
		e.stepDown(fmt.Sprintf("lease taken by %s (epoch %d)", l.Holder, epoch))
	}
	if !e.present || e.holder != l.Holder || e.holderEpoch != epoch || ent.Revision() > e.holderRev {
		e.lastSeen = time.Now()
	}
	e.present, e.holder, e.holderEpoch, e.holderRev = true, l.Holder, epoch, ent.Revision()
}

func (e *Elector) missWindow() time.Duration {
	return time.Duration(e.cfg.MissedBeats) * e.cfg.BeatInterval
}

func (e *Elector) tick(ctx context.Context) {
	now := time.Now()
	if e.leader.Load() {
		err := bus.Publish(e.cfg.NC, bus.LeaderBeatSubject(e.cfg.Key), &schemas.LeaseBeat{Holder: e.cfg.ID, Epoch: e.epoch.Load()})
		switch {
		case err != nil || e.cfg.NC.IsClosed():
			e.stepDown(fmt.Sprintf("cannot publish lease beats: %v", err))
			return
		case e.cfg.NC.IsConnected():
			e.lastBeatOK = now
		case now.Sub(e.lastBeatOK) >= e.missWindow():
			// Standbys stop hearing us now and will take the lease.
			e.stepDown("disconnected from NATS for the missed-beat window")
			return
		}
		if now.Sub(e.lastRenew) >= e.cfg.RenewInterval {
			e.renew(ctx)
		}
		return
	}
	switch {
	case !e.present:
		e.campaign(ctx, false)
	case now.Sub(e.lastSeen) >= e.missWindow():
		dctx, cancel := context.WithTimeout(ctx, e.cfg.RenewInterval)
		err := e.cfg.KV.Delete(dctx, e.cfg.Key, jetstream.LastRevision(e.holderRev))
		cancel()
		if err != nil {
			// Renewed meanwhile (revision moved) or unreachable: look again.
			e.log.Debug().Err(err).Str("holder", e.holder).Msg("could not delete a silent holder's lease")
			e.refresh(ctx)
			e.lastSeen = now
			return
		}
		e.log.Info().Str("holder", e.holder).Uint64("epoch", e.holderEpoch).
			Dur("silent", now.Sub(e.lastSeen)).Msg("lease holder stopped beating; deleted its lease")
		bus.Emit(e.cfg.NC, "leader", e.cfg.Key, "REVOKED", fmt.Sprintf("%s deleted the lease of %s (epoch %d): no beat for %s",
			e.cfg.ID, e.holder, e.holderEpoch, now.Sub(e.lastSeen).Round(time.Millisecond)))
		e.present, e.holder = false, ""
		e.campaign(ctx, true)
	}
}

// refresh reads the lease key into the holder fields.
func (e *Elector) refresh(ctx context.Context) {
	gctx, cancel := context.WithTimeout(ctx, e.cfg.RenewInterval)
	defer cancel()
	ent, err := e.cfg.KV.Get(gctx, e.cfg.Key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			e.present, e.holder = false, ""
		}
		return
	}
	if ent.Revision() >= e.seenRev {
		e.seenRev = ent.Revision() - 1 // let observe take it
		e.observe(ctx, ent)
	}
}

// campaign tries to create the lease. stolen: the key was just deleted
// from under a silent holder.
func (e *Elector) campaign(ctx context.Context, stolen bool) {
	if ctx.Err() != nil || e.leader.Load() {
		return
	}
	now := time.Now().UTC()
	cctx, cancel := context.WithTimeout(ctx, e.cfg.RenewInterval)
	rev, err := bus.Create(cctx, e.cfg.KV, e.cfg.Key, &schemas.Lease{Holder: e.cfg.ID, Since: now, Renewed: now})
	cancel()
	if err != nil {
		if !bus.IsCASConflict(err) {
			e.log.Debug().Err(err).Msg("campaign failed")
		}
		e.refresh(ctx)
		return
	}
	if rev > e.seenRev {
		e.seenRev = rev
	}
	e.present, e.holder, e.holderEpoch, e.holderRev, e.lastSeen = true, e.cfg.ID, rev, rev, time.Now()
	if stolen {
		// Let a slow holder see the delete and stop before we start.
		select {
		case <-ctx.Done():
			return
		case <-time.After(e.missWindow() / 2):
		}
	}
	e.myRev, e.since = rev, now
	e.lastRenew, e.lastBeatOK = time.Now(), time.Now()
	lctx, lcancel := context.WithCancel(ctx)
	e.leaderStop = lcancel
	e.epoch.Store(rev)
	e.leader.Store(true)
	e.log.Info().Uint64("epoch", rev).Msg("leading")
	bus.Emit(e.cfg.NC, "leader", e.cfg.Key, "LEADING", fmt.Sprintf("%s leads with epoch %d", e.cfg.ID, rev))
	_ = bus.Publish(e.cfg.NC, bus.LeaderBeatSubject(e.cfg.Key), &schemas.LeaseBeat{Holder: e.cfg.ID, Epoch: rev})
	go e.cfg.OnStartedLeading(lctx, rev)
}

func (e *Elector) renew(ctx context.Context) {
	epoch := e.epoch.Load()
	rctx, cancel := context.WithTimeout(ctx, min(e.cfg.RenewInterval, e.cfg.LeaseTTL-time.Since(e.lastRenew)))
	defer cancel()
	now := time.Now().UTC()
	rev, err := bus.Update(rctx, e.cfg.KV, e.cfg.Key, &schemas.Lease{Holder: e.cfg.ID, Epoch: epoch, Since: e.since, Renewed: now}, e.myRev)
	if err != nil {
		e.stepDown(fmt.Sprintf("lease renewal failed: %v", err))
		return
	}
	e.myRev, e.lastRenew = rev, time.Now()
	if rev > e.seenRev {
		e.seenRev = rev
	}
	e.holderRev, e.lastSeen = rev, time.Now()
}

// stepDown cancels the leader context at once, then tells the owner.
func (e *Elector) stepDown(reason string) {
	if !e.leader.Load() {
		return
	}
	e.leaderStop()
	e.leader.Store(false)
	epoch := e.epoch.Load()
	e.log.Warn().Uint64("epoch", epoch).Str("reason", reason).Msg("stepped down")
	bus.Emit(e.cfg.NC, "leader", e.cfg.Key, "STOPPED", fmt.Sprintf("%s epoch %d: %s", e.cfg.ID, epoch, reason))
	if e.cfg.OnStoppedLeading != nil {
		e.cfg.OnStoppedLeading()
	}
}

func (e *Elector) shutdown() {
	if !e.leader.Load() {
		return
	}
	rev := e.myRev
	e.stepDown("stopping")
	if e.cfg.ReleaseOnStop && !e.cfg.NC.IsClosed() {
		ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RenewInterval)
		defer cancel()
		if err := e.cfg.KV.Delete(ctx, e.cfg.Key, jetstream.LastRevision(rev)); err != nil {
			e.log.Debug().Err(err).Msg("could not release the lease")
			return
		}
		bus.Emit(e.cfg.NC, "leader", e.cfg.Key, "RELEASED", fmt.Sprintf("%s released epoch %d", e.cfg.ID, e.epoch.Load()))
	}
}
