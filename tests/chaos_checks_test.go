package tests

// Invariants of the chaos tests that are checked over the whole run, not
// at one instant: what the agents obeyed (leadership intervals), every
// process that ever ran for an executor id, and the events stream against
// KV. Each reads something the system under test cannot make up: the
// agents' own log of admitted commands, /proc, the stream.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/agent"
)

// admission is one command an agent instance admitted past its fences:
// its "command admitted" debug line (written under the agent's lock, so
// the lines of one log are in the order the agent obeyed).
type admission struct {
	agent   string // the agent process's log (one agent instance)
	at      time.Time
	epoch   uint64
	command string
}

func (a admission) String() string {
	return fmt.Sprintf("%s admitted %q of epoch %d at %s", filepath.Base(a.agent), a.command, a.epoch, a.at.Format("15:04:05.000000"))
}

// admissions reads every agent instance's log for the commands it admitted.
func (c *Cluster) admissions() []admission {
	c.mu.Lock()
	var logs []string
	for _, p := range c.procs {
		if strings.HasPrefix(p.Name, "agent") {
			logs = append(logs, p.Log)
		}
	}
	c.mu.Unlock()
	var out []admission
	for _, path := range logs {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if !strings.Contains(string(line), agent.CommandAdmitted) {
				continue
			}
			var l struct {
				Message string    `json:"message"`
				Time    time.Time `json:"time"`
				Epoch   uint64    `json:"epoch"`
				Command string    `json:"command"`
			}
			// A line still being written does not decode: skipped.
			if json.Unmarshal(line, &l) != nil || l.Message != agent.CommandAdmitted {
				continue
			}
			out = append(out, admission{agent: path, at: l.Time, epoch: l.Epoch, command: l.Command})
		}
		f.Close()
	}
	return out
}

// epochInterval is the span of one epoch's authority as the agents saw it:
// from the first command of that epoch any agent admitted to the last.
type epochInterval struct {
	epoch       uint64
	first, last admission
	n           int
}

// deliveryLag is how much later than a newer epoch's first command,
// admitted anywhere, a command of an older epoch may still be admitted by
// another agent: a leader SIGKILLed with a command in flight to an agent
// that the loaded machine has not scheduled yet (seen: 70 ms, round 60 of
// a 100-round run at load 15) while the standby, told at once by the bus,
// already commands the others. The design promises per-agent order (the
// fence) and no command sent past its sender's authority, not delivery
// times; a paused leader woken to act does so seconds later.
const deliveryLag = time.Second

// leadershipViolations checks that scheduler epochs never overlap in what
// agents obeyed: each agent instance admits epochs in non-decreasing order,
// and across agents no command of an epoch is admitted more than
// deliveryLag after a command of a newer epoch was admitted anywhere (the
// processes share one clock). It returns the violations, the intervals
// (oldest epoch first) and the largest cross-agent overlap within
// deliveryLag. Pure.
func leadershipViolations(adms []admission) (bad []string, intervals []epochInterval, lag time.Duration) {
	byAgent := map[string][]admission{}
	for _, a := range adms {
		byAgent[a.agent] = append(byAgent[a.agent], a)
	}
	for _, as := range byAgent { // in log order
		for i := 1; i < len(as); i++ {
			if as[i].epoch < as[i-1].epoch {
				bad = append(bad, fmt.Sprintf("%s, after it admitted %q of epoch %d", as[i], as[i-1].command, as[i-1].epoch))
			}
		}
	}
	sorted := append([]admission(nil), adms...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].at.Before(sorted[j].at) })
	var newest *admission
	byEpoch := map[uint64]*epochInterval{}
	for i := range sorted {
		a := sorted[i]
		if newest != nil && a.epoch < newest.epoch && a.at.After(newest.at) {
			if d := a.at.Sub(newest.at); d > deliveryLag {
				bad = append(bad, fmt.Sprintf("%s, %s after %s: two leaders' commands overlap", a, d, *newest))
			} else {
				lag = max(lag, d)
			}
		}
		if newest == nil || a.epoch > newest.epoch {
			newest = &sorted[i]
		}
		iv := byEpoch[a.epoch]
		if iv == nil {
			iv = &epochInterval{epoch: a.epoch, first: a}
			byEpoch[a.epoch] = iv
		}
		iv.last = a
		iv.n++
	}
	for _, iv := range byEpoch {
		intervals = append(intervals, *iv)
	}
	sort.Slice(intervals, func(i, j int) bool { return intervals[i].epoch < intervals[j].epoch })
	return bad, intervals, lag
}

