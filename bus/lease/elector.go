package lease

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

// Elector campaigns for one lease key. See the package doc for what it
// promises and what it does not.
type Elector struct {
	cfg Config
	log zerolog.Logger

	leader atomic.Bool
	epoch  atomic.Uint64

	// auth is the leader's provable authority: until when (monotonic) it
	// may send commands, and the connection's reconnect count when that was
	// proven (a reconnect voids it: a standby may have taken over on the
	// disconnect).
	authMu         sync.Mutex
	authUntil      time.Time
	authReconnects uint64
	confirms       chan chan struct{}

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
	holderConn  bus.ConnRef // the holder's connection, as its lease says
	myConn      bus.ConnRef // our connection as last written in the lease
	// lastSeen is the start of the holder's current silence as this
	// candidate heard it: a beat, a renewal seen, or the moment it could
	// hear again (connected, or done waiting on a failed delete).
	lastSeen time.Time
	deaf     bool // disconnected at the last tick: beats cannot arrive
	// heard: a beat of the current holder reached this candidate since it
	// learned of that holder or last doubted its own hearing (reconnected,
	// a failed delete). Until then silence is judged on the longer
	// silenceWindow, with renewals seen by the watch as signs of life.
	heard      bool
	myRev      uint64
	since      time.Time
	lastRenew  time.Time // the send of the last renewal that landed (or of the winning Create)
	lastBeatOK time.Time
	leaderStop context.CancelFunc
	// A renewal runs off the run goroutine, so beats go on while the bus
	// is slow: renewing says one is in flight, its result comes back on
	// renewed, and waiters are the Confirm calls waiting for it.
	renewing     bool
	renewed      chan renewal
	waiters      []chan struct{}
	failingSince time.Time // first failed renewal of the current run of failures
}

// renewal is the outcome of one renewal, sent back to the run goroutine.
type renewal struct {
	epoch      uint64
	rev        uint64
	err        error
	adopted    bool // the key held an earlier renewal of ours that had landed
	sent       time.Time
	reconnects uint64
	ref        bus.ConnRef
}

// NewElector validates cfg and applies defaults. Errors wrap ErrConfig.
func NewElector(cfg Config) (*Elector, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Elector{
		cfg:      cfg,
		confirms: make(chan chan struct{}),
		renewed:  make(chan renewal, 1),
		log:      cfg.Log.With().Str("component", "elector").Str("lease", cfg.Key).Str("candidate", cfg.ID).Logger(),
	}, nil
}

// Timings returns the timings in use, defaults applied.
func (e *Elector) Timings() Timings { return e.cfg.Timings }

// IsLeader reports whether this candidate holds the lease now.
func (e *Elector) IsLeader() bool { return e.leader.Load() }

// Epoch is the epoch of the current leadership, 0 when not leading.
func (e *Elector) Epoch() uint64 {
	if !e.leader.Load() {
		return 0
	}
	return e.epoch.Load()
}

// ErrNoAuthority: this candidate cannot prove it still leads (not leading,
// or the lease could not be confirmed in time).
var ErrNoAuthority = errors.New("lease: no provable authority")

// Authority is the epoch of the current leadership and the instant
// (monotonic clock) until which its holder may send commands: the send of
// the last renewal that succeeded plus Timings.AuthorityWindow, so it ends
// before any standby can lead. Zero when not leading, disconnected, or
// reconnected since that renewal.
func (e *Elector) Authority() (epoch uint64, until time.Time) {
	if !e.leader.Load() || !e.cfg.NC.IsConnected() {
		return 0, time.Time{}
	}
	e.authMu.Lock()
	until, rc := e.authUntil, e.authReconnects
	e.authMu.Unlock()
	if rc != e.cfg.NC.Stats().Reconnects || !time.Now().Before(until) {
		return 0, time.Time{}
	}
	return e.epoch.Load(), until
}

