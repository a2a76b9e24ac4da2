package tests

import (
	"context"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

var chaosBusKills = flag.Int("chaos.bus-kills", 2, "bus node SIGKILLs in TestChaos_BusNodeKills")

// TestChaos_BusNodeKills runs the bus as three `stoker bus` processes
// (JetStream cluster, every bucket and the events stream at R3), two
// schedulers, three agents, and SIGKILLs a random bus node -chaos.bus-kills
// times (2; the long size is 10) while a client keeps submitting
// apps. After each kill, with the node still down: a submission succeeds,
// the cluster is ALIVE with every worker, and the chaos invariants hold
// (no app lost, no over-grant, processes per executor id and per worker,
// epochs never overlapping at the agents); then the node is restarted on
// its data and the test waits until every stream has its three replicas
// current before the next kill. At the end every accepted app runs, no
// executor id ever ran twice, and the events stream matches KV.
func TestChaos_BusNodeKills(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test: skipped in -short mode")
	}
	rounds := *chaosBusKills
	rng := chaosRand(t)
	c := NewCluster(t, ClusterOptions{NoBus: true})
	type node struct {
		name string
		args []string
		proc *Proc
	}
	var nodes []*node
	var routes, urls []string
	ports := map[string][2]int{}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("n%d", i)
		ports[name] = [2]int{freePort(t), freePort(t)}
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[name][1]))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[name][0]))
	}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("n%d", i)
		n := &node{name: name, args: []string{"bus", "--server-name", name, "--host", "127.0.0.1",
			"--port", fmt.Sprint(ports[name][0]), "--data", filepath.Join(c.Dir, name),
			"--cluster-name", "stoker-chaos", "--cluster-port", fmt.Sprint(ports[name][1]),
			"--routes", strings.Join(routes, ","), "--replicas", "3", "--auth-dir", c.AuthDir}}
		n.proc = c.Start("bus-"+name, n.args...)
		nodes = append(nodes, n)
	}
	c.URL = strings.Join(urls, ",")
	var addrs []string
	for _, n := range nodes {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", ports[n.name][0]))
	}
	c.waitBusNodes(addrs...)
	// Room on each agent for every app the run may accept.
	maxApps := 10*rounds + 20
	h := newHAClusterOn(c, 2, max(32, 2*maxApps), nil, "a", "b", "c")
	h.tracker = h.trackProcesses()
	store := h.Store()

	// A client submits an app every 300 ms, through every kill: an app
	// whose submission was acknowledged must run; errors while a stream
	// elects a new leader are counted, not failed.
	var (
		bgMu       sync.Mutex
		bgApps     []string
		bgErrs     int
		lastBgErr  error
		stopBg     = make(chan struct{})
		bgDone     = make(chan struct{})
		stopRacing sync.Once
	)
	go func() {
		defer close(bgDone)
		for i := 0; i < maxApps; i++ {
			select {
			case <-stopBg:
				return
			case <-time.After(300 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			app, err := sdk.RegisterApp(ctx, h.NC(), schemas.RegisterApp{
				Name: fmt.Sprintf("bus-racing-%d", i), MaxCores: 2,
				Executor: schemas.ExecutorSpec{Command: []string{"sleep", "3600"}, Cores: 1, MemoryMB: 64},
			})
			cancel()
			bgMu.Lock()
			if err != nil {
				bgErrs++
				lastBgErr = err
			} else {
				bgApps = append(bgApps, app.ID)
				t.Cleanup(app.Release)
			}
			bgMu.Unlock()
		}
	}()
	stop := func() { stopRacing.Do(func() { close(stopBg); <-bgDone }) }
	defer stop()

	var apps []string
	var serving []time.Duration
	for round := 0; round < rounds; round++ {
		apps = append(apps, h.registerApp(fmt.Sprintf("bus-chaos-%d", round), 1, 2, "sleep", "3600"))
		n := nodes[rng.Intn(len(nodes))]
		n.proc.Signal(syscall.SIGKILL)
		_ = n.proc.Wait(5 * time.Second)
		killed := time.Now()
		// Submissions succeed again on the two nodes left.
		var app *sdk.App
		var lastErr error
		h.Eventually(120*time.Second, fmt.Sprintf("round %d: a submission accepted with %s down", round, n.name), func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			app, lastErr = sdk.RegisterApp(ctx, h.NC(), schemas.RegisterApp{
				Name: fmt.Sprintf("bus-after-kill-%d", round), MaxCores: 2,
				Executor: schemas.ExecutorSpec{Command: []string{"sleep", "3600"}, Cores: 1, MemoryMB: 64},
			})
			return lastErr == nil
		})
		t.Cleanup(app.Release)
		apps = append(apps, app.ID)
		serving = append(serving, time.Since(killed))
		h.Eventually(120*time.Second, fmt.Sprintf("round %d: cluster ALIVE with 3 workers and %s down", round, n.name), func() bool {
			st := h.status()
			return st != nil && st.State == schemas.ClusterAlive && st.Leader != nil && st.Workers[string(schemas.WorkerAlive)] == 3
		})
		t.Logf("round %d: bus node %s killed; a submission accepted after %s (last error before: %v); leader %s epoch %d",
			round, n.name, serving[len(serving)-1].Round(time.Millisecond), lastErr, h.status().Leader.ID, h.status().Leader.Epoch)
		h.checkInvariants(apps)
		h.checkProcesses(round)
		h.checkRanOnce(fmt.Sprintf("round %d", round))
		h.checkLeadership(fmt.Sprintf("round %d", round), 0) // placements may still wait on the reconnecting leader

		// The node comes back on its data and catches up before the next kill.
		n.proc = c.Start("bus-"+n.name, n.args...)
		for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(250 * time.Millisecond) {
			why := replicasBehind(store, ports[n.name][0])
			if why == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: 120s after %s was restarted, not every stream has 3 current replicas: %s", round, n.name, why)
			}
		}
	}
	stop()
	bgMu.Lock()
	apps = append(apps, bgApps...)
	t.Logf("%d bus node kills: submission accepted again after %s; racing client: %d apps accepted, %d submissions failed (last: %v)",
		rounds, durationSummary(serving), len(bgApps), bgErrs, lastBgErr)
	bgMu.Unlock()
	// Every accepted app runs with its two executors; the failure names
	// the apps that do not and how they stand.
	var bad []string
	for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		byID := map[string]schemas.AppView{}
		for _, a := range h.apps() {
			byID[a.ID] = a
		}
		bad = bad[:0]
		for _, id := range apps {
			a, ok := byID[id]
			if !ok || a.State != schemas.AppRunning || len(runningPIDs([]schemas.AppView{a})) != 2 {
				bad = append(bad, fmt.Sprintf("%s (listed %v): %+v", id, ok, a))
			}
		}
		if len(bad) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("120s after the last kill, %d of %d accepted apps are not RUNNING with 2 executors:\n%s",
				len(bad), len(apps), strings.Join(bad, "\n"))
		}
	}
	h.checkInvariants(apps)
	h.checkRanOnce("end")
	h.checkLeadership("end", 1)
	// Events go through an acknowledged publisher that keeps what the
	// stream did not store and writes it again (main's 45a2639): after node
	// kills the stream still matches KV. (With core publishes, this check
	// found 3 of 129 records with no event after 2 node kills.)
	h.checkEventsMatchKV(store)
}

