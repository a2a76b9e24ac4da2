package bench

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
	"github.com/stoker/stoker/services/agent"
)

// refWindow is how long each reference rate is measured.
const refWindow = 2 * time.Second

// refConcurrency requests in flight for the reference rates.
const refConcurrency = 64

// reference measures the bus itself: request/reply between two clients
// and synchronous KV puts, refConcurrency in flight, over refWindow.
func reference(ctx context.Context, c *Cluster, res *Result) {
	nc := c.Admin
	subj := "stoker.bench.echo." + schemas.NewInstance()
	sub, err := nc.Subscribe(subj, func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		res.fail("reference: subscribe: %v", err)
		return
	}
	defer sub.Unsubscribe()
	// Both ends on one connection: every request still goes through the server.
	req := nc
	_ = nc.Flush()
	payload := make([]byte, 200)
	rate := hammer(ctx, func() error {
		_, err := req.Request(subj, payload, 5*time.Second)
		return err
	})
	res.add(Row{Scenario: "reference", Figure: "request/reply", Value: rate, Unit: "/s", Note: fmt.Sprintf("%d in flight, 200 B", refConcurrency)})

	js, err := jetstream.New(nc)
	if err != nil {
		res.fail("reference: %v", err)
		return
	}
	bucket := "stoker-bench-" + schemas.NewInstance()[:8]
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1})
	if err != nil {
		res.add(Row{Scenario: "reference", Figure: "KV put", Note: "not measured: " + err.Error()})
		return
	}
	defer js.DeleteKeyValue(context.WithoutCancel(ctx), bucket)
	var n atomic.Int64
	rate = hammer(ctx, func() error {
		_, err := kv.Put(ctx, "k"+strconv.FormatInt(n.Add(1)%100000, 10), payload)
		return err
	})
	res.add(Row{Scenario: "reference", Figure: "KV put", Value: rate, Unit: "/s", Note: fmt.Sprintf("%d in flight, synchronous, file store", refConcurrency)})
}

// hammer runs op from refConcurrency goroutines for refWindow and returns ops/s.
func hammer(ctx context.Context, op func() error) float64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(refWindow)
	start := time.Now()
	for range refConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if op() == nil {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}

// appReq asks for n executors of 1 core and 1 MB each.
func appReq(name string, n int) schemas.RegisterApp {
	return schemas.RegisterApp{Name: name, MaxCores: n,
		Executor: schemas.ExecutorSpec{Command: []string{"sleep", "3600"}, Cores: 1, MemoryMB: 1}}
}

// fleet starts n simulated agents with cores each.
func startFleet(ctx context.Context, c *Cluster, prefix string, n, cores int) (*agent.Fleet, time.Duration, error) {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%05d", prefix, i+1)
	}
	cfg := c.Agent
	cfg.Cores, cfg.MemoryMB, cfg.Host = cores, int64(cores)*64, "bench"
	cfg.Launcher = &agent.SimLauncher{}
	cfg.Log = c.Log
	start := time.Now()
	f, err := agent.StartFleet(ctx, agent.FleetConfig{IDs: ids, Connect: c.ConnectAgent, Agent: cfg, Parallel: 32})
	if err != nil {
		return nil, 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Duration(n)*100*time.Millisecond+60*time.Second)
	defer cancel()
	if err := f.WaitRegistered(wctx); err != nil {
		f.Stop()
		return nil, 0, err
	}
	return f, time.Since(start), nil
}