// confirmRenewals is how many renewals one Confirm may wait for. A
// renewal proves authority from its send, so one that took longer than
// AuthorityWindow less need proves too little: on a bus stalled for a
// moment (2 cores running the bus, the services and 1,000 agents), the
// next one usually does not.
const confirmRenewals = 3

// Confirm returns the current authority if it lasts at least need more;
// otherwise it has the lease renewed now (one renewal serves every caller
// waiting meanwhile) and returns the authority that renewal proved, trying
// up to confirmRenewals renewals within ctx. It fails with ErrNoAuthority
// when the lease cannot be confirmed: whoever asked must not send its
// command.
func (e *Elector) Confirm(ctx context.Context, need time.Duration) (uint64, time.Time, error) {
	for attempt := 0; ; attempt++ {
		epoch, until := e.Authority()
		if epoch != 0 && time.Until(until) >= need {
			return epoch, until, nil
		}
		if attempt >= confirmRenewals || !e.leader.Load() {
			return 0, time.Time{}, ErrNoAuthority
		}
		done := make(chan struct{})
		select {
		case e.confirms <- done:
		case <-ctx.Done():
			return 0, time.Time{}, fmt.Errorf("%w: %w", ErrNoAuthority, ctx.Err())
		}
		select {
		case <-done:
		case <-ctx.Done():
			return 0, time.Time{}, fmt.Errorf("%w: %w", ErrNoAuthority, ctx.Err())
		}
	}
}

func (e *Elector) setAuthority(sent time.Time, reconnects uint64) {
	e.authMu.Lock()
	defer e.authMu.Unlock()
	if sent.IsZero() {
		e.authUntil = time.Time{}
		return
	}
	e.authUntil, e.authReconnects = sent.Add(e.cfg.AuthorityWindow()), reconnects
}

// Start checks the bucket's TTL, subscribes to beats, watches the key and
// campaigns in the background. It returns once watching. The elector runs
// until Stop, not until ctx ends: ctx bounds Start only.
func (e *Elector) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		return errors.New("lease: elector already started")
	}
	st, err := e.cfg.KV.Status(ctx)
	if err != nil {
		return fmt.Errorf("lease: bucket status: %w", err)
	}
	if st.TTL() != e.cfg.TTL {
		return bad("lease bucket %s has TTL %s, LeaseTTL is %s", st.Bucket(), st.TTL(), e.cfg.TTL)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w, err := e.cfg.KV.Watch(rctx, e.cfg.Key)
	if err != nil {
		cancel()
		return fmt.Errorf("lease: watch %s: %w", e.cfg.Key, err)
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
		_ = w.Stop()
		cancel()
		return fmt.Errorf("lease: subscribe to beats: %w", err)
	}
	closed := make(chan bus.ConnRef, 64)
	var closedSub *nats.Subscription
	var status chan nats.Status
	if e.cfg.ConnEvents {
		// Standbys act on our closed connection within milliseconds, so
		// a leader that loses its connection stops at once too.
		status = e.cfg.NC.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
		closedSub, err = bus.OnClosed(e.cfg.NC, func(c bus.Closed) {
			select {
			case closed <- c.Conn:
			default:
			}
		})
		if err != nil {
			_ = sub.Unsubscribe()
			_ = w.Stop()
			cancel()
			return fmt.Errorf("lease: subscribe to connection events: %w", err)
		}
	}
	e.started, e.cancel, e.done = true, cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		defer func() { _ = sub.Unsubscribe() }()
		if closedSub != nil {
			defer func() { _ = closedSub.Unsubscribe() }()
			defer e.cfg.NC.RemoveStatusListener(status)
		}
		e.run(rctx, w, beats, closed, status)
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

func (e *Elector) run(ctx context.Context, w jetstream.KeyWatcher, beats <-chan schemas.LeaseBeat, closed <-chan bus.ConnRef, status chan nats.Status) {
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
			switch {
			case !ok:
				w = e.rewatch(ctx, w)
			case ent != nil:
				e.observe(ctx, ent)
			}
		case b := <-beats:
			if e.present && b.Holder == e.holder && b.Epoch == e.holderEpoch {
				e.lastSeen, e.heard = time.Now(), true
			}
		case done := <-e.confirms:
			if _, until := e.Authority(); e.leader.Load() && time.Until(until) < e.cfg.AuthorityWindow()/2 && e.renew(ctx) {
				e.waiters = append(e.waiters, done) // closed when the renewal ends
			} else {
				close(done)
			}
		case r := <-e.renewed:
			e.onRenewed(ctx, r)
		case _, ok := <-status:
			if !ok {
				status = nil
			}
			if !e.cfg.NC.IsConnected() {
				e.stepDown("lost the connection to NATS: standbys take over when the server reports it closed")
			}
		case c := <-closed:
			if !e.leader.Load() && e.present && e.holder != e.cfg.ID && !e.holderConn.Zero() && c == e.holderConn {
				e.revoke(ctx, time.Now(), true)
			}
		case <-tick.C:
			if e.leader.Load() {
				e.leaderTick(ctx)
			} else {
				e.standbyTick(ctx)
			}
		}
	}
}

