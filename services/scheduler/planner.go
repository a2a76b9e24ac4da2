package scheduler

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/rs/zerolog"
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
	passes  uint64 // plan calls, planned or not
}

func newPlanner(v *view, cfg Config) *planner {
	return &planner{
		v: v,
		opts: Options{
			SpreadOut:          !cfg.Consolidate,
			WorkerSelection:    cfg.WorkerSelection,
			MaxExecutorRetries: max(cfg.MaxExecutorRetries, 0),
			DefaultCores:       cfg.DefaultCores,
			Rand:               rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		},
		killRetry: cfg.KillRetry,
		avoidFor:  cfg.AvoidFor,
		avoid:     map[string]time.Time{},
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
	for k, at := range snap.Killing {
		if now.Sub(at) >= p.killRetry {
			delete(snap.Killing, k)
		}
	}
	for w, at := range snap.Checking {
		if now.Sub(at) >= p.killRetry {
			delete(snap.Checking, w)
		}
	}
	o := p.opts
	o.Avoid = p.avoidingLocked(now)
	o.Now, o.Epoch = now, epoch
	plan := Schedule(p.v.placedLocked(), o)
	if bad := fmt.Sprint(plan.Inconsistencies); len(plan.Inconsistencies) > 0 && bad != p.lastBad {
		log.Warn().Strs("inconsistencies", plan.Inconsistencies).Msg("snapshot inconsistent")
		p.lastBad = bad
	}
	snap.Apply(plan)
	return plan, true
}

// avoidingLocked forgets expired avoidances and returns the others.
func (p *planner) avoidingLocked(now time.Time) map[string]bool {
	avoid := map[string]bool{}
	for w, until := range p.avoid {
		if now.After(until) {
			delete(p.avoid, w)
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

// passCount is the number of plan calls so far.
func (p *planner) passCount() uint64 {
	p.v.mu.Lock()
	defer p.v.mu.Unlock()
	return p.passes
}
