// Package scheduler is Stoker's active master: Spark standalone's
// schedule() rebuilt as a pure planner (Schedule, over an in-memory
// Snapshot of the KV buckets) plus a thin service that holds the
// stoker-leader lease, keeps the snapshot by watching KV, and applies plans
// by compare-and-set writes and launch/kill commands to worker agents.
//
// What it does not promise: the lease alone does not fence. A deposed leader
// may still have commands in flight for a moment; agents refuse commands
// whose epoch is lower than the highest they have seen, and the scheduler
// only plans while stoker-cluster/state says ALIVE for its own epoch.
package scheduler

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stoker/stoker/schemas"
)

// Snapshot is the scheduler's in-memory view of the cluster. Used cores and
// memory are not part of it: Schedule derives them from the executors and
// drivers that hold resources, every time.
type Snapshot struct {
	Workers map[string]*schemas.Worker
	Drivers map[string]*schemas.Driver
	Apps    map[string]*schemas.App
	// Executors is keyed "<appid>.<execid>", as in stoker-executors.
	Executors map[string]*schemas.Executor
	// Killing remembers kill commands already sent (KillTarget → when), so
	// a pass does not repeat them. The service forgets old entries, which
	// makes a kill that the agent did not act on be sent again.
	Killing map[string]time.Time
	// Checking remembers the launch checks already sent (worker id →
	// when), so a pass does not repeat them; forgotten as kills are.
	Checking map[string]time.Time
}

// NewSnapshot returns an empty snapshot with every map allocated.
func NewSnapshot() *Snapshot {
	return &Snapshot{
		Workers:   map[string]*schemas.Worker{},
		Drivers:   map[string]*schemas.Driver{},
		Apps:      map[string]*schemas.App{},
		Executors: map[string]*schemas.Executor{},
		Killing:   map[string]time.Time{},
		Checking:  map[string]time.Time{},
	}
}

// Options tune a scheduling pass.
type Options struct {
	// SpreadOut spreads an application's executors over as many workers as
	// possible; false consolidates them on as few as possible.
	SpreadOut bool
	// MaxExecutorRetries: an app whose executors failed this many times in a
	// row with none RUNNING is FAILED. 0 or less disables the rule.
	MaxExecutorRetries int
	// DefaultCores caps the cores of an app that sets no cap of its own
	// (MaxCores 0), as Spark's spark.deploy.defaultCores; 0: no cap.
	DefaultCores int
	// Rand shuffles workers for driver placement; nil uses a random source.
	// Tests pass a seeded one.
	Rand *rand.Rand
	// Avoid names workers not to place anything on in this pass (the service
	// puts workers there for a while after a launch to them failed, so a
	// broken worker does not become a hot loop). Reconciliation still sees them.
	Avoid map[string]bool
	// WorkerSelection orders the workers offered to drivers; the default
	// is round robin over shuffled workers.
	WorkerSelection WorkerSelection
	// Now is the pass's clock, for drain deadlines; zero: time.Now().
	Now time.Time
	// Epoch is the epoch the pass plans under. An executor still LAUNCHING
	// under an older epoch on an ALIVE worker is checked with its agent
	// (Plan.Checks); 0 checks nothing.
	Epoch uint64
	// MaxInFlight bounds the executors LAUNCHING at once on live workers
	// (placed, not yet reported RUNNING): a pass places at most
	// MaxInFlight minus those, apps in submission order, and the next
	// passes place the rest as launches are reported. It bounds the
	// executor kills in flight alike (sent, the executor not yet reported
	// ended): the kills past it wait for a later pass. It is flow control:
	// starting or stopping executors faster than agents and registration
	// take the reports only queues them past their timeouts. 0: no bound.
	MaxInFlight int
}

// ExecutorLaunch places one executor: create its record (LAUNCHING), then
// send LaunchExecutor to its worker.
type ExecutorLaunch struct {
	// Executor is the record to create: AppID, ID, WorkerID, Cores,
	// MemoryMB, State LAUNCHING. The service stamps Epoch and times.
	Executor  schemas.Executor
	Command   []string
	Env       []string
	Artifacts []schemas.Artifact
}

// DriverLaunch places one driver. It carries its own record change: the
// driver must still be From on FromWorker, and becomes RUNNING on WorkerID
// with Attempts = Attempt. (A supervised driver whose worker was lost may be
// placed again in the same pass: From is then RUNNING on the lost worker.)
type DriverLaunch struct {
	DriverID   string
	WorkerID   string
	Attempt    int
	From       schemas.DriverState
	FromWorker string
	// Driver is the record as planned (RUNNING on WorkerID), for the command.
	Driver schemas.Driver
}

