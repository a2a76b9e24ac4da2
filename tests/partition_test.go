package tests

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/tests/netns"
)

// partitionLong runs the scenarios for the long durations.
var partitionLong = flag.Bool("partition.long", false, "partition scenarios: minority and stopped nodes for 60s instead of 20s, single cuts for 20s instead of 6s")

// partitionOnly runs only the scenarios whose name contains it.
var partitionOnly = flag.String("partition.only", "", "partition scenarios: run only those whose name contains this")

// Timings of the partition cluster (the services' flags).
const (
	pWorkerTimeout   = 2 * time.Second
	pHeartbeat       = 200 * time.Millisecond
	pRecoveryTimeout = 2 * time.Second
	// a1 and a2 (the agents of the schedulers' nodes, one of them in every
	// minority) run at most once: --stop-after-disconnect 1s with a 300ms
	// kill grace, below the worker timeout. a3 keeps the default (at least
	// once).
	pStopAfterBound = time.Second
	pKillGrace      = 300 * time.Millisecond
)

var pStopAfter = map[string]bool{"a1": true, "a2": true}

// pcluster is a Stoker cluster spread over network namespaces: three bus
// nodes n1..n3; scheduler-1 (started first, so it leads) on n1 in s1 and
// scheduler-2 on n2 in s2; two instances of each other service, one on
// n2 (svcA) and one on n3 (svcB); agents a1 on n1, a2 on n2, a3 on n3. The
// test process watches through the observer link, connected to n3; it is
// also the app's driver (client mode), so the driver is alive on the
// majority side in every scenario.
type pcluster struct {
	*Cluster
	t       *testing.T
	net     *netns.Net
	nodes   map[string]*netns.Node
	busArgs map[string][]string
	bus     map[string]*Proc
	agents  map[string]*Proc
	url     map[string]string
	app     string

	mu      sync.Mutex
	stopped bool
	// What the watcher saw: per worker, when it went UNKNOWN (zero if not)
	// and the longest UNKNOWN stretch; the epochs seen; faults found.
	unknownSince map[string]time.Time
	unknownMax   map[string]time.Duration
	dead         map[string]int // DEAD samples per worker
	epochs       map[uint64]bool
	appEnded     string

	st        *bus.Store    // bound once in newPCluster; safe off the test goroutine
	watchDone chan struct{} // closed when watch returns
}

