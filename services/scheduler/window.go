package scheduler

import "time"

// flowWindow sizes the window of executors in flight (Options.MaxInFlight)
// from how long launches and kills take to come back: placed → reported
// out of LAUNCHING, kill sent → reported ended. It is TCP's congestion
// window, with the report's round trip for the acknowledgement: a sample
// longer than the target halves the window, and a window's worth of
// samples within it, while the window was what held the pass back, grows
// it, doubling from the floor until the first cut (slow start) and by an
// eighth at a time after.
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
	ssthresh int       // slow start below, an eighth a window above
	hold     time.Time // no cut before: what was sent before the last one
	acc      int       // samples within target toward the next increase
}

// newFlowWindow returns a window of min executors that stays within
// [min, max] and keeps the samples within target.
func newFlowWindow(lo, hi int, target time.Duration) *flowWindow {
	lo = max(min(lo, hi), 1)
	return &flowWindow{min: lo, max: hi, target: target, size: lo, ssthresh: hi}
}

// observe takes one sample: d from sending a launch or kill to its report,
// seen at now, with inFlight the most launches or kills outstanding of the
// two. It reports whether the window changed.
func (w *flowWindow) observe(now time.Time, d time.Duration, inFlight int) bool {
	if d > w.target {
		// The reports queued before this one come back as late: one cut
		// per round trip, as TCP's once per window.
		if now.Before(w.hold) || w.size == w.min {
			return false
		}
		w.size = max(w.size/2, w.min)
		w.ssthresh, w.acc, w.hold = w.size, 0, now.Add(d)
		return true
	}
	if w.size >= w.max || inFlight < w.size/2 {
		// Not what limits the pass: growing it would only let the next
		// burst through unmeasured.
		return false
	}
	if w.size < w.ssthresh {
		w.size++
		return true
	}
	if w.acc++; w.acc < w.size {
		return false
	}
	w.acc = 0
	w.size = min(w.size+max(w.size/8, 1), w.max)
	return true
}