// replicasBehind says what is not yet whole after a node restart: the node
// listening on port not accepting connections, or a bucket's stream or the
// events stream without a leader and two current followers ("" when all
// are whole).
func replicasBehind(store *bus.Store, port int) string {
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
	if err != nil {
		return fmt.Sprintf("the node on port %d does not accept connections: %v", port, err)
	}
	conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	names := []string{bus.StreamEvents}
	for _, kv := range []interface{ Bucket() string }{store.Workers, store.Drivers, store.Apps, store.Executors, store.Leader, store.Cluster} {
		names = append(names, "KV_"+kv.Bucket())
	}
	for _, name := range names {
		s, err := store.JS.Stream(ctx, name)
		if err != nil {
			return fmt.Sprintf("stream %s: %v", name, err)
		}
		info, err := s.Info(ctx)
		switch {
		case err != nil:
			return fmt.Sprintf("stream %s: %v", name, err)
		case info.Cluster == nil || info.Cluster.Leader == "":
			return fmt.Sprintf("stream %s has no leader", name)
		case len(info.Cluster.Replicas) != 2:
			return fmt.Sprintf("stream %s (leader %s) has %d followers", name, info.Cluster.Leader, len(info.Cluster.Replicas))
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				return fmt.Sprintf("stream %s: follower %s current=%v offline=%v lag=%d", name, r.Name, r.Current, r.Offline, r.Lag)
			}
		}
	}
	return ""
}