func newPCluster(t *testing.T) *pcluster {
	t.Helper()
	if testing.Short() {
		t.Skip("partition scenarios: skipped in -short mode")
	}
	n := netns.New(t)
	c := NewCluster(t, ClusterOptions{NoBus: true, Insecure: true, WorkerTimeout: pWorkerTimeout, HeartbeatInterval: pHeartbeat})
	p := &pcluster{Cluster: c, t: t, net: n, nodes: map[string]*netns.Node{}, busArgs: map[string][]string{},
		bus: map[string]*Proc{}, agents: map[string]*Proc{}, url: map[string]string{},
		unknownSince: map[string]time.Time{}, unknownMax: map[string]time.Duration{}, dead: map[string]int{}, epochs: map[uint64]bool{}}
	for _, name := range []string{"n1", "n2", "n3", "s1", "s2", "svcA", "svcB", "a1", "a2", "a3"} {
		p.nodes[name] = n.Node(name)
	}
	var routes []string
	for _, b := range []string{"n1", "n2", "n3"} {
		ip := p.nodes[b].IP
		p.url[b] = "nats://" + ip + ":4222"
		routes = append(routes, "nats://"+ip+":6222")
	}
	for _, b := range []string{"n1", "n2", "n3"} {
		p.busArgs[b] = []string{"bus", "--server-name", b, "--host", p.nodes[b].IP, "--port", "4222",
			"--data", filepath.Join(c.Dir, b), "--cluster-name", "stoker-part", "--cluster-port", "6222",
			"--routes", strings.Join(routes, ","), "--replicas", "3", "--insecure"}
		p.startBus(b)
	}
	// The test process (observer, and the app's driver) stays on n3, which
	// every scenario keeps on the majority side.
	c.URL = p.url["n3"]
	c.waitBusNodes(p.nodes["n1"].IP+":4222", p.nodes["n2"].IP+":4222", p.nodes["n3"].IP+":4222")
	hb, wt := pHeartbeat.String(), pWorkerTimeout.String()
	p.start("s1", "scheduler-1", "scheduler", "--nats", p.url["n1"], "--id", "scheduler-1")
	for i, side := range []string{"svcA", "svcB"} {
		u := p.url[[]string{"n2", "n3"}[i]]
		id := strconv.Itoa(i + 1)
		p.start(side, "registration-"+id, "registration", "--nats", u, "--id", "registration-"+id, "--heartbeat-interval", hb, "--worker-timeout", wt)
		p.start(side, "heartbeat-"+id, "heartbeat", "--nats", u, "--id", "heartbeat-"+id, "--heartbeat-interval", hb, "--worker-timeout", wt)
		p.start(side, "recovery-"+id, "recovery", "--nats", u, "--id", "recovery-"+id, "--recovery-timeout", pRecoveryTimeout.String())
	}
	p.st = p.Store()
	c.Eventually(90*time.Second, "scheduler-1 leading, cluster ALIVE", func() bool {
		cl := p.clusterState()
		return cl != nil && cl.State == schemas.ClusterAlive && cl.Leader == "scheduler-1"
	})
	p.start("s2", "scheduler-2", "scheduler", "--nats", p.url["n2"], "--id", "scheduler-2")
	for i, a := range []string{"a1", "a2", "a3"} {
		u := p.url[[]string{"n1", "n2", "n3"}[i]]
		args := []string{"agent", "--nats", u, "--id", a, "--cores", "2", "--memory", "1g",
			"--work-dir", filepath.Join(c.Dir, "work", a), "--heartbeat-interval", hb}
		if pStopAfter[a] {
			args = append(args, "--stop-after-disconnect", pStopAfterBound.String(), "--kill-grace", pKillGrace.String())
		}
		p.agents[a] = p.start(a, "agent-"+a, args...)
	}
	c.Eventually(60*time.Second, "three workers ALIVE", func() bool { return p.aliveWorkers() == 3 })
	// One executor per worker (spread out): a cut-off agent always holds one.
	p.app = c.registerApp("partition", 1, 3, "/bin/sleep", "3600")
	c.Eventually(60*time.Second, "three executors RUNNING with processes", func() bool {
		return len(p.runningInKV()) == 3 && len(p.realExecutors()) == 3
	})
	// The watcher reads through the store bound above, on the test's
	// goroutine: binding can fail the test, which only the test's own
	// goroutine may do (a watcher that bound its own failed the test after
	// it had ended, a panic in CI). Cleanup waits for it to return.
	p.watchDone = make(chan struct{})
	go p.watch()
	t.Cleanup(func() {
		p.mu.Lock()
		p.stopped = true
		p.mu.Unlock()
		<-p.watchDone
	})
	return p
}

func (p *pcluster) start(node, name string, args ...string) *Proc {
	p.t.Helper()
	return p.StartWrapped(name, p.nodes[node].Wrap(), args...)
}

func (p *pcluster) startBus(b string) {
	p.t.Helper()
	p.bus[b] = p.start(b, "bus-"+b, p.busArgs[b]...)
}

func (p *pcluster) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Second)
}

func (p *pcluster) clusterState() *schemas.Cluster {
	ctx, cancel := p.ctx()
	defer cancel()
	cl, _, err := bus.Get[schemas.Cluster](ctx, p.st.Cluster, bus.KeyClusterState)
	if err != nil {
		return nil
	}
	return cl
}

func (p *pcluster) workers() map[string]*schemas.Worker {
	ctx, cancel := p.ctx()
	defer cancel()
	ws, err := bus.List[schemas.Worker](ctx, p.st.Workers)
	if err != nil {
		return nil
	}
	return bus.Map(ws)
}

func (p *pcluster) aliveWorkers() int {
	n := 0
	for _, w := range p.workers() {
		if w.State == schemas.WorkerAlive {
			n++
		}
	}
	return n
}