// rewatch starts another watch after the current one ended under us; on
// failure it waits a beat and returns the old (closed) one to try again.
func (e *Elector) rewatch(ctx context.Context, old jetstream.KeyWatcher) jetstream.KeyWatcher {
	if ctx.Err() != nil {
		return old
	}
	w, err := e.cfg.KV.Watch(ctx, e.cfg.Key)
	if err != nil {
		e.log.Warn().Err(err).Msg("cannot watch the lease again; retrying")
		select {
		case <-ctx.Done():
		case <-time.After(e.cfg.BeatInterval):
		}
		return old
	}
	return w
}

// observe handles one watch entry of the lease key.
func (e *Elector) observe(ctx context.Context, ent jetstream.KeyValueEntry) {
	if ent.Revision() <= e.seenRev {
		return // our own write, or older than what we know
	}
	e.seenRev = ent.Revision()
	if bus.Deleted(ent) {
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
	epoch := l.EpochOf(ent.Revision())
	if e.leader.Load() && (l.Holder != e.cfg.ID || epoch != e.epoch.Load()) {
		e.stepDown(fmt.Sprintf("lease taken by %s (epoch %d)", l.Holder, epoch))
	}
	if !e.present || e.holder != l.Holder || e.holderEpoch != epoch {
		e.heard = false // a new holder: its beats may not reach us yet
	}
	if !e.present || e.holder != l.Holder || e.holderEpoch != epoch || ent.Revision() > e.holderRev {
		e.lastSeen = time.Now()
	}
	e.present, e.holder, e.holderEpoch, e.holderRev = true, l.Holder, epoch, ent.Revision()
	e.holderConn = bus.ConnRef{Server: l.Server, Client: l.Client}
}

// leaderTick beats, steps down when beats cannot go out, and renews.
func (e *Elector) leaderTick(ctx context.Context) {
	now := time.Now()
	err := bus.Publish(e.cfg.NC, bus.LeaderBeatSubject(e.cfg.Key), &schemas.LeaseBeat{Holder: e.cfg.ID, Epoch: e.epoch.Load()})
	switch {
	case err != nil || e.cfg.NC.IsClosed():
		e.stepDown(fmt.Sprintf("cannot publish lease beats: %v", err))
		return
	case e.cfg.NC.IsConnected():
		e.lastBeatOK = now
		if e.cfg.ConnEvents && bus.Ref(e.cfg.NC) != e.myConn {
			// Reconnected: standbys saw the old connection close; name
			// the new one before they act on it.
			e.renew(ctx)
			return
		}
	case now.Sub(e.lastBeatOK) >= e.cfg.MissWindow():
		// Standbys stop hearing us now and will take the lease.
		e.stepDown("disconnected from NATS for the missed-beat window")
		return
	}
	if now.Sub(e.lastRenew) >= e.cfg.RenewInterval {
		e.renew(ctx)
	}
}

// silenceWindow is how long a standby waits without a sign of life from the
// holder before it revokes the lease: the missed-beat window once it has
// heard the holder beat, else that plus two renew intervals, in which the
// holder's renewals (seen by the watch) count as signs of life. After a
// partition heals, the watch can show the new holder before the bus
// carries its beats here (interest crosses the healed routes later): a
// standby judging that holder on missed beats alone deposed it, costing a
// second epoch for one lost leader (issue 16 item 9). A fresh standby
// whose holder died before it started takes over that much later.
func (e *Elector) silenceWindow() time.Duration {
	if e.heard {
		return e.cfg.MissWindow()
	}
	return e.cfg.MissWindow() + 2*e.cfg.RenewInterval
}

// standbyTick campaigns when nobody holds the lease, and revokes the lease
// of a holder it has not heard for the missed-beat window while it could
// hear. Time spent disconnected is not silence from the holder: on
// reconnecting the missed-beat clock starts again.
func (e *Elector) standbyTick(ctx context.Context) {
	now := time.Now()
	switch {
	case !e.present:
		e.campaign(ctx, false)
	case !e.cfg.NC.IsConnected():
		e.deaf = true
	case e.deaf:
		e.deaf, e.heard = false, false
		e.lastSeen = now
	case now.Sub(e.lastSeen) >= e.silenceWindow():
		e.revoke(ctx, now, false)
	}
}

// revoke deletes the holder's lease (guarded by the revision last seen) and
// campaigns: because it stopped beating, or because the server reported
// its connection closed (connClosed), when there is no one to wait for.
func (e *Elector) revoke(ctx context.Context, now time.Time, connClosed bool) {
	dctx, cancel := context.WithTimeout(ctx, e.cfg.RenewInterval)
	err := e.cfg.KV.Delete(dctx, e.cfg.Key, jetstream.LastRevision(e.holderRev))
	cancel()
	if err != nil {
		// Renewed meanwhile (revision moved) or unreachable: look again.
		e.log.Debug().Err(err).Str("holder", e.holder).Msg("could not delete a silent holder's lease")
		e.refresh(ctx)
		// The time spent failing says nothing about the holder, and beats
		// may not have reached us meanwhile: a revocation needs a full
		// window of silence heard from now on, and a beat heard again
		// before the short one applies.
		e.lastSeen, e.heard = time.Now(), false
		return
	}
	silent := now.Sub(e.lastSeen).Round(time.Millisecond)
	why := fmt.Sprintf("no beat for %s", silent)
	if connClosed {
		why = fmt.Sprintf("its connection closed (server %s client %d)", e.holderConn.Server, e.holderConn.Client)
	}
	e.log.Info().Str("holder", e.holder).Uint64("epoch", e.holderEpoch).
		Str("why", why).Msg("deleted the lease holder's lease")
	bus.EmitEpoch(e.cfg.NC, e.holderEpoch, "leader", e.cfg.Key, "REVOKED", fmt.Sprintf("%s deleted the lease of %s (epoch %d): %s",
		e.cfg.ID, e.holder, e.holderEpoch, why))
	e.present, e.holder, e.holderConn = false, "", bus.ConnRef{}
	e.campaign(ctx, !connClosed)
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
	sent, reconnects := time.Now(), e.cfg.NC.Stats().Reconnects
	cctx, cancel := context.WithTimeout(ctx, e.cfg.RenewInterval)
	ref := bus.Ref(e.cfg.NC)
	rev, err := bus.Create(cctx, e.cfg.KV, e.cfg.Key, &schemas.Lease{Holder: e.cfg.ID, Since: now, Renewed: now,
		Server: ref.Server, Client: ref.Client})
	cancel()
	if err != nil {
		if !bus.IsCASConflict(err) {
			e.log.Debug().Err(err).Msg("campaign failed")
		}
		e.refresh(ctx)
		return
	}
	e.seenRev = max(e.seenRev, rev)
	e.present, e.holder, e.holderEpoch, e.holderRev, e.lastSeen = true, e.cfg.ID, rev, rev, time.Now()
	e.holderConn, e.myConn = ref, ref
	if stolen {
		// Let a slow holder see the delete and stop before we start.
		select {
		case <-ctx.Done():
			return
		case <-time.After(e.cfg.MissWindow() / 2):
		}
	}
	e.lead(ctx, rev, now, sent, reconnects)
}

// lead starts a leadership won with the Create at revision rev.
func (e *Elector) lead(ctx context.Context, rev uint64, since, sent time.Time, reconnects uint64) {
	e.myRev, e.since = rev, since
	e.setAuthority(sent, reconnects)
	e.lastRenew, e.lastBeatOK, e.failingSince = sent, time.Now(), time.Time{}
	lctx, lcancel := context.WithCancel(ctx)
	e.leaderStop = lcancel
	e.epoch.Store(rev)
	e.leader.Store(true)
	e.log.Info().Uint64("epoch", rev).Msg("leading")
	bus.EmitEpoch(e.cfg.NC, rev, "leader", e.cfg.Key, "LEADING", fmt.Sprintf("%s leads with epoch %d", e.cfg.ID, rev))
	_ = bus.Publish(e.cfg.NC, bus.LeaderBeatSubject(e.cfg.Key), &schemas.LeaseBeat{Holder: e.cfg.ID, Epoch: rev})
	go e.cfg.OnStartedLeading(lctx, rev)
}

// renew starts a renewal unless one is in flight; it reports whether one
// is (the caller may wait for its end through e.waiters). The renewal runs
// on its own goroutine so that beats go on meanwhile: a leader waiting on
// a bus that stalls (JetStream elects stream leaders for 4–9 s after a
// partition heals) keeps being heard, and no standby revokes a lease that
// is about to be renewed. It keeps trying while the lease may still stand
// (until TTL after the send of the last renewal that landed, less a beat):
// the bus being slow costs the cluster no epoch and no recovery (issue 16
// item 9). Commands stay bounded by the authority of the last renewal that
// landed. Past that, it steps down: the key may have expired.
func (e *Elector) renew(ctx context.Context) bool {
	if e.renewing {
		return true
	}
	left := e.cfg.TTL - time.Since(e.lastRenew) - e.cfg.BeatInterval
	if left <= 0 {
		e.stepDown(fmt.Sprintf("lease not renewed for %s (TTL %s): it may have expired", time.Since(e.lastRenew).Round(time.Millisecond), e.cfg.TTL))
		return false
	}
	e.renewing = true
	epoch, myRev, since := e.epoch.Load(), e.myRev, e.since
	now := time.Now().UTC()
	sent, reconnects := time.Now(), e.cfg.NC.Stats().Reconnects
	ref := bus.Ref(e.cfg.NC)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, min(e.cfg.RenewInterval, left))
		defer cancel()
		r := renewal{epoch: epoch, sent: sent, reconnects: reconnects, ref: ref}
		r.rev, r.err = bus.Update(rctx, e.cfg.KV, e.cfg.Key, &schemas.Lease{Holder: e.cfg.ID, Epoch: epoch, Since: since, Renewed: now,
			Server: ref.Server, Client: ref.Client}, myRev)
		if bus.IsCASConflict(r.err) {
			// A renewal that timed out may have landed: the key then holds
			// our own lease at a newer revision. Adopt the revision, not
			// the time (when it landed is unknown, so it proves no
			// authority): the next tick renews again from it.
			r.rev, r.err = e.adoptOwnRenewal(ctx, epoch)
			r.adopted = r.err == nil
		}
		e.renewed <- r
	}()
	return true
}

