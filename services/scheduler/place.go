package scheduler

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/stoker/stoker/schemas"
)

// checkHeld reports what holds more than a placeable worker offers: more
// cores or memory than it has, or a custom resource address it does not
// offer. It looks only at the workers something holds resources on, so a
// pass that places nothing costs nothing per worker (issue 12: at 10,000
// agents registering, building every worker's free resources on each pass
// was 9 % of all CPU).
func (st *pass) checkHeld() {
	for id, u := range st.used {
		w := st.placeable(id)
		if w == nil {
			continue
		}
		if u.Cores > w.Cores {
			st.inconsistent("worker %s: executors and drivers hold %d cores of %d", id, u.Cores, w.Cores)
		}
		if u.MemoryMB > w.MemoryMB {
			st.inconsistent("worker %s: executors and drivers hold %d MB of %d", id, u.MemoryMB, w.MemoryMB)
		}
	}
	for id, used := range st.usedAddr {
		w := st.placeable(id)
		if w == nil {
			continue
		}
		for name, addrs := range w.Resources {
			for a, holder := range used[name] {
				if !slices.Contains(addrs, a) {
					st.inconsistent("worker %s: %s holds %s address %s the worker does not offer", w.ID, holder, name, a)
				}
			}
		}
	}
}

// placeable is worker id if the pass may place on it (ALIVE, not
// cordoned, drained or avoided), else nil.
func (st *pass) placeable(id string) *schemas.Worker {
	w := st.s.Workers[id]
	if w == nil || !w.Placeable() || st.o.Avoid[id] {
		return nil
	}
	return w
}