func (p *pcluster) appState() schemas.AppState {
	ctx, cancel := p.ctx()
	defer cancel()
	a, _, err := bus.Get[schemas.App](ctx, p.st.Apps, p.app)
	if err != nil {
		return ""
	}
	return a.State
}

// runningInKV is the app's executors holding resources in KV, by key.
func (p *pcluster) runningInKV() map[string]*schemas.Executor {
	ctx, cancel := p.ctx()
	defer cancel()
	xs, err := bus.List[schemas.Executor](ctx, p.st.Executors)
	if err != nil {
		return nil
	}
	out := map[string]*schemas.Executor{}
	for _, x := range xs {
		if x.Value.AppID == p.app && x.Value.State.Holds() {
			out[x.Key] = x.Value
		}
	}
	return out
}

// realProc is one executor process found in /proc.
type realProc struct {
	pid    int
	worker string
}

// realExecutors is every live process of the app, by executor key (more
// than one per key is a duplicate).
func (p *pcluster) realExecutors() map[string][]realProc {
	out := map[string][]realProc{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err != nil || !bytes.Contains(env, []byte(schemas.EnvAppID+"="+p.app)) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat")); err == nil {
			if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:])); len(f) > 0 && f[0] == "Z" {
				continue // a zombie runs nothing
			}
		}
		vars := map[string]string{}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if k, v, ok := strings.Cut(string(kv), "="); ok {
				vars[k] = v
			}
		}
		id, err := strconv.Atoi(vars[schemas.EnvExecutorID])
		if err != nil {
			continue
		}
		key := schemas.ExecutorKey(p.app, id)
		out[key] = append(out[key], realProc{pid: pid, worker: vars[schemas.EnvWorkerID]})
	}
	return out
}

// watch samples KV every 200ms until the test ends: how long workers stay
// UNKNOWN, DEAD workers, the epochs, and whether the app ever ended.
func (p *pcluster) watch() {
	defer close(p.watchDone)
	for {
		p.mu.Lock()
		stopped := p.stopped
		p.mu.Unlock()
		if stopped {
			return
		}
		ws := p.workers()
		cl := p.clusterState()
		as := p.appState()
		now := time.Now()
		p.mu.Lock()
		for id, w := range ws {
			since, was := p.unknownSince[id]
			switch {
			case w.State == schemas.WorkerUnknown && !was:
				p.unknownSince[id] = now
			case w.State != schemas.WorkerUnknown && was:
				delete(p.unknownSince, id)
				p.unknownMax[id] = max(p.unknownMax[id], now.Sub(since))
			}
			if w.State == schemas.WorkerDead {
				p.dead[id]++
			}
		}
		if cl != nil {
			p.epochs[cl.Epoch] = true
		}
		if as.Terminal() && p.appEnded == "" {
			p.appEnded = string(as)
		}
		p.mu.Unlock()
		time.Sleep(200 * time.Millisecond)
	}
}

// resetWatch forgets what the watcher saw (between scenarios).
func (p *pcluster) resetWatch() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unknownMax, p.dead, p.epochs = map[string]time.Duration{}, map[string]int{}, map[uint64]bool{}
	for id := range p.unknownSince {
		p.unknownSince[id] = time.Now()
	}
}

var epochInLog = regexp.MustCompile(`"epoch":(\d+)`)

// agentEpoch is the highest epoch agent a has logged learning (a master
// change or a registration: the only ways an agent's epoch rises).
func (p *pcluster) agentEpoch(a string) uint64 {
	b, _ := os.ReadFile(p.agents[a].Log)
	var hi uint64
	for _, line := range bytes.Split(b, []byte("\n")) {
		if !bytes.Contains(line, []byte(`"master changed"`)) && !bytes.Contains(line, []byte(`"registered with the cluster"`)) {
			continue
		}
		if m := epochInLog.FindSubmatch(line); m != nil {
			if e, _ := strconv.ParseUint(string(m[1]), 10, 64); e > hi {
				hi = e
			}
		}
	}
	return hi
}