// onRenewed applies a renewal's outcome on the run goroutine.
func (e *Elector) onRenewed(ctx context.Context, r renewal) {
	e.renewing = false
	if !e.leader.Load() || r.epoch != e.epoch.Load() {
		// The leadership it renewed has ended. A new one's Confirm calls
		// wait for a renewal of their own.
		if e.leader.Load() && len(e.waiters) > 0 && e.renew(ctx) {
			return
		}
		e.releaseWaiters()
		return
	}
	defer e.releaseWaiters()
	switch {
	case r.err == nil && r.adopted:
		if r.rev != e.myRev {
			e.log.Info().Uint64("revision", r.rev).Msg("an earlier renewal had landed; renewing from it")
		}
		// The same revision again: the stream still holds an earlier
		// renewal of ours in flight (JetStream refuses a compare-and-set
		// on a subject with a proposal not yet applied); retried on the
		// next beat, logged once.
		e.myRev = r.rev
	case r.err == nil:
		if !e.failingSince.IsZero() {
			e.log.Info().Dur("failing_for", time.Since(e.failingSince).Round(time.Millisecond)).Msg("lease renewed again")
			e.failingSince = time.Time{}
		}
		e.myRev, e.lastRenew, e.myConn, e.holderConn = r.rev, r.sent, r.ref, r.ref
		e.setAuthority(r.sent, r.reconnects)
		e.seenRev = max(e.seenRev, r.rev)
		e.holderRev, e.lastSeen = r.rev, time.Now()
	case bus.Transient(r.err) && e.cfg.TTL-time.Since(e.lastRenew) > e.cfg.BeatInterval:
		// The bus is slow or healing: the lease still stands; the next
		// tick tries again.
		if e.failingSince.IsZero() {
			e.failingSince = time.Now()
			e.log.Warn().Err(r.err).Dur("since_renewal", time.Since(e.lastRenew).Round(time.Millisecond)).
				Msg("lease renewal failed; retrying while the lease stands")
		}
	default:
		e.failingSince = time.Time{}
		e.stepDown(fmt.Sprintf("lease renewal failed: %v", r.err))
	}
}