// checkLeadership fails the test if two epochs' commands overlapped at the
// agents, or if they obeyed fewer than minEpochs epochs (the run had
// failovers the check must have seen).
func (h *haCluster) checkLeadership(when string, minEpochs int) {
	h.t.Helper()
	bad, intervals, lag := leadershipViolations(h.admissions())
	if lag > 0 {
		h.t.Logf("%s: an older epoch's command was admitted up to %s after a newer epoch's first command elsewhere (delivery lag, allowed up to %s)", when, lag, deliveryLag)
	}
	if len(bad) > 0 {
		for _, iv := range intervals {
			h.t.Logf("epoch %d: %d commands admitted, %s .. %s", iv.epoch, iv.n,
				iv.first.at.Format("15:04:05.000000"), iv.last.at.Format("15:04:05.000000"))
		}
		if len(bad) > 10 {
			bad = append(bad[:10], fmt.Sprintf("... and %d more", len(bad)-10))
		}
		h.t.Fatalf("%s: commands of an older epoch admitted after a newer epoch's:\n%s", when, strings.Join(bad, "\n"))
	}
	if len(intervals) < minEpochs {
		h.t.Fatalf("%s: agents admitted commands of %d epochs, want at least %d: the check saw too few failovers", when, len(intervals), minEpochs)
	}
}

// execProc is a process found in /proc whose environment names an
// executor of this cluster.
type execProc struct {
	key, worker string
	cores       int
	pid, ppid   int
	start       uint64 // start time in clock ticks since boot (pid reuse)
}

// scanExecutors reads /proc for the processes whose environment names the
// bus URL url and an executor id. A child an executor forked inherits its
// environment: only the process whose parent is not an executor of the
// same id counts.
func scanExecutors(url string) []execProc {
	var all []execProc
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err != nil {
			continue
		}
		env := map[string]string{}
		for _, kv := range strings.Split(string(b), "\x00") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
		if env[schemas.EnvNATSURL] != url || env[schemas.EnvExecutorID] == "" {
			continue
		}
		id, err := strconv.Atoi(env[schemas.EnvExecutorID])
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command name (in parentheses, may hold spaces).
		s := string(st)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 20 || f[0] == "Z" {
			continue // a zombie awaiting its parent: not running
		}
		ppid, _ := strconv.Atoi(f[1])
		start, _ := strconv.ParseUint(f[19], 10, 64)
		c, _ := strconv.Atoi(env[schemas.EnvCores])
		all = append(all, execProc{key: schemas.ExecutorKey(env[schemas.EnvAppID], id), worker: env[schemas.EnvWorkerID],
			cores: c, pid: pid, ppid: ppid, start: start})
	}
	keyOf := map[int]string{}
	for _, p := range all {
		keyOf[p.pid] = p.key
	}
	out := all[:0]
	for _, p := range all {
		if keyOf[p.ppid] != p.key {
			out = append(out, p)
		}
	}
	return out
}

// procTracker samples /proc through a whole run and remembers every
// process that ever ran for each executor id: an id that ran as two
// processes, at once or one after the other, ran twice.
type procTracker struct {
	url  string
	mu   sync.Mutex
	seen map[string]map[[2]uint64]bool // key → {pid, start}
	stop chan struct{}
	done chan struct{}
}

// trackProcesses starts sampling every 100 ms until the test ends.
func (c *Cluster) trackProcesses() *procTracker {
	pt := &procTracker{url: c.URL, seen: map[string]map[[2]uint64]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	pt.sample()
	go func() {
		defer close(pt.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-pt.stop:
				return
			case <-tick.C:
				pt.sample()
			}
		}
	}()
	c.t.Cleanup(pt.close)
	return pt
}

func (pt *procTracker) close() {
	select {
	case <-pt.stop:
	default:
		close(pt.stop)
	}
	<-pt.done
}

func (pt *procTracker) sample() {
	ps := scanExecutors(pt.url)
	pt.mu.Lock()
	defer pt.mu.Unlock()
	for _, p := range ps {
		m := pt.seen[p.key]
		if m == nil {
			m = map[[2]uint64]bool{}
			pt.seen[p.key] = m
		}
		m[[2]uint64{uint64(p.pid), p.start}] = true
	}
}