// settled is the state every scenario must come back to after the heal:
// the cluster ALIVE, every worker ALIVE, every agent on the current epoch,
// the app's three executors RUNNING in KV, each with exactly one process,
// on the worker KV names, with the pid KV names.
func (p *pcluster) settled() (bool, string) {
	cl := p.clusterState()
	if cl == nil || cl.State != schemas.ClusterAlive {
		return false, fmt.Sprintf("cluster %+v", cl)
	}
	for id, w := range p.workers() {
		if w.State != schemas.WorkerAlive {
			return false, fmt.Sprintf("worker %s %s", id, w.State)
		}
	}
	for _, a := range []string{"a1", "a2", "a3"} {
		if e := p.agentEpoch(a); e != cl.Epoch {
			return false, fmt.Sprintf("agent %s on epoch %d, cluster on %d", a, e, cl.Epoch)
		}
	}
	kv, real := p.runningInKV(), p.realExecutors()
	if len(kv) != 3 {
		return false, fmt.Sprintf("%d executors hold resources in KV, want 3", len(kv))
	}
	for key, procs := range real {
		x := kv[key]
		switch {
		case len(procs) > 1:
			return false, fmt.Sprintf("executor %s runs %d times: %v", key, len(procs), procs)
		case x == nil:
			return false, fmt.Sprintf("executor %s runs (pid %d on %s) but KV has it ended", key, procs[0].pid, procs[0].worker)
		case x.WorkerID != procs[0].worker || (x.PID != 0 && x.PID != procs[0].pid):
			return false, fmt.Sprintf("executor %s: KV says %s pid %d, the process is %s pid %d", key, x.WorkerID, x.PID, procs[0].worker, procs[0].pid)
		}
	}
	for key, x := range kv {
		if len(real[key]) == 0 {
			return false, fmt.Sprintf("executor %s %s in KV without a process (on %s, epoch %d, created %s, updated %s, %q)",
				key, x.State, x.WorkerID, x.Epoch, x.CreatedAt.Format(time.StampMilli), x.UpdatedAt.Format(time.StampMilli), x.Message)
		}
	}
	return true, ""
}

