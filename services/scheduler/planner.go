package scheduler

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/rs/zerolog"

	"github.com/stoker/stoker/schemas"
)

// planner runs Schedule over the view when the leader may schedule, and
// folds each plan into the view at once (optimistically: the applier
// re-reads what did not get written). It owns the pass options and what
// passes remember between them: kills sent, workers to avoid.
type planner struct {
	v         *view
	opts      Options
	killRetry time.Duration
	avoidFor  time.Duration

	// Guarded by v.mu.
	avoid   map[string]time.Time
	lastBad string
	// win sizes opts.MaxInFlight from the reports' round trips; nil: the
	// window is Config.MaxInFlight, constant. sent: executor key → when its
	// launch was planned, for the launches in flight (with win only).
	win       *flowWindow
	sent      map[string]time.Time
	lastSweep time.Time
	// limited: the last pass filled the window; freed: samples since it.
	limited bool
	freed   int
	// killEnded is the key of the executor whose record, just brought by
	// the watch, ended a kill in flight (executorSeenLocked, then read by
	// quietLocked for the same record).
	killEnded string
	log       zerolog.Logger
	passes    uint64 // plan calls, planned or not
	// What the last Schedule saw and gave: an unchanged view with nothing
	// timed pending skips Schedule (unchangedLocked).
	schedules uint64 // Schedule runs
	lastGen   uint64
	lastEpoch uint64
	lastRun   time.Time
	lastEmpty bool
}

// quietMax bounds how long an unchanged view goes without a Schedule: a
// pass runs at least this often anyway.
const quietMax = 10 * time.Second

func newPlanner(v *view, cfg Config) *planner {
	p := &planner{
		v: v,
		opts: Options{
			SpreadOut:          !cfg.Consolidate,
			WorkerSelection:    cfg.WorkerSelection,
			MaxExecutorRetries: max(cfg.MaxExecutorRetries, 0),
			DefaultCores:       cfg.DefaultCores,
			MaxInFlight:        max(cfg.MaxInFlight, 0),
			Rand:               rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		},
		killRetry: cfg.KillRetry,
		avoidFor:  cfg.AvoidFor,
		avoid:     map[string]time.Time{},
		log:       cfg.Log,
	}
	if cfg.MaxInFlight > 0 && cfg.FlowTarget > 0 {
		p.win = newFlowWindow(MinInFlight, cfg.MaxInFlight, cfg.FlowTarget)
		p.sent = map[string]time.Time{}
		v.executors.quiet = p.quietLocked
	}
	v.executors.set = p.executorSeenLocked
	return p
}

// sentForget is how long a launch's planning time is kept for a sample:
// one still LAUNCHING after it is lost to the launch checks, not slow.
const sentForget = 30 * time.Second

// quietLocked is startedAsPlaced, but for the report that frees a quarter
// of a window the last pass filled: nothing else would ask for the pass
// that places into it (the reports of launches ask for none), and the
// window would refill once a tick. While the last pass filled the window,
// the end of an executor it was killing is quiet too, until a quarter of
// the window is free, so that a teardown's passes each send a quarter of
// a window's kills rather than whatever ended since the last. What such
// an ending frees waits for that pass or the tick; with the window not
// full, every ending asks for its pass at once, as before.
func (p *planner) quietLocked(old, e *schemas.Executor) bool {
	killed := p.killEnded
	p.killEnded = ""
	switch {
	case startedAsPlaced(old, e):
	case p.limited && killed != "" && killed == e.Key():
	default:
		return false
	}
	if p.limited && p.freed >= max(p.win.size/4, 1) {
		p.freed, p.limited = 0, false
		return false
	}
	return true
}

// executorSeenLocked runs as the watch brings each executor record (those
// the view leaves out included). The kill of an executor that ended is no
// longer in flight: it is forgotten (a kill is only ever sent to an
// executor that holds resources; it was kept only against sending it
// twice). Kept until the kill's retry time, as they were, ended kills
// counted as in flight for the window (100,000 executors killed at once:
// up to 42,000 of them, against a window of 8,192) and kept the tick's
// pass running over the idle view until they expired. With a window, it
// samples the round trips: a launch this planner placed that left
// LAUNCHING, a kill it sent whose executor ended.
func (p *planner) executorSeenLocked(key string, e *schemas.Executor) {
	now := time.Now()
	var d time.Duration
	sampled := false
	if !e.State.Holds() {
		k := schemas.Kill{AppID: e.AppID, ExecutorID: e.ID}
		if at, ok := killSent(p.v.snap.Killing, k); ok {
			delete(p.v.snap.Killing, KillTarget(k))
			p.killEnded = key
			d, sampled = now.Sub(at), true
		}
	}
	if p.win == nil {
		return
	}
	if at, ok := p.sent[key]; ok && e.State != schemas.ExecutorLaunching {
		delete(p.sent, key)
		d, sampled = now.Sub(at), true
	}
	if !sampled {
		return
	}
	p.freed++
	if p.win.observe(d, max(len(p.sent), len(p.v.snap.Killing))) {
		p.log.Debug().Int("window", p.win.size).Dur("sample", d).Msg("executors in flight")
	}
}