// waitFor waits on ch up to d.
func waitFor(ctx context.Context, ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// placementTimeout bounds a wait for e executors: never a measurement, a hang guard.
func placementTimeout(e int) time.Duration {
	return 60*time.Second + time.Duration(e)*2*time.Millisecond
}

// fleetScenarios run on one fleet of simulated agents: idle latency,
// placements, steady resources, failover, dead workers.
func fleetScenarios(ctx context.Context, c *Cluster, o Options, res *Result, want func(string) bool) {
	tr, err := newTracker(ctx, c.Admin)
	if err != nil {
		res.fail("executors watch: %v", err)
		return
	}
	defer tr.stop()
	// Room for every executor twice over, so the replacements of dead
	// workers' executors fit on the living.
	per := max(2, int(math.Ceil(2*float64(o.Executors)/float64(o.Agents))))
	f, took, err := startFleet(ctx, c, "sim", o.Agents, per)
	if err != nil {
		res.fail("simulated agents: %v", err)
		return
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
		defer cancel()
		_ = f.Shutdown(sctx)
	}()
	res.add(Row{Scenario: "agents", Figure: "agents started and registered", Value: ms(took), Unit: "ms",
		Note: fmt.Sprintf("%d agents, %d cores each, each its own connection and identity", o.Agents, per)})

	if want("latency") {
		idleLatency(ctx, c, o, tr, res)
	}
	// Resources, failover and dead workers are measured with the
	// executors running: placing them is their setup (and is reported).
	if !want("placements") && !want("resources") && !want("failover") && !want("dead") {
		return
	}
	apps, ok := placements(ctx, c, o, tr, f, res)
	defer func() {
		// Every app ends at once: the kills of all their executors. The
		// agents go once those are done, not while the kills are in
		// flight (each then logged a kill nobody answered).
		procs, names := processes(c)
		cpu0, msgs0, heap0 := cpuTimes(procs), busMsgs(c), heapAllocs()
		sched0 := schedulerStatus(ctx, c)
		retries0, start := reportRetries(f), time.Now()
		for _, a := range apps {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_ = a.Close(cctx, schemas.AppFinished)
			cancel()
		}
		ended := waitFor(ctx, tr.wait("", 0), placementTimeout(o.Executors))
		if ok && ended {
			res.add(Row{Scenario: "placements", Figure: "apps ended → no executor RUNNING", Value: ms(time.Since(start)), Unit: "ms",
				Note: fmt.Sprintf("%d apps ended at once, their executors killed; %d state report retries meanwhile", len(apps), reportRetries(f)-retries0)})
			cpuRows(res, "CPU per kill", procs, names, cpu0, o.Executors, time.Since(start))
			allocRow(res, c, "heap allocated per kill", heap0, o.Executors)
			msgsRow(res, c, "bus messages per kill", msgs0, o.Executors)
			passesRow(ctx, res, c, "scheduler passes while killing", sched0)
		}
	}()
	if !ok {
		return
	}
	if want("resources") {
		steady(ctx, c, o, res)
	}
	if want("failover") && c.StartScheduler != nil && c.FailScheduler != nil {
		failover(ctx, c, o, tr, f, apps, res)
	}
	if want("dead") {
		deadWorkers(ctx, c, o, tr, f, apps, res)
	}
}

// idlePause is how long the latency scenario lets the cluster rest
// between runs: past the scheduler's debounce after its kills (it gathers
// changes for 5 ms after applying a plan, and plans at once when idle).
const idlePause = 50 * time.Millisecond

// idleLatency times submit → all 4 RUNNING (in KV) on the idle cluster.
func idleLatency(ctx context.Context, c *Cluster, o Options, tr *tracker, res *Result) {
	runs := max(o.LatencyRuns, 1)
	var samples []float64
	for i := range runs {
		start := time.Now()
		app, err := sdk.RegisterApp(ctx, c.Admin, appReq(fmt.Sprintf("latency-%d", i), 4))
		if err != nil {
			res.fail("latency: register: %v", err)
			return
		}
		ok := waitFor(ctx, tr.wait(app.ID, 4), 30*time.Second)
		d := time.Since(start)
		running, _, created := tr.counts(app.ID)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = app.Close(cctx, schemas.AppFinished)
		cancel()
		if !ok || created != 4 {
			res.fail("latency: app %s: %d RUNNING, %d executors created, want 4 and 4", app.ID, running, created)
			return
		}
		samples = append(samples, ms(d))
		// Let the kills settle so every run starts on an idle cluster: no
		// executor RUNNING, and the scheduler's pass after its kills done.
		waitFor(ctx, tr.wait(app.ID, 0), 10*time.Second)
		time.Sleep(idlePause)
	}
	res.add(dist(Row{Scenario: "latency", Figure: "submit → 4 executors RUNNING (p50)", Unit: "ms",
		Note: "idle cluster; goal p99 ≤ 10 ms"}, samples))
}

// placements submits o.Apps apps asking for o.Executors executors in all,
// at once, and times it until every one is RUNNING in KV; then checks the
// counts against KV and against what the agents run.
func placements(ctx context.Context, c *Cluster, o Options, tr *tracker, f *agent.Fleet, res *Result) ([]*sdk.App, bool) {
	n := max(o.Apps, 1)
	counts := make([]int, n)
	for i := range counts {
		counts[i] = o.Executors / n
		if i < o.Executors%n {
			counts[i]++
		}
	}
	_, base, _ := tr.counts("")
	all := tr.wait("", base+o.Executors)
	retries0, dropped0 := reportRetries(f), bus.EventsDroppedTotal()
	apps := make([]*sdk.App, n)
	errs := make([]error, n)
	procs, names := processes(c)
	cpu0, msgs0, heap0 := cpuTimes(procs), busMsgs(c), heapAllocs()
	sched0 := schedulerStatus(ctx, c)
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range apps {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			apps[i], errs[i] = sdk.RegisterApp(ctx, c.Admin, appReq(fmt.Sprintf("bench-%d", i), counts[i]))
		}()
	}
	wg.Wait()
	submitted := time.Since(start)
	var live []*sdk.App
	for i, err := range errs {
		if err != nil {
			res.fail("placements: register app %d: %v", i, err)
		} else {
			live = append(live, apps[i])
		}
	}
	if len(live) != n {
		return live, false
	}
	ok := waitFor(ctx, all, placementTimeout(o.Executors))
	d := time.Since(start)
	if !ok {
		_, total, _ := tr.counts("")
		want := map[string]int{}
		for i, a := range apps {
			want[a.ID] = counts[i]
		}
		res.fail("placements: %d of %d executors RUNNING after %s (lost or late; %s)", total-base, o.Executors,
			d.Round(time.Millisecond), tr.shortfall(want))
		return live, false
	}
	res.add(Row{Scenario: "placements", Figure: "placements/s end to end", Value: float64(o.Executors) / d.Seconds(), Unit: "/s",
		Note: fmt.Sprintf("%d executors, %d apps, %d agents, all RUNNING in KV in %s (submissions took %s)",
			o.Executors, n, o.Agents, d.Round(time.Millisecond), submitted.Round(time.Millisecond))})
	// Where the CPU went, per process: with --processes, the bus and each
	// service apart from the simulated agents (which, on a real cluster,
	// run on their own machines).
	cpuRows(res, "CPU per placement", procs, names, cpu0, o.Executors, d)
	allocRow(res, c, "heap allocated per placement", heap0, o.Executors)
	msgsRow(res, c, "bus messages per placement", msgs0, o.Executors)
	passesRow(ctx, res, c, "scheduler passes while placing", sched0)
	lastCreate, lagP50, lagMax, _ := tr.stages(start)
	res.add(Row{Scenario: "placements", Figure: "last record created", Value: ms(lastCreate), Unit: "ms",
		Note: fmt.Sprintf("after submission; a record's creation → RUNNING (launch and report): p50 %s, max %s",
			lagP50.Round(time.Millisecond), lagMax.Round(time.Millisecond))})
	// Settle, then count: nothing lost, nothing doubled, the asked numbers.
	time.Sleep(time.Second)
	extra := 0
	for _, a := range live {
		_, _, created := tr.counts(a.ID)
		extra += created
	}
	res.add(Row{Scenario: "placements", Figure: "state report retries while placing", Value: float64(reportRetries(f) - retries0), Unit: "",
		Note: fmt.Sprintf("%d executors starting at once; goal 0", o.Executors)})
	res.add(Row{Scenario: "placements", Figure: "executors replaced while placing", Value: float64(extra - o.Executors), Unit: "",
		Note: "launches refused or not acknowledged, started again elsewhere (not lost)"})
	if c.PIDs == nil {
		// Only this process's publishers are counted: with the services
		// in their own processes, their drops are in their logs.
		res.add(Row{Scenario: "placements", Figure: "events dropped while placing", Value: float64(bus.EventsDroppedTotal() - dropped0), Unit: "",
			Note: "by the services' event publishers (buffer full with the stream up or down); goal 0"})
	}
	return live, checkCounts(tr, f, live, counts, res, "placements")
}