// scenario runs one fault for d, heals, waits until settled and checks the
// invariants of issue 16. faulted names the agents the fault cut off (they
// may go DEAD); leaderHealthy says the leader was not touched (its epoch
// must stay).
func (p *pcluster) scenario(name string, d time.Duration, faulted []string, leaderHealthy bool, fault, heal func()) {
	p.t.Run(name, func(t *testing.T) {
		if !strings.Contains(name, *partitionOnly) {
			t.Skipf("not in -partition.only %q", *partitionOnly)
		}
		if dir := os.Getenv("STOKER_PARTITION_LOGS"); dir != "" {
			t.Cleanup(func() { p.keepLogs(t, dir) })
		}
		before := p.steady(t)
		p.resetWatch()
		t.Logf("%s for %s (epoch %d, leader %s)", name, d, before.Epoch, before.Leader)
		// The executors of the agents this fault cuts off, by pid: an agent
		// with --stop-after-disconnect must have killed its own before the
		// heal (at most once); one without must still run it (at least once).
		orig := map[int]string{}
		for _, procs := range p.realExecutors() {
			for _, pr := range procs {
				if contains(strings.Join(faulted, ","), pr.worker) {
					orig[pr.pid] = pr.worker
				}
			}
		}
		start := time.Now()
		fault()
		gone := map[int]time.Duration{}
		if strings.HasPrefix(name, "minority") && len(orig) == 0 {
			t.Errorf("the minority's agent %v holds no executor: nothing shows whether it stops its work", faulted)
		}
		for time.Since(start) < d {
			time.Sleep(100 * time.Millisecond)
			for pid := range orig {
				if _, ok := gone[pid]; !ok && !pidAlive(pid) {
					gone[pid] = time.Since(start)
				}
			}
		}
		for pid, w := range orig {
			_, ended := gone[pid]
			switch {
			case pStopAfter[w] && !ended:
				t.Errorf("agent %s (--stop-after-disconnect %s) still runs executor pid %d %s after the fault began: it runs twice", w, pStopAfterBound, pid, d)
			case !pStopAfter[w] && ended:
				t.Errorf("agent %s (at least once) lost executor pid %d %s after the fault began", w, pid, gone[pid].Round(100*time.Millisecond))
			case ended:
				t.Logf("agent %s killed its executor pid %d %s after the fault began (bound %s + kill grace %s)", w, pid, gone[pid].Round(100*time.Millisecond), pStopAfterBound, pKillGrace)
			}
		}
		heal()
		healed := time.Now()
		var why string
		deadline := time.Now().Add(60 * time.Second)
		for {
			ok, w := p.settled()
			if ok {
				break
			}
			why = w
			if time.Now().After(deadline) {
				t.Fatalf("%s: not settled 60s after the heal: %s", name, why)
			}
			time.Sleep(250 * time.Millisecond)
		}
		after := p.clusterState()
		time.Sleep(time.Second) // one more look for the watcher
		p.mu.Lock()
		defer p.mu.Unlock()
		t.Logf("%s: settled %s after the heal (%s in all); epochs seen %v; longest UNKNOWN %v; DEAD samples %v",
			name, time.Since(healed).Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond),
			keys(p.epochs), p.unknownMax, p.dead)
		if p.appEnded != "" {
			t.Errorf("the live app ended %s", p.appEnded)
		}
		// A worker is UNKNOWN from its marking to the end of the apply: at
		// most the marking, asking and applying phases (one recovery timeout
		// each); one that did not answer is then the heartbeat service's,
		// judged on its next beat or after the worker timeout.
		unknownBound := 3*pRecoveryTimeout + 2*time.Second
		for id, dur := range p.unknownMax {
			if dur > unknownBound {
				t.Errorf("worker %s stayed UNKNOWN %s (bound: 3 recovery timeouts + 2s = %s)", id, dur, unknownBound)
			}
		}
		for id, n := range p.dead {
			if !contains(strings.Join(faulted, ","), id) {
				t.Errorf("worker %s, never cut off, was DEAD in %d samples", id, n)
			}
		}
		if leaderHealthy && (after.Epoch != before.Epoch || len(p.epochs) != 1) {
			t.Errorf("a healthy leader was deposed: epoch %d → %d, epochs seen %v", before.Epoch, after.Epoch, keys(p.epochs))
		}
		if !leaderHealthy && len(p.epochs) > 2 && !strings.HasPrefix(name, "two NATS nodes") {
			// Issue 16 item 9: after a heal JetStream stalls for seconds
			// while streams elect leaders; the new leader rides through it
			// (renewals beside the beats, retried while its 10 s lease
			// stands) instead of stepping down and costing another epoch.
			// With no quorum for longer than the lease (two nodes stopped),
			// the lease may have expired: another epoch is right there.
			t.Errorf("more than one new epoch for one lost leader (heal churn, issue 16 item 9): epochs seen %v", keys(p.epochs))
		}
	})
}

// steadyFor is how long the cluster must keep one leader and epoch, ALIVE,
// before a fault: one lease TTL, so a scenario starts from a quiet cluster
// and a new epoch during it is its fault's doing.
const steadyFor = 3 * time.Second

// steady waits until the cluster record reads ALIVE with the same epoch
// for steadyFor, and returns it. An epoch that changed meanwhile (the
// previous heal's churn: JetStream answers 5xx for seconds after a heal,
// issue 16 item 9) is logged; the record unreadable or never steady for a
// minute fails the test. (Read at once, the record was nil
// once right after a heal, and the scenario dereferenced it.)
func (p *pcluster) steady(t *testing.T) *schemas.Cluster {
	t.Helper()
	var first, cur *schemas.Cluster
	var since time.Time
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		cl := p.clusterState()
		switch {
		case cl == nil || cl.State != schemas.ClusterAlive:
			cur = nil
		case cur == nil || cl.Epoch != cur.Epoch || cl.Leader != cur.Leader:
			cur, since = cl, time.Now()
			if first == nil {
				first = cl
			}
		case time.Since(since) >= steadyFor:
			if cur.Epoch != first.Epoch {
				t.Logf("the epoch changed from %d to %d after the previous scenario settled (heal churn, issue 16 item 9)", first.Epoch, cur.Epoch)
			}
			return cur
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster did not keep one leader, ALIVE, for %s within a minute (last read: %+v)", steadyFor, cl)
		}
	}
}

