package scheduler

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/stoker/stoker/schemas"
)

// reconcile decides, in this order: drivers on lost workers (relaunch if
// supervised, else ERROR; KILLED if a kill was asked), kills for drivers
// asked to die, applications whose driver ended or whose executors keep
// failing, executors on lost workers (LOST), and kills for executors whose
// application has ended. Records in UNKNOWN (workers, drivers, apps) are
// recovery's business and left alone.
func (st *pass) reconcile() {
	st.reconcileDrivers()
	st.reconcileApps()
	st.reconcileExecutors()
	st.reconcileElastic()
	st.reconcileDrains()
}

// reconcileElastic kills what an elastic application no longer wants
// (Spark's dynamic allocation): the executors its driver named
// (App.KillExecutors), then, beyond App.RequestedExecutors, LAUNCHING ones
// first and the newest first. It records, per such app, the executors that
// stay (placeApp tops them up to the requested total).
func (st *pass) reconcileElastic() {
	var byApp map[string][]*schemas.Executor
	for id, a := range st.s.Apps {
		if a.RequestedExecutors == nil && len(a.KillExecutors) == 0 {
			continue
		}
		if _, ok := a.State.Next(schemas.AppEvPlaced); !ok || st.appDone[id] {
			continue
		}
		if byApp == nil {
			byApp = map[string][]*schemas.Executor{}
			for _, e := range st.s.Executors {
				if a := st.s.Apps[e.AppID]; a != nil && (a.RequestedExecutors != nil || len(a.KillExecutors) > 0) &&
					e.State.Holds() && st.alive(e.WorkerID) {
					byApp[e.AppID] = append(byApp[e.AppID], e)
				}
			}
			st.elasticLive = map[string]int{}
		}
		var keep []*schemas.Executor
		for _, e := range byApp[id] {
			k := schemas.Kill{AppID: id, ExecutorID: e.ID}
			switch {
			case slices.Contains(a.KillExecutors, e.ID):
				k.Reason = "killed by its application"
				st.kill(e.WorkerID, k)
			case st.draining(e.WorkerID):
				// The drain's (reconcileDrains): replaced elsewhere first.
			case killSentAt(st.s.Killing, k).IsZero():
				keep = append(keep, e)
			}
		}
		if n := a.RequestedExecutors; n != nil && len(keep) > *n {
			slices.SortFunc(keep, func(x, y *schemas.Executor) int {
				if xl, yl := x.State == schemas.ExecutorLaunching, y.State == schemas.ExecutorLaunching; xl != yl {
					if xl {
						return -1
					}
					return 1
				}
				return cmp.Compare(y.ID, x.ID)
			})
			for _, e := range keep[:len(keep)-*n] {
				st.kill(e.WorkerID, schemas.Kill{AppID: id, ExecutorID: e.ID,
					Reason: fmt.Sprintf("application asked for %d executors", *n)})
			}
			keep = keep[len(keep)-*n:]
		}
		st.elasticLive[id] = len(keep)
	}
}

// reconcileDrivers: drivers on lost workers (LoseDriver's rule) and kills
// for drivers asked to die.
func (st *pass) reconcileDrivers() {
	s := st.s
	for id, d := range s.Drivers {
		if !d.State.Holds() {
			continue
		}
		switch {
		case st.lost(d.WorkerID):
			next, ok := schemas.LoseDriver(*d, lostReason(s, d.WorkerID))
			if !ok {
				continue
			}
			if next.State == schemas.DriverSubmitted {
				st.requeued[id] = len(st.p.DriverUpdates)
			}
			st.driverNext[id] = next.State
			st.p.DriverUpdates = append(st.p.DriverUpdates, DriverUpdate{DriverID: id, From: d.State, FromWorker: d.WorkerID,
				State: next.State, WorkerID: next.WorkerID, Message: next.Message})
		case d.KillRequested && st.alive(d.WorkerID):
			st.kill(d.WorkerID, schemas.Kill{DriverID: id, Reason: "kill requested"})
		}
	}
}

// reconcileApps ends the live applications that must end.
func (st *pass) reconcileApps() {
	for id, a := range st.s.Apps {
		if _, ok := a.State.Next(schemas.AppEvPlaced); !ok {
			continue // ended, or UNKNOWN: recovery's
		}
		if u := st.appEnd(id, a); u.State != "" {
			st.appDone[id] = true
			st.p.AppUpdates = append(st.p.AppUpdates, u)
		}
	}
}

// appEnd says how a live application ends in this pass, if it does: with
// its driver, when every run-once executor is done, or after too many
// executor failures in a row. State "" keeps it.
func (st *pass) appEnd(id string, a *schemas.App) AppUpdate {
	s := st.s
	u := AppUpdate{AppID: id, From: a.State}
	if d := s.Drivers[a.DriverID]; a.DriverID != "" && d != nil {
		ds := d.State
		if n, ok := st.driverNext[d.ID]; ok {
			ds = n
		}
		if to, ok := a.State.Next(schemas.AppAfterDriver(ds)); ok {
			u.State, u.Message = to, fmt.Sprintf("driver %s ended %s", d.ID, ds)
		}
	}
	if u.State == "" && a.RunOnce && a.MaxCores > 0 && st.appDoneCores[id] > 0 &&
		a.MaxCores-st.appDoneCores[id] < a.Executor.Cores && !st.appHolds[id] {
		u.State, _ = a.State.Next(schemas.AppEvFinished)
		u.Message = fmt.Sprintf("every executor ran its command once and exited 0 (%s)", schemas.FormatCores(st.appDoneCores[id]))
	}
	if u.State == "" && st.o.MaxExecutorRetries > 0 &&
		a.ConsecutiveFailures >= st.o.MaxExecutorRetries && !st.appRunning[id] {
		u.State, _ = a.State.Next(schemas.AppEvFailed)
		u.Message = fmt.Sprintf("executors failed %d times in a row", a.ConsecutiveFailures)
	}
	return u
}