// AppUpdate changes an application record that is still From.
type AppUpdate struct {
	AppID string
	From  schemas.AppState
	// State is the new state; "" keeps the current one.
	State schemas.AppState
	// NextExecutorID, when greater than the record's, replaces it.
	NextExecutorID int
	Message        string
}

// ExecutorUpdate changes an executor record that is still From.
type ExecutorUpdate struct {
	Key        string
	AppID      string
	ExecutorID int
	WorkerID   string
	From       schemas.ExecutorState
	State      schemas.ExecutorState
	Message    string
}

// DriverUpdate changes a driver record that is still From on FromWorker,
// without launching it: relaunch (SUBMITTED, no worker), ERROR or KILLED.
type DriverUpdate struct {
	DriverID   string
	From       schemas.DriverState
	FromWorker string
	State      schemas.DriverState
	WorkerID   string
	Message    string
}

// KillCmd is a kill command for one worker; the service stamps the epoch.
type KillCmd struct {
	WorkerID string
	Kill     schemas.Kill
	// Drain, when set, is the event the service writes about the worker
	// (stoker.events.worker.<wid>, DECOMMISSIONING) once the kill is
	// acknowledged: a step of its drain.
	Drain string
}

// WorkerUpdate changes a worker record that is still From for Instance
// and still draining: the end of a drain (DECOMMISSIONED).
type WorkerUpdate struct {
	WorkerID string
	Instance string
	From     schemas.WorkerState
	State    schemas.WorkerState
	Reason   string
}