// checkCounts compares KV with what the agents run: every app has its
// count RUNNING and no more records than that, and every RUNNING key runs
// on exactly one agent, the one KV names.
func checkCounts(tr *tracker, f *agent.Fleet, apps []*sdk.App, counts []int, res *Result, scenario string) bool {
	ok := true
	for i, a := range apps {
		running, _, created := tr.counts(a.ID)
		if running != counts[i] {
			res.fail("%s: app %s has %d executors RUNNING, asked for %d", scenario, a.ID, running, counts[i])
			ok = false
		}
		_ = created
	}
	where := map[string][]string{}
	for _, a := range f.Agents() {
		if a == nil {
			continue
		}
		select {
		case <-a.Done():
			continue
		default:
		}
		for _, k := range a.ExecutorKeys() {
			where[k] = append(where[k], a.WorkerID())
		}
	}
	kv := tr.runningKeys()
	for k, ws := range where {
		if len(ws) > 1 {
			res.fail("%s: executor %s runs on %d agents: %s (duplicated)", scenario, k, len(ws), strings.Join(ws, ", "))
			ok = false
		}
	}
	lost, ghost := 0, 0
	for k, w := range kv {
		ws := where[k]
		if len(ws) == 0 || ws[0] != w {
			lost++
			if lost <= 5 {
				res.fail("%s: executor %s RUNNING on %s in KV but the agent does not run it (lost)", scenario, k, w)
			}
		}
	}
	for k := range where {
		if _, ok := kv[k]; !ok {
			ghost++
			if ghost <= 5 {
				res.fail("%s: executor %s runs on %s but is not RUNNING in KV", scenario, k, where[k][0])
			}
		}
	}
	if lost > 5 || ghost > 5 {
		res.fail("%s: %d lost, %d running unrecorded in all", scenario, lost, ghost)
	}
	return ok && lost == 0 && ghost == 0
}