// reconcileExecutors: executors on lost workers are LOST, those of an
// ended application are killed, and those an older epoch left LAUNCHING on
// an ALIVE worker are checked with its agent (LaunchCheck).
func (st *pass) reconcileExecutors() {
	s := st.s
	var checks map[string]int // worker id → index in st.p.Checks
	for key, e := range s.Executors {
		if !e.State.Holds() {
			continue
		}
		checks = st.checkStaleLaunch(checks, key, e)
		if lost, ok := e.State.Next(schemas.ExecutorEvLost); ok && st.lost(e.WorkerID) {
			st.p.ExecutorUpdates = append(st.p.ExecutorUpdates, ExecutorUpdate{
				Key: key, AppID: e.AppID, ExecutorID: e.ID, WorkerID: e.WorkerID,
				From: e.State, State: lost, Message: lostReason(s, e.WorkerID),
			})
			continue
		}
		a := s.Apps[e.AppID]
		ended := a == nil || a.State.Terminal() || st.appDone[e.AppID]
		if ended && st.alive(e.WorkerID) {
			reason := "application ended"
			if a == nil {
				reason = "application unknown"
			}
			st.kill(e.WorkerID, schemas.Kill{AppID: e.AppID, ExecutorID: e.ID, Reason: reason})
		}
	}
}

// checkStaleLaunch adds e to its worker's LaunchCheck if an older epoch
// left it LAUNCHING on an ALIVE worker not checked lately; checks maps
// worker ids to their index in st.p.Checks (allocated on first use).
func (st *pass) checkStaleLaunch(checks map[string]int, key string, e *schemas.Executor) map[string]int {
	if e.State != schemas.ExecutorLaunching || e.Epoch == 0 || e.Epoch >= st.o.Epoch || !st.alive(e.WorkerID) {
		return checks
	}
	if _, sent := st.s.Checking[e.WorkerID]; sent {
		return checks
	}
	if checks == nil {
		checks = map[string]int{}
	}
	i, ok := checks[e.WorkerID]
	if !ok {
		i = len(st.p.Checks)
		checks[e.WorkerID] = i
		st.p.Checks = append(st.p.Checks, LaunchCheck{WorkerID: e.WorkerID})
	}
	st.p.Checks[i].Keys = append(st.p.Checks[i].Keys, key)
	return checks
}

func (st *pass) kill(wid string, k schemas.Kill) {
	if _, sent := killSent(st.s.Killing, k); sent {
		return
	}
	if k.DriverID == "" && st.killBudget < math.MaxInt {
		if st.killBudget == 0 {
			return // the window is full: a later pass sends it
		}
		st.killBudget--
	}
	st.p.Kills = append(st.p.Kills, KillCmd{WorkerID: wid, Kill: k})
}

func lostReason(s *Snapshot, wid string) string {
	w := s.Workers[wid]
	if w == nil {
		return fmt.Sprintf("worker %s is not registered", wid)
	}
	return fmt.Sprintf("worker %s is %s", wid, w.State)
}

// Apply folds a plan into the snapshot, as if every write in it had
// succeeded, so the next pass sees it before the KV watch echoes it.
// Records are replaced, never modified in place.
func (s *Snapshot) Apply(p Plan) {
	if s.Killing == nil {
		s.Killing = map[string]time.Time{}
	}
	for _, u := range p.ExecutorUpdates {
		if e := s.Executors[u.Key]; e != nil && e.State == u.From {
			c := *e
			c.State, c.Message = u.State, u.Message
			s.Executors[u.Key] = &c
		}
	}
	for _, u := range p.DriverUpdates {
		if d := s.Drivers[u.DriverID]; d != nil && d.State == u.From {
			c := *d
			c.State, c.WorkerID, c.Message = u.State, u.WorkerID, u.Message
			s.Drivers[u.DriverID] = &c
		}
	}
	for _, u := range p.WorkerUpdates {
		if w := s.Workers[u.WorkerID]; w != nil && w.State == u.From && w.Instance == u.Instance {
			c := *w
			c.State, c.Reason = u.State, u.Reason
			s.Workers[u.WorkerID] = &c
		}
	}
	for _, u := range p.AppUpdates {
		if a := s.Apps[u.AppID]; a != nil && a.State == u.From {
			c := *a
			if u.State != "" {
				c.State = u.State
			}
			if u.NextExecutorID > c.NextExecutorID {
				c.NextExecutorID = u.NextExecutorID
			}
			if u.Message != "" {
				c.Message = u.Message
			}
			s.Apps[u.AppID] = &c
		}
	}
	for _, l := range p.LaunchExecutors {
		e := l.Executor
		s.Executors[e.Key()] = &e
	}
	for _, l := range p.LaunchDrivers {
		d := l.Driver
		s.Drivers[l.DriverID] = &d
	}
	now := time.Now()
	for _, k := range p.Kills {
		s.Killing[KillTarget(k.Kill)] = now
	}
	if len(p.Checks) > 0 && s.Checking == nil {
		s.Checking = map[string]time.Time{}
	}
	for _, c := range p.Checks {
		s.Checking[c.WorkerID] = now
	}
}
