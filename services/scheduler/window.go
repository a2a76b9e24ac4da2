package scheduler

import "time"

// flowWindow sizes the window of executors in flight (Options.MaxInFlight)
// from how long launches and kills take to come back: placed → reported
// out of LAUNCHING, kill sent → reported ended. It is TCP's congestion
// window, with a window's worth of samples for the round trip: a round in
// which more than half of the samples took longer than the target halves
// the window; a round within it, while the window was what held the
// passes back, doubles it up to the first cut (slow start) and grows it by
// an eighth after. A few samples late are no signal: a pass or a
// collection stalls some on a loaded machine, and a window cut for them
// only slowed placements (at 1,000 agents with a 1 s target, cutting on
// one late sample or on a tenth of a round: 816–1,433/s against 2,175/s
// constant); a queue makes most of them late.
//
// A constant window is right for one cluster size only. 8,192 kept every
// state report within its first wait at 1,000 agents, but at 10,000 agents
// registration takes about 2,000 single reports a second, so 8,192 kills in
// flight queued the reports four seconds deep, past the agents' 2 s wait,
// and each retry queued one more (docs/benchmarks.md, Scale).
//
// Pure: the planner feeds it samples under the view's lock.
type flowWindow struct {
	min, max int
	target   time.Duration

	size     int
	ssthresh int // doubling below, an eighth a round above
	// The current round: samples, those later than target, those taken
	// with at least half the window in flight. skip: the round after a
	// cut, whose samples were sent before it, does not count.
	n, late, full int
	skip          bool
	// rounds and cuts count the rounds ended and those that halved it.
	rounds, cuts uint64
}

// lateShare: a round with more than one sample in lateShare late is a cut
// (2: the median is late).
const lateShare = 2

// minRound is the fewest samples a round takes.
const minRound = 16

// newFlowWindow returns a window of min executors that stays within
// [min, max] and keeps the samples within target.
func newFlowWindow(lo, hi int, target time.Duration) *flowWindow {
	lo = max(min(lo, hi), 1)
	return &flowWindow{min: lo, max: hi, target: target, size: lo, ssthresh: hi}
}

// observe takes one sample: d from sending a launch or kill to its report,
// with inFlight the most launches or kills outstanding of the two when it
// came back. A round ends after a window's worth of samples; observe
// reports whether it changed the window.
func (w *flowWindow) observe(d time.Duration, inFlight int) bool {
	w.n++
	if d > w.target {
		w.late++
	}
	if inFlight >= w.size/2 {
		w.full++
	}
	if w.n < max(w.size, minRound) {
		return false
	}
	n, late, full, skip := w.n, w.late, w.full, w.skip
	w.n, w.late, w.full, w.skip = 0, 0, 0, false
	w.rounds++
	old := w.size
	switch {
	case skip:
	case late*lateShare > n:
		w.size = max(w.size/2, w.min)
		w.ssthresh, w.skip = w.size, true
		w.cuts++
	case full*2 < n:
		// Not what held the passes back: growing it would only let the
		// next burst through unmeasured.
	case w.size < w.ssthresh:
		w.size = min(w.size*2, w.ssthresh, w.max)
	default:
		w.size = min(w.size+max(w.size/8, 1), w.max)
	}
	return w.size != old
}