// failover fails the leading scheduler with a standby running and times
// the standby's takeover (a new lease epoch in stoker-leader); executors
// must be untouched.
func failover(ctx context.Context, c *Cluster, o Options, tr *tracker, f *agent.Fleet, apps []*sdk.App, res *Result) {
	js, err := jetstream.New(c.Admin)
	if err != nil {
		res.fail("failover: %v", err)
		return
	}
	leaderKV, err := js.KeyValue(ctx, "stoker-leader")
	if err != nil {
		res.fail("failover: %v", err)
		return
	}
	lease := func() (schemas.Lease, error) {
		var l schemas.Lease
		e, err := leaderKV.Get(ctx, "scheduler")
		if err != nil {
			return l, err
		}
		return l, bus.DecodeRecord(e.Value(), &l)
	}
	before, err := lease()
	if err != nil {
		res.fail("failover: read the lease: %v", err)
		return
	}
	standby, _, err := c.StartScheduler(ctx)
	if err != nil {
		res.fail("failover: start a standby: %v", err)
		return
	}
	time.Sleep(2 * time.Second) // the standby follows the beats
	_, totalBefore, _ := tr.counts("")
	runBefore, createdBefore := make([]int, len(apps)), make([]int, len(apps))
	for i, a := range apps {
		runBefore[i], _, createdBefore[i] = tr.counts(a.ID)
	}
	start := time.Now()
	if err := c.FailScheduler(before.Holder); err != nil {
		res.fail("failover: fail the leader %s: %v", before.Holder, err)
		return
	}
	var after schemas.Lease
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if l, err := lease(); err == nil && l.Holder != before.Holder && l.Holder != "" {
			after = l
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	d := time.Since(start)
	if after.Holder == "" {
		res.fail("failover: no new leader within 60s (standby %s)", standby)
		return
	}
	res.add(Row{Scenario: "failover", Figure: "scheduler failover (leader silent → standby holds the lease)", Value: ms(d), Unit: "ms",
		Note: fmt.Sprintf("%d agents, %d executors running; new leader %s", o.Agents, totalBefore, after.Holder)})
	// The new leader reconciles: nothing relaunched, nothing lost.
	time.Sleep(3 * time.Second)
	counts := make([]int, len(apps))
	for i, a := range apps {
		running, _, created := tr.counts(a.ID)
		counts[i] = running
		if running != runBefore[i] || created != createdBefore[i] {
			res.fail("failover: app %s: %d RUNNING and %d executor records after, %d and %d before (relaunched or lost)",
				a.ID, running, created, runBefore[i], createdBefore[i])
		}
	}
	if _, total, _ := tr.counts(""); total != totalBefore {
		res.fail("failover: %d executors RUNNING after, %d before", total, totalBefore)
	}
	checkCounts(tr, f, apps, counts, res, "failover")
}

// deadWorkers silences a batch of agents (SIGKILL as the cluster sees it)
// and times until the cluster marks them DEAD and until their executors
// run again elsewhere.
func deadWorkers(ctx context.Context, c *Cluster, o Options, tr *tracker, f *agent.Fleet, apps []*sdk.App, res *Result) {
	frac := o.DeadFraction
	if frac <= 0 {
		frac = 0.1
	}
	agents := f.Agents()
	nDead := max(1, int(float64(len(agents))*frac))
	idx := make([]int, nDead)
	dead := map[string]bool{}
	lostExecs := 0
	for i := range idx {
		idx[i] = i * len(agents) / nDead
		dead[agents[idx[i]].WorkerID()] = true
		lostExecs += len(agents[idx[i]].ExecutorKeys())
	}
	_, total, _ := tr.counts("")
	workers, stopW, err := watchWorkers(ctx, c.Admin)
	if err != nil {
		res.fail("dead workers: %v", err)
		return
	}
	defer stopW()
	start := time.Now()
	f.Silence(idx...)
	var detect []float64
	seen := map[string]bool{}
	deadline := time.Now().Add(c.WorkerTimeout + 60*time.Second)
	for len(seen) < nDead && time.Now().Before(deadline) {
		select {
		case w := <-workers:
			if dead[w.ID] && w.State == schemas.WorkerDead && !seen[w.ID] {
				seen[w.ID] = true
				detect = append(detect, ms(time.Since(start)))
			}
		case <-time.After(time.Second):
		}
	}
	if len(seen) < nDead {
		res.fail("dead workers: %d of %d silent agents marked DEAD", len(seen), nDead)
		return
	}
	res.add(dist(Row{Scenario: "dead", Figure: "silent → DEAD (p50)", Unit: "ms",
		Note: fmt.Sprintf("%d of %d agents silent; worker timeout %s; goal ≤ timeout + 1 s", nDead, len(agents), c.WorkerTimeout)}, detect))
	// Replaced: as many RUNNING as before, none of them on a silent agent
	// (until its executors are written LOST, they still count).
	ok := waitFor(ctx, tr.waitOff("", total, dead), placementTimeout(lostExecs))
	d := time.Since(start)
	if !ok {
		_, now, _ := tr.counts("")
		res.fail("dead workers: %d executors RUNNING %s after, %d before (%d were on the dead)", now, d.Round(time.Millisecond), total, lostExecs)
		return
	}
	res.add(Row{Scenario: "dead", Figure: "silent → executors replaced", Value: ms(d), Unit: "ms",
		Note: fmt.Sprintf("%d executors were on the silent agents", lostExecs)})
	time.Sleep(time.Second)
	counts := make([]int, len(apps))
	for i, a := range apps {
		counts[i], _, _ = tr.counts(a.ID)
	}
	checkCounts(tr, f, apps, counts, res, "dead workers")
	for k, w := range tr.runningKeys() {
		if dead[w] {
			res.fail("dead workers: %s still RUNNING on the dead worker %s", k, w)
			break
		}
	}
}

// steady samples this process's CPU during steady heartbeats (nothing
// starting), and every process's RSS.
func steady(ctx context.Context, c *Cluster, o Options, res *Result) {
	d := o.Steady
	if d <= 0 {
		d = 5 * time.Second
	}
	procs, names := processes(c)
	u0, t0 := cpuTimes(procs), time.Now()
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return
	}
	el := time.Since(t0).Seconds()
	note := fmt.Sprintf("%d agents, %d executors running", o.Agents, o.Executors)
	for _, n := range names {
		res.add(Row{Scenario: "resources", Figure: "CPU, steady heartbeats (" + n + ")", Value: 100 * (cpuTime(procs[n]) - u0[n]).Seconds() / el,
			Unit: "% of a core", Note: note})
	}
	for _, n := range names {
		res.add(Row{Scenario: "resources", Figure: "RSS (" + n + ")", Value: float64(rss(procs[n])) / 1024, Unit: "MB"})
	}
}