// plan runs one pass if this epoch may schedule, and applies the plan to
// the view at once. ok is false when it may not.
func (p *planner) plan(epoch uint64, log *zerolog.Logger) (Plan, bool) {
	p.v.mu.Lock()
	defer p.v.mu.Unlock()
	p.passes++
	if !p.v.readyLocked(epoch) {
		return Plan{}, false
	}
	snap := p.v.snap
	now := time.Now()
	o := p.opts
	o.Avoid = p.expireLocked(now)
	if p.unchangedLocked(epoch, now) {
		return Plan{}, true
	}
	o.Now, o.Epoch = now, epoch
	if p.win != nil {
		o.MaxInFlight = p.win.size
	}
	plan := Schedule(p.v.placedLocked(), o)
	if p.win != nil {
		for _, l := range plan.LaunchExecutors {
			p.sent[l.Executor.Key()] = now
		}
	}
	p.schedules++
	p.lastGen, p.lastEpoch, p.lastRun, p.lastEmpty = p.v.gen, epoch, now, plan.Empty()
	if bad := fmt.Sprint(plan.Inconsistencies); len(plan.Inconsistencies) > 0 && bad != p.lastBad {
		log.Warn().Strs("inconsistencies", plan.Inconsistencies).Msg("snapshot inconsistent")
		p.lastBad = bad
	}
	snap.Apply(plan)
	if p.win != nil {
		// After Apply: the plan's kills are in flight too.
		p.freed = 0
		p.limited = len(p.sent) >= p.win.size || len(snap.Killing) >= p.win.size
	}
	return plan, true
}

// status is the planner's part of the leader's SchedulerStatus.
func (p *planner) status() schemas.SchedulerStatus {
	p.v.mu.Lock()
	defer p.v.mu.Unlock()
	st := schemas.SchedulerStatus{Window: p.opts.MaxInFlight, MaxInFlight: p.opts.MaxInFlight,
		Killing: len(p.v.snap.Killing), Passes: p.schedules}
	if p.win != nil {
		st.Window, st.MaxInFlight, st.FlowTargetMS = p.win.size, p.win.max, p.win.target.Milliseconds()
		st.WindowRounds, st.WindowCuts = p.win.rounds, p.win.cuts
	}
	for _, e := range p.v.snap.Executors {
		if e.State == schemas.ExecutorLaunching {
			st.Launching++
		}
	}
	return st
}

// idle says a pass now would plan nothing: the view is not ready for
// epoch, or unchanged (unchangedLocked). The leader then spends nothing on
// it, not even the proof of its leadership (a lease renewal when the last
// one is older than half the authority window). It counts as a pass.
func (p *planner) idle(epoch uint64) bool {
	p.v.mu.Lock()
	defer p.v.mu.Unlock()
	now := time.Now()
	if !p.v.readyLocked(epoch) {
		p.passes++
		return true
	}
	p.expireLocked(now)
	if p.unchangedLocked(epoch, now) {
		p.passes++
		return true
	}
	return false
}

// expireLocked forgets the kills and launch checks due for a retry and the
// avoidances that ended, and returns the workers still avoided. An expiry
// is a change of a pass's inputs, as a record's is.
func (p *planner) expireLocked(now time.Time) map[string]bool {
	snap := p.v.snap
	if p.win != nil && now.Sub(p.lastSweep) >= time.Second {
		p.lastSweep = now
		for k, at := range p.sent {
			if now.Sub(at) >= sentForget {
				delete(p.sent, k)
			}
		}
	}
	for k, at := range snap.Killing {
		if now.Sub(at) >= p.killRetry {
			delete(snap.Killing, k)
			p.v.gen++
		}
	}
	for w, at := range snap.Checking {
		if now.Sub(at) >= p.killRetry {
			delete(snap.Checking, w)
			p.v.gen++
		}
	}
	return p.avoidingLocked(now)
}

// unchangedLocked says a pass now would plan nothing, as the last did:
// the view has not changed since (every record change raises its count,
// those that ask for no pass included), the epoch is the same, and no
// input that changes with time alone is pending: a kill or launch check
// awaiting its retry, a worker avoided, a drain (its deadline). The tick
// then costs nothing: a pass over 100,000 running executors took about
// 130 ms of CPU each second on an idle cluster (13 % of a core in
// stoker bench --processes). At least one pass per quietMax runs anyway.
func (p *planner) unchangedLocked(epoch uint64, now time.Time) bool {
	s := p.v.snap
	if !p.lastEmpty || epoch != p.lastEpoch || p.v.gen != p.lastGen || now.Sub(p.lastRun) >= quietMax ||
		len(s.Killing) > 0 || len(s.Checking) > 0 || len(p.avoid) > 0 {
		return false
	}
	for _, w := range s.Workers {
		if w.Drain != nil {
			return false
		}
	}
	return true
}

// avoidingLocked forgets expired avoidances and returns the others.
func (p *planner) avoidingLocked(now time.Time) map[string]bool {
	avoid := map[string]bool{}
	for w, until := range p.avoid {
		if now.After(until) {
			delete(p.avoid, w)
			p.v.gen++
		} else {
			avoid[w] = true
		}
	}
	return avoid
}

// avoidWorker keeps placements off a worker for AvoidFor.
func (p *planner) avoidWorker(wid string) {
	p.v.mu.Lock()
	defer p.v.mu.Unlock()
	p.avoid[wid] = time.Now().Add(p.avoidFor)
}

// windowFull reports whether the last pass filled the window of
// executors in flight (never without a window).
func (p *planner) windowFull() bool {
	p.v.mu.Lock()
	defer p.v.mu.Unlock()
	return p.limited
}

// scheduleCount is the number of Schedule runs so far.
func (p *planner) scheduleCount() uint64 {
	p.v.mu.Lock()
	defer p.v.mu.Unlock()
	return p.schedules
}

// passCount is the number of plan calls so far.
func (p *planner) passCount() uint64 {
	p.v.mu.Lock()
	defer p.v.mu.Unlock()
	return p.passes
}