// keepLogs copies every process log into dir/<test name> when t failed.
func (p *pcluster) keepLogs(t *testing.T, dir string) {
	if !t.Failed() {
		return
	}
	out := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	_ = os.MkdirAll(out, 0o755)
	logs, _ := filepath.Glob(filepath.Join(p.Dir, "*.log"))
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil {
			_ = os.WriteFile(filepath.Join(out, filepath.Base(l)), b, 0o644)
		}
	}
	t.Logf("logs kept in %s", out)
}

func keys[V any](m map[uint64]V) []uint64 {
	var out []uint64
	for k := range m {
		out = append(out, k)
	}
	return out
}

// durations: (single cut, minority/stopped nodes).
func partitionDurations() (time.Duration, time.Duration) {
	if *partitionLong {
		return 20 * time.Second, 60 * time.Second
	}
	return 6 * time.Second, 20 * time.Second
}

// TestPartition_Scenarios is issue 16's must-show: each scenario on one
// cluster spread over network namespaces, each checked after its heal.
func TestPartition_Scenarios(t *testing.T) {
	p := newPCluster(t)
	short, long := partitionDurations()
	n := p.nodes

	// A minority: a NATS node, the leader and an agent on one side. First,
	// while every agent holds one executor: the minority's agent (a1, at
	// most once) must stop its own, although its NATS server answers it.
	p.scenario("minority (a NATS node, the leader and an agent)", long, []string{p.agentOf(p.leaderBus())}, false,
		func() {
			minority := []*netns.Node{n[p.leaderBus()], n[p.leaderNode()], n[p.agentOf(p.leaderBus())]}
			var majority []*netns.Node
			for name, nd := range n {
				if !contains(" "+p.leaderBus()+" "+p.leaderNode()+" "+p.agentOf(p.leaderBus())+" ", " "+name+" ") {
					majority = append(majority, nd)
				}
			}
			p.net.Partition(minority, majority)
		}, func() { p.net.Heal() })

	// An agent alone: it goes silent, is judged DEAD, comes back and
	// re-registers; the leader is untouched.
	p.scenario("agent alone cut off", short, []string{"a3"}, true,
		func() { p.net.Cut(n["a3"]) }, func() { p.net.Heal() })

	// One-way loss: what the agent a2 sends is dropped, what it receives
	// arrives (commands reach it, its heartbeats and answers do not).
	p.scenario("one-way loss", short, []string{"a2"}, true,
		func() { p.net.DropOut(n["a2"]) }, func() { p.net.Heal() })

	// The leader alone: scheduler-2 takes over once; nobody else moves.
	p.scenario("leader alone cut off", short, nil, false,
		func() { p.net.Cut(n[p.leaderNode()]) }, func() { p.net.Heal() })

	// Two of the three NATS nodes stopped (the bus has no quorum), then
	// started again on their data; n3, the driver's, stays.
	p.scenario("two NATS nodes stopped", long, []string{"a1", "a2", "a3"}, false,
		func() {
			for _, b := range []string{"n1", "n2"} {
				p.bus[b].Signal(syscall.SIGTERM)
				_ = p.bus[b].Wait(10 * time.Second)
			}
		}, func() {
			for _, b := range []string{"n1", "n2"} {
				p.startBus(b)
			}
		})
}

// leaderNode is the namespace of the scheduler that leads now.
func (p *pcluster) leaderNode() string {
	if cl := p.clusterState(); cl != nil && cl.Leader == "scheduler-2" {
		return "s2"
	}
	return "s1"
}

// leaderBus is the bus node the leading scheduler is connected to (each
// scheduler has one URL: scheduler-1 n1, scheduler-2 n2).
func (p *pcluster) leaderBus() string {
	if p.leaderNode() == "s1" {
		return "n1"
	}
	return "n2"
}

// agentOf is the agent connected to bus node b.
func (p *pcluster) agentOf(b string) string { return "a" + strings.TrimPrefix(b, "n") }

// pidAlive says pid runs (a zombie does not).
func pidAlive(pid int) bool {
	st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}