// ranTwice samples once more and lists the executor ids seen as more than
// one process since the run began, and how many ids were seen.
func (pt *procTracker) ranTwice() (bad []string, ids int) {
	pt.sample()
	pt.mu.Lock()
	defer pt.mu.Unlock()
	for key, m := range pt.seen {
		if len(m) > 1 {
			var ps []string
			for p := range m {
				ps = append(ps, fmt.Sprintf("pid %d (start %d)", p[0], p[1]))
			}
			sort.Strings(ps)
			bad = append(bad, fmt.Sprintf("%s ran as %s", key, strings.Join(ps, ", ")))
		}
	}
	sort.Strings(bad)
	return bad, len(pt.seen)
}

// checkRanOnce fails the test if an executor id ever ran as two processes.
func (h *haCluster) checkRanOnce(when string) {
	h.t.Helper()
	bad, ids := h.tracker.ranTwice()
	if len(bad) > 0 {
		h.t.Fatalf("%s: executors that ran more than once (of %d seen):\n%s", when, ids, strings.Join(bad, "\n"))
	}
}

// eventMismatches replays the events stream and compares each executor's
// and app's last event (by publisher time, then stream order) with its
// state in KV: a record whose last event is missing or says another state
// is a mismatch. It returns the mismatches and how many records it compared.
func eventMismatches(ctx context.Context, h *haCluster, st *bus.Store) ([]string, int, error) {
	last := map[string]bus.StoredEvent{}
	err := bus.ReadEvents(ctx, h.NC(), bus.EventQuery{Since: 24 * time.Hour}, func(e bus.StoredEvent) error {
		if e.Kind != "executor" && e.Kind != "app" {
			return nil
		}
		k := e.Kind + " " + e.ID
		if p, ok := last[k]; !ok || !e.At.Before(p.At) {
			last[k] = e
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	var bad []string
	n := 0
	compare := func(kind, id, state string) {
		n++
		e, ok := last[kind+" "+id]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("%s %s is %s in KV and has no event", kind, id, state))
		case e.State != state:
			bad = append(bad, fmt.Sprintf("%s %s is %s in KV, its last event (seq %d, %s, by %s) says %s: %q",
				kind, id, state, e.Seq, e.At.Format("15:04:05.000"), e.Publisher, e.State, e.Message))
		}
	}
	execs, err := bus.List[schemas.Executor](ctx, st.Executors)
	if err != nil {
		return nil, 0, err
	}
	for _, e := range execs {
		compare("executor", e.Key, string(e.Value.State))
	}
	apps, err := bus.List[schemas.App](ctx, st.Apps)
	if err != nil {
		return nil, 0, err
	}
	for _, a := range apps {
		compare("app", a.Key, string(a.Value.State))
	}
	sort.Strings(bad)
	return bad, n, nil
}

// checkEventsMatchKV fails the test unless, once writes settle, every
// executor's and app's last event states what KV holds.
func (h *haCluster) checkEventsMatchKV(st *bus.Store) {
	h.t.Helper()
	var bad []string
	var n int
	var err error
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		bad, n, err = eventMismatches(ctx, h, st)
		cancel()
		if err == nil && len(bad) == 0 {
			h.t.Logf("events stream matches KV for %d executors and apps", n)
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		h.t.Fatalf("events against KV: %v", err)
	}
	if len(bad) > 20 {
		bad = append(bad[:20], fmt.Sprintf("... and %d more", len(bad)-20))
	}
	h.t.Fatalf("the events stream and KV disagree on %d of %d records:\n%s", len(bad), n, strings.Join(bad, "\n"))
}

// TestLeadershipViolations: the interval check flags an older epoch's
// command admitted after a newer one's, on one agent or across agents, and
// passes epochs that follow each other.
func TestLeadershipViolations(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 17, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ok := []admission{
		{agent: "a", at: at(0), epoch: 5, command: "master changed"},
		{agent: "b", at: at(1), epoch: 5, command: "master changed"},
		{agent: "a", at: at(10), epoch: 5, command: "launch executor x.0"},
		{agent: "a", at: at(20), epoch: 9, command: "master changed"},
		{agent: "b", at: at(21), epoch: 9, command: "kill x.0"},
	}
	if bad, ivs, _ := leadershipViolations(ok); len(bad) != 0 || len(ivs) != 2 || ivs[0].n != 3 || ivs[1].epoch != 9 {
		t.Fatalf("in-order epochs: violations %v, intervals %+v", bad, ivs)
	}
	// Agent c obeys epoch 5 70 ms after agent a obeyed epoch 9: a command
	// in flight from the killed leader, within the delivery lag.
	inFlight := append(append([]admission(nil), ok...), admission{agent: "c", at: at(90), epoch: 5, command: "launch executor x.1"})
	if bad, _, lag := leadershipViolations(inFlight); len(bad) != 0 || lag != 70*time.Millisecond {
		t.Fatalf("an in-flight command 70 ms late: violations %v, lag %s", bad, lag)
	}
	// Agent c obeys epoch 5 2 s after agent a obeyed epoch 9: overlap across agents.
	across := append(append([]admission(nil), ok...), admission{agent: "c", at: at(2020), epoch: 5, command: "launch executor x.1"})
	if bad, _, _ := leadershipViolations(across); len(bad) != 1 {
		t.Fatalf("an older epoch 2 s after a newer one: %d violations %v, want 1 (across agents)", len(bad), bad)
	}
	// Agent b obeys epoch 5 after it obeyed epoch 9 itself: always a violation.
	own := append(append([]admission(nil), ok...), admission{agent: "b", at: at(30), epoch: 5, command: "launch executor x.1"})
	if bad, _, _ := leadershipViolations(own); len(bad) != 1 {
		t.Fatalf("an older epoch after a newer one on one agent: %d violations %v, want 1", len(bad), bad)
	}
	// Out of order in one agent's log even when the clock says otherwise.
	oneAgent := []admission{
		{agent: "a", at: at(5), epoch: 9, command: "master changed"},
		{agent: "a", at: at(4), epoch: 5, command: "launch executor x.0"},
	}
	if bad, _, _ := leadershipViolations(oneAgent); len(bad) != 1 {
		t.Fatalf("one agent's log out of epoch order: %v", bad)
	}
}

// failoverKill is one leader SIGKILL: when, and the epoch killed.
type failoverKill struct {
	at    time.Time
	epoch uint64
}

// failoverPhases reads the events stream and logs, over the kills, where
// a failover's time goes: kill → the standby's REVOKED (the bus reported
// the connection closed) → LEADING (it won the lease) → RECOVERING
// (recovery claimed the epoch) → ALIVE. Each step's time is the
// publisher's clock, all on this machine. A measurement, not a check.
func (h *haCluster) failoverPhases(kills []failoverKill) {
	h.t.Helper()
	type ev struct{ revoked, leading, recovering, alive map[uint64]time.Time }
	e := ev{map[uint64]time.Time{}, map[uint64]time.Time{}, map[uint64]time.Time{}, map[uint64]time.Time{}}
	var leadingEpochs []uint64
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := bus.ReadEvents(ctx, h.NC(), bus.EventQuery{Since: 24 * time.Hour}, func(se bus.StoredEvent) error {
		switch {
		case se.Kind == "leader" && se.State == "REVOKED":
			e.revoked[se.Epoch] = se.At
		case se.Kind == "leader" && se.State == "LEADING":
			e.leading[se.Epoch] = se.At
			leadingEpochs = append(leadingEpochs, se.Epoch)
		case se.Kind == "cluster":
			n, err := strconv.ParseUint(se.ID, 10, 64)
			if err != nil {
				return nil
			}
			if se.State == string(schemas.ClusterRecovering) {
				e.recovering[n] = se.At
			} else if se.State == string(schemas.ClusterAlive) {
				e.alive[n] = se.At
			}
		}
		return nil
	})
	if err != nil {
		h.t.Logf("failover phases: %v", err)
		return
	}
	sort.Slice(leadingEpochs, func(i, j int) bool { return leadingEpochs[i] < leadingEpochs[j] })
	var revoke, lead, claim, recover, total []time.Duration
	for _, k := range kills {
		next := uint64(0)
		for _, ep := range leadingEpochs {
			if ep > k.epoch {
				next = ep
				break
			}
		}
		rv, ok1 := e.revoked[k.epoch]
		ld, ok2 := e.leading[next]
		rc, ok3 := e.recovering[next]
		al, ok4 := e.alive[next]
		if !ok1 || !ok2 || !ok3 || !ok4 {
			continue // a phase's event missing (revoked by expiry, lost): not counted
		}
		revoke = append(revoke, rv.Sub(k.at))
		lead = append(lead, ld.Sub(rv))
		claim = append(claim, rc.Sub(ld))
		recover = append(recover, al.Sub(rc))
		total = append(total, al.Sub(k.at))
	}
	h.t.Logf("failover phases over %d of %d kills (events' clocks):\n  kill → REVOKED (bus reports the close, standby deletes the lease): %s\n  REVOKED → LEADING (campaign): %s\n  LEADING → RECOVERING (recovery claims the epoch): %s\n  RECOVERING → ALIVE (recovery): %s\n  kill → ALIVE: %s",
		len(total), len(kills), durationSummary(revoke), durationSummary(lead), durationSummary(claim), durationSummary(recover), durationSummary(total))
}