// Plan is what one scheduling pass wants done. Slices are in a
// deterministic order.
type Plan struct {
	LaunchExecutors []ExecutorLaunch
	LaunchDrivers   []DriverLaunch
	AppUpdates      []AppUpdate
	ExecutorUpdates []ExecutorUpdate
	DriverUpdates   []DriverUpdate
	WorkerUpdates   []WorkerUpdate
	Kills           []KillCmd
	Checks          []LaunchCheck
	// Inconsistencies are findings that should not happen (a worker whose
	// holders exceed its size, an executor spec without cores); they are
	// logged, never acted on.
	Inconsistencies []string
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool {
	return len(p.LaunchExecutors) == 0 && len(p.LaunchDrivers) == 0 && len(p.AppUpdates) == 0 &&
		len(p.ExecutorUpdates) == 0 && len(p.DriverUpdates) == 0 && len(p.Kills) == 0 && len(p.WorkerUpdates) == 0 &&
		len(p.Checks) == 0
}

// LaunchCheck asks one worker's agent what it runs, to settle executors an
// older epoch left LAUNCHING on it (Keys, sorted). Recovery settles such
// records for every worker it asks; one it could not finish (a failure
// that is not transient, a write that did not land) leaves them holding
// resources with nobody to launch or lose them. Once the agent has
// answered the current epoch it refuses every older epoch's launch, so a
// key it does not list never runs: LOST; a key it lists is RUNNING.
type LaunchCheck struct {
	WorkerID string
	Keys     []string
}

// KillTarget names what a kill command is aimed at: "driver/<id>" or
// "executor/<appid>.<execid>".
func KillTarget(k schemas.Kill) string {
	if k.DriverID != "" {
		return "driver/" + k.DriverID
	}
	return killTargetExecutor + schemas.ExecutorKey(k.AppID, k.ExecutorID)
}

// appendKillTarget appends KillTarget(k) to b.
func appendKillTarget(b []byte, k schemas.Kill) []byte {
	if k.DriverID != "" {
		return append(append(b, "driver/"...), k.DriverID...)
	}
	b = append(append(append(b, killTargetExecutor...), k.AppID...), '.')
	return strconv.AppendInt(b, int64(k.ExecutorID), 10)
}

// killSent is when the kill of k was sent, from killing (keyed by
// KillTarget), looked up without building the key: every executor's end
// and every pass's kills look here.
func killSent(killing map[string]time.Time, k schemas.Kill) (time.Time, bool) {
	var buf [96]byte
	at, ok := killing[string(appendKillTarget(buf[:0], k))]
	return at, ok
}

// killSentAt is killSent's time alone (zero: not sent).
func killSentAt(killing map[string]time.Time, k schemas.Kill) time.Time {
	at, _ := killSent(killing, k)
	return at
}

// killTargetExecutor prefixes an executor's KillTarget.
const killTargetExecutor = "executor/"

// Schedule is Spark's Master.schedule() with the reconciliation that the
// Master does in its event handlers: it first reconciles (Reconcile), then
// places waiting drivers on shuffled alive workers round robin, then gives
// applications executors in submission order, spread out or consolidated.
// It does not modify s.
func Schedule(s *Snapshot, o Options) Plan {
	st := newPass(s, o)
	st.reconcile()
	st.checkHeld()
	st.placeDrivers()
	st.placeApps()
	st.sort()
	return st.p
}

// Reconcile is the reconciliation half of Schedule alone: executors on lost
// workers, drivers to relaunch or end, applications to fail or finish, and
// kills for what must not run any more. It places nothing.
func Reconcile(s *Snapshot, o Options) Plan {
	st := newPass(s, o)
	st.reconcile()
	st.sort()
	return st.p
}

// free is one placeable worker's free resources during a pass.
type free struct {
	id    string
	cores int
	mem   int64
	// res are the free addresses of each custom resource, in address
	// order; nil for a worker that offers none (the common case: the
	// struct stays small for the placement loop; labels are looked up in
	// the snapshot only for apps and drivers with constraints).
	res schemas.Resources
}

// has reports whether w has n executors' worth of amounts free beyond k
// already assigned (amounts per executor).
func (w *free) has(amounts schemas.Amounts, k int) bool {
	for name, n := range amounts {
		if len(w.res[name])-k*n < n {
			return false
		}
	}
	return true
}

// take removes amounts from w's free addresses and returns them.
func (w *free) take(amounts schemas.Amounts) schemas.Resources {
	if len(amounts) == 0 {
		return nil
	}
	got := make(schemas.Resources, len(amounts))
	for name, n := range amounts {
		got[name] = slices.Clone(w.res[name][:n])
		w.res[name] = w.res[name][n:]
	}
	return got
}

type pass struct {
	s *Snapshot
	o Options
	p Plan

	// what executors and drivers hold per worker, derived from the snapshot.
	used schemas.Usages
	// usedAddr: worker → resource name → address → holder, for the
	// workers where something holds custom resources.
	usedAddr map[string]map[string]map[string]string
	// per app: cores held by executors not being lost, whether one RUNS,
	// and the lowest executor id not taken by any record.
	appCores   map[string]int
	appRunning map[string]bool
	// appHolds: the app has an executor holding resources on a live worker;
	// appDoneCores: cores of RunOnce executors that exited 0 (done, counted
	// against MaxCores so they are not replaced).
	appHolds     map[string]bool
	appDoneCores map[string]int
	appNextID    map[string]int
	// elasticLive: per app with RequestedExecutors, the executors that
	// stay after this pass's kills.
	elasticLive map[string]int

	// decisions of this pass
	appDone    map[string]bool                // app reconciled this pass
	driverNext map[string]schemas.DriverState // driver state after reconciliation
	requeued   map[string]int                 // driver id → index in p.DriverUpdates

	workers []*free // placeable (ALIVE, not avoided), sorted by id; built by freeWorkers
	// launchBudget, killBudget: the executors this pass may still place,
	// and still send kills to (Options.MaxInFlight).
	launchBudget, killBudget int
	// buffers reused from app to app
	usable   []*free
	assigned []int
}

func newPass(s *Snapshot, o Options) *pass {
	st := &pass{
		s: s, o: o,
		used:     schemas.Usages{},
		appCores: map[string]int{}, appRunning: map[string]bool{}, appNextID: map[string]int{},
		appHolds: map[string]bool{}, appDoneCores: map[string]int{},
		appDone: map[string]bool{}, driverNext: map[string]schemas.DriverState{}, requeued: map[string]int{},
	}
	launching := 0
	for _, e := range s.Executors {
		if e.ID+1 > st.appNextID[e.AppID] {
			st.appNextID[e.AppID] = e.ID + 1
		}
		if !e.State.Holds() {
			if a := s.Apps[e.AppID]; a != nil && a.RunOnce && e.State == schemas.ExecutorExited &&
				(e.ExitCode == nil || *e.ExitCode == 0) {
				st.appCores[e.AppID] += e.Cores
				st.appDoneCores[e.AppID] += e.Cores
			}
			continue
		}
		st.used.AddExecutor(e)
		if len(e.Resources) > 0 {
			st.holdAddrs(e.WorkerID, e.Resources, "executor "+e.Key())
		}
		if st.lost(e.WorkerID) {
			continue
		}
		st.appHolds[e.AppID] = true
		if e.State == schemas.ExecutorRunning {
			st.appRunning[e.AppID] = true
		}
		if e.State == schemas.ExecutorLaunching {
			launching++
		}
		if st.draining(e.WorkerID) {
			// Not counted against the app's cores: placeApp replaces it
			// elsewhere, and the drain kills it once the replacement runs.
			continue
		}
		st.appCores[e.AppID] += e.Cores
	}
	st.launchBudget, st.killBudget = math.MaxInt, math.MaxInt
	if o.MaxInFlight > 0 {
		st.launchBudget = max(o.MaxInFlight-launching, 0)
		st.killBudget = max(o.MaxInFlight-killsInFlight(s), 0)
	}
	for _, d := range s.Drivers {
		st.used.AddDriver(d)
		if len(d.Resources) > 0 && d.WorkerID != "" && d.State.Holds() {
			st.holdAddrs(d.WorkerID, d.Resources, "driver "+d.ID)
		}
	}
	return st
}

// killsInFlight counts the executors a kill was sent to that still hold
// resources (not yet reported ended).
func killsInFlight(s *Snapshot) int {
	n := 0
	for target := range s.Killing {
		if key, ok := strings.CutPrefix(target, killTargetExecutor); ok {
			if e := s.Executors[key]; e != nil && e.State.Holds() {
				n++
			}
		}
	}
	return n
}

// holdAddrs counts addresses held on a worker; an address held twice is an
// inconsistency (never planned: Schedule hands out free addresses only).
func (st *pass) holdAddrs(wid string, r schemas.Resources, holder string) {
	if st.usedAddr == nil {
		st.usedAddr = map[string]map[string]map[string]string{}
	}
	byName := st.usedAddr[wid]
	if byName == nil {
		byName = map[string]map[string]string{}
		st.usedAddr[wid] = byName
	}
	for name, addrs := range r {
		m := byName[name]
		if m == nil {
			m = map[string]string{}
			byName[name] = m
		}
		for _, a := range addrs {
			if other, ok := m[a]; ok {
				if other > holder {
					other, holder = holder, other
				}
				st.inconsistent("worker %s: %s address %s held by %s and %s", wid, name, a, other, holder)
			}
			m[a] = holder
		}
	}
}

// lost reports whether a worker is gone (DEAD, DECOMMISSIONED or missing):
// what it held is lost. UNKNOWN is not lost: recovery decides.
func (st *pass) lost(wid string) bool {
	w := st.s.Workers[wid]
	return w == nil || w.State.Gone()
}

func (st *pass) alive(wid string) bool {
	w := st.s.Workers[wid]
	return w != nil && w.State == schemas.WorkerAlive
}

// draining reports whether a worker is ALIVE and being drained.
func (st *pass) draining(wid string) bool {
	w := st.s.Workers[wid]
	return w != nil && w.Draining()
}

func (st *pass) inconsistent(format string, args ...any) {
	st.p.Inconsistencies = append(st.p.Inconsistencies, fmt.Sprintf(format, args...))
}

func (st *pass) sort() {
	slices.SortFunc(st.p.AppUpdates, func(a, b AppUpdate) int { return cmp.Compare(a.AppID, b.AppID) })
	slices.SortFunc(st.p.ExecutorUpdates, func(a, b ExecutorUpdate) int { return cmp.Compare(a.Key, b.Key) })
	slices.SortFunc(st.p.DriverUpdates, func(a, b DriverUpdate) int { return cmp.Compare(a.DriverID, b.DriverID) })
	slices.SortFunc(st.p.WorkerUpdates, func(a, b WorkerUpdate) int { return cmp.Compare(a.WorkerID, b.WorkerID) })
	slices.SortFunc(st.p.Kills, func(a, b KillCmd) int {
		if c := cmp.Compare(a.WorkerID, b.WorkerID); c != 0 {
			return c
		}
		// KillTarget's order, compared without building the strings
		// (a teardown's plan sorts thousands of kills per worker).
		var ab, bb [96]byte
		return bytes.Compare(appendKillTarget(ab[:0], a.Kill), appendKillTarget(bb[:0], b.Kill))
	})
	slices.SortFunc(st.p.Checks, func(a, b LaunchCheck) int { return cmp.Compare(a.WorkerID, b.WorkerID) })
	for _, c := range st.p.Checks {
		slices.Sort(c.Keys)
	}
	slices.Sort(st.p.Inconsistencies)
}