// cpuRows adds, for each process, its CPU since cpu0 divided by n (what
// the figure counts) and as a share of a core over d.
func cpuRows(res *Result, figure string, procs map[string]int, names []string, cpu0 map[string]time.Duration, n int, d time.Duration) {
	cpu1 := cpuTimes(procs)
	for _, name := range names {
		used := cpu1[name] - cpu0[name]
		res.add(Row{Scenario: "placements", Figure: figure + " (" + name + ")", Value: float64(used.Microseconds()) / float64(max(n, 1)), Unit: "µs",
			Note: fmt.Sprintf("%.0f %% of a core meanwhile", 100*used.Seconds()/d.Seconds())})
	}
}

// heapCount is this process's cumulative heap allocations (bytes and
// objects) at one instant (runtime/metrics).
type heapCount struct{ bytes, objects uint64 }

func heapAllocs() heapCount {
	m := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/allocs:objects"}}
	metrics.Read(m)
	var h heapCount
	if m[0].Value.Kind() == metrics.KindUint64 {
		h.bytes = m[0].Value.Uint64()
	}
	if m[1].Value.Kind() == metrics.KindUint64 {
		h.objects = m[1].Value.Uint64()
	}
	return h
}

// allocRow adds this process's heap allocations since h0 divided by n:
// like the message counts, a figure the machine's speed does not move
// (the CPU rows do, by 2× within an hour on this VM), and what the GC's
// share of the CPU follows. In one process it covers the bus, the
// services and the agents; with --processes the simulated agents and the
// bench's tracker only.
func allocRow(res *Result, c *Cluster, figure string, h0 heapCount, n int) {
	h1 := heapAllocs()
	if n <= 0 || h1.bytes < h0.bytes {
		return
	}
	res.add(Row{Scenario: "placements", Figure: figure + " (" + selfName(c) + ")", Value: float64(h1.bytes-h0.bytes) / 1024 / float64(n), Unit: "KB",
		Note: fmt.Sprintf("%.0f objects (heartbeats meanwhile included)", float64(h1.objects-h0.objects)/float64(n))})
}