// freeWorkers builds the placeable workers with their derived free
// resources, clamped at zero (checkHeld reports what went below), once a
// pass and only when something waits to be placed.
func (st *pass) freeWorkers() []*free {
	if st.workers != nil {
		return st.workers
	}
	ids := make([]string, 0, len(st.s.Workers))
	for id := range st.s.Workers {
		if st.placeable(id) != nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	st.workers = make([]*free, 0, len(ids))
	for _, id := range ids {
		w := st.s.Workers[id]
		u := st.used[id]
		f := &free{id: id, cores: max(w.Cores-u.Cores, 0), mem: max(w.MemoryMB-u.MemoryMB, 0)}
		if len(w.Resources) > 0 {
			f.res = st.freeAddrs(w)
		}
		st.workers = append(st.workers, f)
	}
	return st.workers
}

// freeAddrs is w's custom resource addresses not held by anything, in
// address order.
func (st *pass) freeAddrs(w *schemas.Worker) schemas.Resources {
	used := st.usedAddr[w.ID]
	res := make(schemas.Resources, len(w.Resources))
	for name, addrs := range w.Resources {
		held := used[name]
		fr := make([]string, 0, len(addrs))
		for _, a := range addrs {
			if _, ok := held[a]; !ok {
				fr = append(fr, a)
			}
		}
		schemas.SortAddresses(fr)
		res[name] = fr
	}
	return res
}

// fitsDriver reports whether w has room for d and satisfies its rules.
func (st *pass) fitsDriver(w *free, d *schemas.Driver, cs []schemas.Constraint) bool {
	return w.cores >= d.Cores && w.mem >= d.MemoryMB && w.has(d.ResourceAmounts, 0) && st.matches(w, cs)
}

// matches reports whether w's labels satisfy every constraint.
func (st *pass) matches(w *free, cs []schemas.Constraint) bool {
	return len(cs) == 0 || schemas.MatchAll(cs, st.s.Workers[w.id].Labels)
}

// placeDrivers: waiting drivers in submission order, alive workers
// shuffled, each driver to the next worker round robin with room for it.
func (st *pass) placeDrivers() {
	var waiting []*schemas.Driver
	for id, d := range st.s.Drivers {
		state := d.State
		if n, ok := st.driverNext[id]; ok {
			state = n
		}
		if _, ok := state.Next(schemas.DriverEvPlaced); ok && !d.KillRequested {
			waiting = append(waiting, d)
		}
	}
	if len(waiting) == 0 || len(st.freeWorkers()) == 0 {
		return
	}
	slices.SortFunc(waiting, func(a, b *schemas.Driver) int {
		if c := a.SubmittedAt.Compare(b.SubmittedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	if st.o.WorkerSelection != SelectRoundRobin {
		st.placeDriversByPolicy(waiting)
		return
	}
	shuffled := slices.Clone(st.workers)
	shuffle := rand.Shuffle
	if st.o.Rand != nil {
		shuffle = st.o.Rand.Shuffle
	}
	shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })

	n, pos := len(shuffled), 0
	for _, d := range waiting {
		cs := schemas.ParseConstraints(d.Constraints)
		for visited := 0; visited < n; visited++ {
			w := shuffled[pos]
			pos = (pos + 1) % n
			if st.fitsDriver(w, d, cs) {
				st.placeDriverOn(d, w)
				break
			}
		}
	}
}

// placeDriversByPolicy gives each waiting driver the first worker with
// room for it in the order of the worker selection policy, re-ranked after
// every placement (Spark 4's spark.deploy.workerSelectionPolicy with
// spark.deploy.spreadOutDrivers=false).
func (st *pass) placeDriversByPolicy(waiting []*schemas.Driver) {
	order := slices.Clone(st.workers)
	for _, d := range waiting {
		slices.SortStableFunc(order, st.o.WorkerSelection.compare)
		cs := schemas.ParseConstraints(d.Constraints)
		for _, w := range order {
			if st.fitsDriver(w, d, cs) {
				st.placeDriverOn(d, w)
				break
			}
		}
	}
}

// placeDriverOn takes d's resources off w and plans its launch there.
func (st *pass) placeDriverOn(d *schemas.Driver, w *free) {
	w.cores -= d.Cores
	w.mem -= d.MemoryMB
	st.launchDriver(d, w.id, w.take(d.ResourceAmounts))
}

func (st *pass) launchDriver(d *schemas.Driver, wid string, res schemas.Resources) {
	l := DriverLaunch{DriverID: d.ID, WorkerID: wid, Attempt: d.Attempts + 1, From: d.State, FromWorker: d.WorkerID}
	if i, ok := st.requeued[d.ID]; ok {
		// Relaunched in the same pass: the launch replaces the requeue.
		st.p.DriverUpdates = slices.Delete(st.p.DriverUpdates, i, i+1)
		delete(st.requeued, d.ID)
		for id, j := range st.requeued {
			if j > i {
				st.requeued[id] = j - 1
			}
		}
	}
	l.Driver = *d
	l.Driver.State = schemas.DriverRunning
	l.Driver.WorkerID = wid
	l.Driver.Attempts = l.Attempt
	l.Driver.Message = ""
	l.Driver.Resources = res
	st.p.LaunchDrivers = append(st.p.LaunchDrivers, l)
}

// placeApps: applications first come first served, each given executors
// on the workers with room for one, sorted by free cores descending, as
// Spark's startExecutorsOnWorkers.
func (st *pass) placeApps() {
	for _, a := range st.waitingApps() {
		n := len(st.p.AppUpdates)
		st.placeApp(a)
		if len(st.p.AppUpdates) == n && a.State == schemas.AppWaiting && st.appCores[a.ID] > 0 {
			// It holds executors, yet its record says WAITING: the write
			// that moved it to RUNNING when they were placed failed (its
			// bus node died at that moment), and nothing placed since.
			// Without this it stayed WAITING for good with every executor
			// RUNNING (TestChaos_BusNodeKills with 10 kills).
			st.p.AppUpdates = append(st.p.AppUpdates, AppUpdate{AppID: a.ID, From: a.State, State: schemas.AppRunning})
		}
	}
}

// waitingApps are the WAITING and RUNNING apps not reconciled this pass,
// in submission order.
func (st *pass) waitingApps() []*schemas.App {
	var apps []*schemas.App
	for id, a := range st.s.Apps {
		if _, ok := a.State.Next(schemas.AppEvPlaced); ok && !st.appDone[id] {
			apps = append(apps, a)
		}
	}
	slices.SortFunc(apps, func(a, b *schemas.App) int {
		if c := a.SubmittedAt.Compare(b.SubmittedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return apps
}

// coreCap is the cap on an app's cores: its own (Spark's spark.cores.max),
// else the cluster's default (spark.deploy.defaultCores); 0 means none.
func coreCap(a *schemas.App, defaultCores int) int {
	if a.MaxCores > 0 {
		return a.MaxCores
	}
	return max(defaultCores, 0)
}

// placeApp gives one app the executors assign finds room for, up to its
// max cores, and takes their resources off the workers.
func (st *pass) placeApp(a *schemas.App) {
	per, mem := a.Executor.Cores, a.Executor.MemoryMB
	if per <= 0 || mem <= 0 {
		st.inconsistent("app %s: executor spec has %d cores and %d MB", a.ID, per, mem)
		return
	}
	left := math.MaxInt
	if limit := coreCap(a, st.o.DefaultCores); limit > 0 {
		left = limit - st.appCores[a.ID]
	}
	if n := a.RequestedExecutors; n != nil {
		want := *n - st.elasticLive[a.ID]
		if want <= 0 {
			return
		}
		left = min(left, want*per)
	}
	if st.launchBudget < math.MaxInt {
		left = min(left, st.launchBudget*per)
	}
	if left < per {
		return
	}
	st.usable = st.usable[:0]
	workers := st.freeWorkers()
	res := a.Executor.Resources
	var cs []schemas.Constraint
	if len(a.Constraints) > 0 {
		cs = schemas.ParseConstraints(a.Constraints)
	}
	for _, w := range workers {
		if w.cores >= per && w.mem >= mem && (len(res) == 0 || w.has(res, 0)) && st.matches(w, cs) {
			st.usable = append(st.usable, w)
		}
	}
	if len(st.usable) == 0 {
		return
	}
	slices.SortStableFunc(st.usable, func(x, y *free) int { return cmp.Compare(y.cores, x.cores) })
	st.assigned = assign(st.assigned, st.usable, per, mem, res, left, st.o.SpreadOut)
	st.launchExecutors(a, st.usable, st.assigned)
}

// launchExecutors plans the executors assigned (cores per worker) to an
// app, with ids from its next free one, and moves it to RUNNING.
func (st *pass) launchExecutors(a *schemas.App, workers []*free, cores []int) {
	per, mem := a.Executor.Cores, a.Executor.MemoryMB
	next := max(a.NextExecutorID, st.appNextID[a.ID])
	first := next
	for i, w := range workers {
		if cores[i] == 0 {
			continue
		}
		n := cores[i] / per
		for k := 0; k < n; k++ {
			st.p.LaunchExecutors = append(st.p.LaunchExecutors, ExecutorLaunch{
				Executor: schemas.Executor{
					AppID: a.ID, ID: next, WorkerID: w.id, Cores: per, MemoryMB: mem,
					State: schemas.ExecutorLaunching, Resources: w.take(a.Executor.Resources),
				},
				Command: a.Executor.Command, Env: a.Executor.Env, Artifacts: a.Executor.Artifacts,
			})
			next++
		}
		w.cores -= cores[i]
		w.mem -= int64(n) * mem
	}
	if next == first {
		return
	}
	st.appCores[a.ID] += (next - first) * per
	if st.launchBudget < math.MaxInt {
		st.launchBudget -= next - first
	}
	u := AppUpdate{AppID: a.ID, From: a.State, NextExecutorID: next}
	if to, _ := a.State.Next(schemas.AppEvPlaced); to != a.State {
		u.State = to
	}
	st.p.AppUpdates = append(st.p.AppUpdates, u)
}