// releaseWaiters lets the Confirm calls waiting for a renewal look again.
func (e *Elector) releaseWaiters() {
	for _, w := range e.waiters {
		close(w)
	}
	e.waiters = nil
}

// adoptOwnRenewal reads the key after a renewal lost its compare-and-set:
// if it holds this elector's lease for epoch (an earlier renewal that
// timed out here but landed), its revision is adopted; anything else is
// a conflict.
func (e *Elector) adoptOwnRenewal(ctx context.Context, epoch uint64) (uint64, error) {
	rctx, cancel := context.WithTimeout(ctx, e.cfg.RenewInterval)
	defer cancel()
	l, rev, err := bus.Get[schemas.Lease](rctx, e.cfg.KV, e.cfg.Key)
	if err != nil {
		return 0, err
	}
	if l.Holder != e.cfg.ID || l.EpochOf(rev) != epoch {
		return 0, fmt.Errorf("lease held by %s (epoch %d): %w", l.Holder, l.EpochOf(rev), bus.ErrConflict)
	}
	return rev, nil
}

// stepDown cancels the leader context at once, then tells the owner.
func (e *Elector) stepDown(reason string) {
	if !e.leader.Load() {
		return
	}
	e.setAuthority(time.Time{}, 0)
	e.releaseWaiters()
	e.leaderStop()
	e.leader.Store(false)
	epoch := e.epoch.Load()
	e.log.Warn().Uint64("epoch", epoch).Str("reason", reason).Msg("stepped down")
	bus.EmitEpoch(e.cfg.NC, epoch, "leader", e.cfg.Key, "STOPPED", fmt.Sprintf("%s epoch %d: %s", e.cfg.ID, epoch, reason))
	if e.cfg.OnStoppedLeading != nil {
		e.cfg.OnStoppedLeading()
	}
}

func (e *Elector) shutdown() {
	if !e.leader.Load() {
		return
	}
	rev := e.myRev
	if e.renewing {
		// ctx is cancelled: the renewal in flight ends at once. One that
		// landed moved the revision the release is guarded by.
		if r := <-e.renewed; r.err == nil && r.epoch == e.epoch.Load() {
			rev = r.rev
		}
		e.renewing = false
	}
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