// msgCount is the bus's in and out message counters at one instant; ok
// is false where they could not be read.
type msgCount struct {
	in, out int64
	ok      bool
}

func busMsgs(c *Cluster) msgCount {
	if c.BusMsgs == nil {
		return msgCount{}
	}
	in, out, err := c.BusMsgs()
	if err != nil {
		c.Log.Warn().Err(err).Msg("bus message counters")
		return msgCount{}
	}
	return msgCount{in: in, out: out, ok: true}
}

// msgsRow adds the bus's messages since m0 divided by n: a count that
// does not depend on the machine's speed, unlike the CPU rows (the
// simulated agents' heartbeats over the same time are included).
func msgsRow(res *Result, c *Cluster, figure string, m0 msgCount, n int) {
	m1 := busMsgs(c)
	if !m0.ok || !m1.ok || n <= 0 {
		return
	}
	in, out := float64(m1.in-m0.in)/float64(n), float64(m1.out-m0.out)/float64(n)
	res.add(Row{Scenario: "placements", Figure: figure, Value: in + out, Unit: "",
		Note: fmt.Sprintf("%.1f received from clients, %.1f delivered to them (heartbeats meanwhile included)", in, out)})
}

// schedulerStatus is the leading scheduler's status, nil when it does not
// answer (no leader, or a leader older than the status endpoint).
func schedulerStatus(ctx context.Context, c *Cluster) *schemas.SchedulerStatus {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := sdk.NewClient(c.Admin).SchedulerStatus(cctx)
	if err != nil {
		c.Log.Warn().Err(err).Msg("scheduler status")
		return nil
	}
	return st
}

