package recovery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

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

// controller is the single goroutine that follows the lease: it starts a
// recovery for each new epoch (abandoning an older one still running) and,
// on a ticker, takes over stale claims and epochs nobody claimed. Its
// fields belong to that goroutine; each event has one method.
type controller struct {
	s          *Service
	ctx        context.Context
	highest    uint64               // the highest epoch seen
	cur        *run                 // the recovery in progress, if any
	w          jetstream.KeyWatcher // the lease watch (nil while re-watching)
	watchFails int
	rewatch    <-chan time.Time // when to watch the lease again
}

// control runs the controller until ctx ends, then abandons any recovery
// in progress and waits for it.
func (s *Service) control(ctx context.Context, w jetstream.KeyWatcher) {
	c := &controller{s: s, ctx: ctx, w: w}
	defer c.stop()
	tick := time.NewTicker(max(s.cfg.StaleClaim/3, 50*time.Millisecond))
	defer tick.Stop()
	for {
		var (
			updates <-chan jetstream.KeyValueEntry
			done    <-chan struct{}
		)
		if c.w != nil {
			updates = c.w.Updates()
		}
		if c.cur != nil {
			done = c.cur.done
		}
		select {
		case <-ctx.Done():
			return
		case <-c.rewatch:
			c.watchAgain()
		case e, ok := <-updates:
			c.onLeaseEntry(e, ok)
		case <-done:
			c.cur = nil
		case <-tick.C:
			c.onTick()
		}
	}
}

func (c *controller) stop() {
	if c.w != nil {
		_ = c.w.Stop()
	}
	c.abandon()
}

// abandon cancels the recovery in progress, if any, and waits for it.
func (c *controller) abandon() {
	if c.cur != nil {
		c.cur.cancel()
		<-c.cur.done
		c.cur = nil
	}
}

// onLeaseEntry follows the lease watch. A closed watch (connection trouble)
// is watched again with backoff; the ticker keeps following the lease
// meanwhile.
func (c *controller) onLeaseEntry(e jetstream.KeyValueEntry, ok bool) {
	if !ok {
		_ = c.w.Stop()
		c.w = nil
		c.retryWatch()
		c.s.log.Warn().Msg("lease watch ended; watching again")
		return
	}
	if e == nil || e.Operation() != jetstream.KeyValuePut {
		return // initial values done, or the lease was deleted/expired
	}
	l := new(schemas.Lease)
	if err := bus.DecodeRecord(e.Value(), l); err != nil {
		c.s.log.Warn().Err(err).Msg("undecodable lease")
		return
	}
	c.consider(epochInfo{epoch: l.EpochOf(e.Revision()), leader: l.Holder})
}

func (c *controller) retryWatch() {
	c.watchFails++
	c.rewatch = time.After(svc.Backoff(c.watchFails, 100*time.Millisecond, 5*time.Second, nil))
}

func (c *controller) watchAgain() {
	c.rewatch = nil
	w, err := c.s.store.Leader.Watch(c.ctx, bus.KeyScheduler)
	if err != nil {
		c.s.log.Warn().Err(err).Msg("cannot watch the lease; the ticker still follows it")
		c.retryWatch()
		return
	}
	c.w, c.watchFails = w, 0
}

// onTick reads the lease when no recovery runs: an epoch whose recovery
// nobody claimed, or whose claim went stale, is taken over.
func (c *controller) onTick() {
	if c.cur != nil {
		return
	}
	lctx, cancel := context.WithTimeout(c.ctx, c.s.cfg.RecoveryTimeout)
	l, ep, err := bus.CurrentLease(lctx, c.s.store.Leader, bus.KeyScheduler)
	cancel()
	if err != nil {
		if !errors.Is(err, bus.ErrNotFound) && c.ctx.Err() == nil {
			c.s.log.Debug().Err(err).Msg("cannot read the lease")
		}
		return
	}
	c.consider(epochInfo{epoch: ep, leader: l.Holder})
}

// consider starts recovering ei if it is the newest epoch and not already
// being recovered here, abandoning an older recovery first.
func (c *controller) consider(ei epochInfo) {
	if ei.epoch > c.highest {
		c.highest = ei.epoch
	}
	if ei.epoch < c.highest {
		return
	}
	if c.cur != nil {
		if c.cur.epoch >= ei.epoch {
			return
		}
		c.s.log.Info().Uint64("epoch", c.cur.epoch).Uint64("newer", ei.epoch).Msg("abandoning recovery: a newer epoch began")
		c.abandon()
	}
	c.cur = c.s.maybeRecover(c.ctx, ei)
}

// maybeRecover claims ei.epoch if it is this instance's to recover and, if
// so, starts the recovery and returns it.
func (s *Service) maybeRecover(ctx context.Context, ei epochInfo) *run {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.RecoveryTimeout)
	defer cancel()
	c, claimed, err := s.claim(cctx, ei)
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
	bus.EmitEpoch(s.cfg.NC, ei.epoch, "cluster", fmt.Sprint(ei.epoch), string(schemas.ClusterRecovering),
		fmt.Sprintf("leader %s, term %d (epoch %d): recovery %s claimed it", ei.leader, c.Term, ei.epoch, s.cfg.ID))
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
			// A new leadership: the next term, whatever the revisions did.
			n := *next
			n.Term = cur.NextTerm()
			return &n
		case cur.Epoch == ei.epoch && cur.State == schemas.ClusterRecovering && now.Sub(cur.Since) > s.cfg.StaleClaim:
			s.log.Warn().Uint64("epoch", ei.epoch).Str("recoverer", cur.Recoverer).Time("since", cur.Since).
				Msg("taking over a stale recovery claim")
			n := *next
			n.Term = cur.Term
			n.Message = fmt.Sprintf("took over from %s (claim stale since %s)", cur.Recoverer, cur.Since.Format(time.RFC3339))
			return &n
		}
		return nil
	})
}

// casCluster is the compare-and-set of the cluster record, where an
// undecodable record counts as absent (it must not block recovery forever).
// fn returns the record to write or nil for none; casCluster reports
// whether fn's record was written.
func (s *Service) casCluster(ctx context.Context, fn func(cur *schemas.Cluster) *schemas.Cluster) (*schemas.Cluster, bool, error) {
	var wrote bool
	bad := func(err error) { s.log.Warn().Err(err).Msg("undecodable cluster record; overwriting it") }
	v, _, err := bus.MutateOrReplace(ctx, s.store.Cluster, bus.KeyClusterState, bad, func(cur *schemas.Cluster) (*schemas.Cluster, error) {
		next := fn(cur)
		wrote = next != nil
		return next, nil
	})
	if err != nil {
		return nil, false, err
	}
	return v, wrote, nil
}
