package agent

import (
	"context"
	"fmt"
	"time"
)

// contactLoop kills every child, with Config.StopAfterDisconnect set, once
// the agent has lost the cluster for that long: the cluster is about to
// declare the worker DEAD and start replacements, and at most one copy
// must run. Lost means either of:
//   - no round trip (a flush: PING/PONG) to its NATS server, checked every
//     heartbeat interval: the link is down or half-open;
//   - once registered, no heartbeat acknowledged since the last
//     acknowledgement or accepted registration: the agent's server may
//     answer while cut off with a minority of the bus, where no heartbeat
//     service that hears a quorum receives the beats (a service
//     acknowledges only then). Counting from the registration matters to
//     an agent cut off before its first acknowledged beat (found by the
//     partition test: the fault began 100 ms after a1 registered).
//
// The kill happens once per loss; a child launched after contact returns
// is not touched until the next one. The KILLED reports wait in the
// ordered report queue until the bus is back.
func (s *Service) contactLoop(ctx context.Context) {
	bound := s.cfg.StopAfterDisconnect
	last := time.Now() // the last proven round trip to the server
	stopped := false
	for {
		every := min(time.Duration(s.hbInterval.Load()), bound/4)
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		sent := time.Now()
		if s.nc.IsConnected() {
			fctx, cancel := context.WithTimeout(ctx, max(every, 100*time.Millisecond))
			if s.nc.FlushWithContext(fctx) == nil {
				last = sent
			}
			cancel()
		}
		lost, what := time.Since(last), "the bus"
		if at := s.ackedAt.Load(); at != 0 {
			if since := time.Since(time.Unix(0, at)); since > lost {
				lost, what = since, "the cluster (no heartbeat acknowledged by a heartbeat service that hears a quorum)"
			}
		}
		switch {
		case lost < bound && stopped:
			s.log.Info().Msg("in contact with the cluster again")
			stopped = false
		case lost >= bound && !stopped:
			stopped = true
			s.stopChildren(fmt.Sprintf("lost %s for %s (stop-after-disconnect %s): the cluster replaces this worker's work",
				what, lost.Round(time.Millisecond), bound))
		}
	}
}

// stopChildren kills every running executor and driver with reason.
func (s *Service) stopChildren(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.executors {
		s.killLocked(r, reason)
		n++
	}
	for _, r := range s.drivers {
		s.killLocked(r, reason)
		n++
	}
	s.log.Warn().Int("children", n).Str("reason", reason).Msg("stopping every child: cut off from the bus")
}