// passesRow adds the scheduling passes the leader ran since s0: each is a
// Schedule over the whole view, so their number times the view's size is
// the scheduler's planning cost.
func passesRow(ctx context.Context, res *Result, c *Cluster, figure string, s0 *schemas.SchedulerStatus) {
	s1 := schedulerStatus(ctx, c)
	if s0 == nil || s1 == nil || s1.ID != s0.ID || s1.Epoch != s0.Epoch {
		return
	}
	res.add(Row{Scenario: "placements", Figure: figure, Value: float64(s1.Passes - s0.Passes), Unit: "",
		Note: fmt.Sprintf("window %d of at most %d at the end; %d rounds of samples, %d halved it",
			s1.Window, s1.MaxInFlight, s1.WindowRounds-s0.WindowRounds, s1.WindowCuts-s0.WindowCuts)})
}

// processes are the cluster's processes by name (this one as c.Self),
// and their names sorted.
func processes(c *Cluster) (map[string]int, []string) {
	procs := map[string]int{selfName(c): os.Getpid()}
	if c.PIDs != nil {
		for name, pid := range c.PIDs() {
			procs[name] = pid
		}
	}
	return procs, slices.Sorted(maps.Keys(procs))
}

// selfName is what the rows call this process.
func selfName(c *Cluster) string {
	if c.Self == "" {
		return "bench process"
	}
	return c.Self
}

// cpuTimes is cpuTime of each process, by name.
func cpuTimes(procs map[string]int) map[string]time.Duration {
	out := make(map[string]time.Duration, len(procs))
	for n, pid := range procs {
		out[n] = cpuTime(pid)
	}
	return out
}

// cpuTime is a process's user+system CPU from /proc/<pid>/stat.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+2:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// rss is a process's resident set in KiB.
func rss(pid int) int64 { return procStatus(pid, "VmRSS:") }

// rssAnon is the anonymous part of a process's resident set in KiB (its
// heap and stacks; the rest is the executable's pages, shared by every
// process running it and reclaimable by the kernel).
func rssAnon(pid int) int64 { return procStatus(pid, "RssAnon:") }

// procStatus is the KiB figure of field in /proc/<pid>/status, 0 if absent.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ") + fmt.Sprintf(" (%d cores)", runtime.NumCPU())
}

// reportRetries sums the agents' state report retries.
func reportRetries(f *agent.Fleet) int64 {
	var n int64
	for _, a := range f.Agents() {
		if a != nil {
			n += a.ReportRetries()
		}
	}
	return n
}
