package tests

// The compose end-to-end test: deploy/compose.yaml built from scratch and run
// under Docker, driven from the host through the mapped NATS port with the
// same stoker CLI and SDK a user has. It needs a Docker daemon and either
// `docker compose` (v2) or `docker-compose` (1.29); without them it skips.
// STOKER_COMPOSE="docker-compose" (or any command) picks the tool.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// composeServices are the services of deploy/compose.yaml.
var composeServices = []string{"n1", "n2", "n3", "registration-1", "registration-2", "heartbeat-1", "heartbeat-2",
	"recovery-1", "recovery-2",
	"scheduler-1", "scheduler-2", "agent-1", "agent-2", "agent-3"}

var composeLeaderKills = flag.Int("compose.leader-kills", 1, "TestCompose_Stack: docker kills of the leading scheduler's container (each measured)")

// piInImage is where the image keeps the pi example (the agents run it).
const piInImage = "/usr/local/bin/pi"

// composeTool skips the test unless a Docker daemon answers and a compose
// tool exists; it returns the compose command (v2 plugin preferred).
func composeTool(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("skipping the compose stack test: `docker info` failed (no Docker daemon here?): %v: %s",
			err, strings.TrimSpace(string(out)))
	}
	if v := strings.Fields(os.Getenv("STOKER_COMPOSE")); len(v) > 0 {
		return v
	}
	if exec.CommandContext(ctx, "docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	// A Docker daemon answers: this machine can run the stack, so a
	// missing compose tool is a broken setup, not a reason to skip.
	t.Fatal("a Docker daemon answers `docker info` but neither `docker compose` (v2 plugin) nor `docker-compose` is installed: install one (or set STOKER_COMPOSE) to run the compose stack test")
	return nil
}

// dockerWorks reports whether a Docker daemon answers.
func dockerWorks() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").Run() == nil
}

// stack is one compose project of deploy/compose.yaml.
type stack struct {
	t       *testing.T
	tool    []string
	project string
	file    string
	image   string
	env     []string
	ids     map[string]string // service → container id
	c       *Cluster          // host-side clients on the mapped NATS port
}

// run runs a command with the stack's environment and returns its stdout;
// stderr (compose writes its progress and warnings there) goes into the
// error, or is dropped on success.
func (s *stack) run(timeout time.Duration, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = s.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, errb.String())
	}
	return out.String(), nil
}

// compose runs the compose tool on the stack's project.
func (s *stack) compose(timeout time.Duration, args ...string) (string, error) {
	argv := append(append(append([]string(nil), s.tool...), "-p", s.project, "-f", s.file), args...)
	return s.run(timeout, argv...)
}

// docker runs a docker command and fails the test if it fails.
func (s *stack) docker(args ...string) string {
	s.t.Helper()
	out, err := s.run(2*time.Minute, append([]string{"docker"}, args...)...)
	if err != nil {
		s.t.Fatalf("%v\n%s", err, out)
	}
	return strings.TrimSpace(out)
}

// cli runs a stoker client command against the mapped port.
func (s *stack) cli(timeout time.Duration, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, stokerBin, args...)
	cmd.Env = append(os.Environ(), "STOKER_NATS_URL="+s.c.URL, "STOKER_CREDS="+s.c.AdminCreds())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func (s *stack) status() *schemas.Status {
	var st schemas.Status
	out, _, err := s.cli(10*time.Second, "status", "--json")
	if err != nil || jsonInto(out, &st) != nil {
		return nil
	}
	return &st
}

func (s *stack) workers() map[string]schemas.WorkerView {
	var ws []schemas.WorkerView
	out, _, err := s.cli(10*time.Second, "workers", "--json")
	if err != nil || jsonInto(out, &ws) != nil {
		return nil
	}
	m := map[string]schemas.WorkerView{}
	for _, w := range ws {
		m[w.ID] = w
	}
	return m
}

func (s *stack) app(id string) *schemas.AppView {
	var apps []schemas.AppView
	out, _, err := s.cli(10*time.Second, "apps", "--json")
	if err != nil || jsonInto(out, &apps) != nil {
		return nil
	}
	for _, a := range apps {
		if a.ID == id {
			return &a
		}
	}
	return nil
}

// waitFor polls cond every 250ms (each poll may run a CLI) until it holds.
func (s *stack) waitFor(timeout time.Duration, what string, cond func() bool) time.Duration {
	s.t.Helper()
	start := time.Now()
	for deadline := start.Add(timeout); ; {
		if cond() {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// processes lists the command lines running in a container (docker top:
// the image has no shell to ask).
func (s *stack) processes(service string) []string {
	s.t.Helper()
	out, err := s.run(30*time.Second, "docker", "top", s.ids[service], "-o", "pid,args")
	if err != nil {
		s.t.Fatalf("%v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) > 0 {
		lines = lines[1:] // header
	}
	return lines
}

func countContaining(lines []string, sub string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

// submitPi runs `stoker submit --wait` of the pi example inside the cluster
// and checks its log.
func (s *stack) submitPi(slices int) string {
	s.t.Helper()
	out, errOut, err := s.cli(3*time.Minute, "submit", "--name", "pi", "--wait", "--", piInImage, "--slices", fmt.Sprint(slices))
	if err != nil {
		s.t.Fatalf("stoker submit --wait pi: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	fields := strings.Fields(out)
	if len(fields) == 0 || !strings.HasPrefix(fields[0], schemas.DriverIDPrefix) {
		s.t.Fatalf("submit output %q does not start with a driver id", out)
	}
	id := fields[0]
	logs, errOut, err := s.cli(30*time.Second, "logs", id)
	if err != nil || !strings.Contains(logs, "Pi is roughly") {
		s.t.Fatalf("stoker logs %s: %v %s\n%s", id, err, errOut, logs)
	}
	return strings.TrimSpace(logs)
}

// kvLeader is the server leading the workers bucket's stream.
func (s *stack) kvLeader() (leader string, current, replicas int) {
	js, err := jetstream.New(s.c.NC())
	if err != nil {
		return "", 0, 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "KV_"+bus.BucketWorkers)
	if err != nil {
		return "", 0, 0
	}
	info, err := st.Info(ctx)
	if err != nil || info.Cluster == nil {
		return "", 0, 0
	}
	for _, p := range info.Cluster.Replicas {
		if p.Current && !p.Offline {
			current++
		}
	}
	return info.Cluster.Leader, current, len(info.Cluster.Replicas)
}

// leaseWatch records the writes of stoker-leader/scheduler with the time
// the watch saw each.
type leaseWatch struct {
	s      *stack
	mu     sync.Mutex
	seen   []leaseSeen
	cancel context.CancelFunc
}

type leaseSeen struct {
	l  *schemas.Lease
	at time.Time
}

// watchLease starts a watch of the scheduler's lease (from its current
// value) through the host port; the test's cleanup stops it.
func (s *stack) watchLease() *leaseWatch {
	s.t.Helper()
	js, err := jetstream.New(s.c.NC())
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.t.Cleanup(cancel)
	kv, err := js.KeyValue(ctx, bus.BucketLeader)
	if err != nil {
		s.t.Fatal(err)
	}
	w, err := kv.Watch(ctx, bus.KeyScheduler)
	if err != nil {
		s.t.Fatal(err)
	}
	lw := &leaseWatch{s: s, cancel: cancel}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil || bus.Deleted(e) {
					continue
				}
				at := time.Now()
				var l schemas.Lease
				if bus.DecodeRecord(e.Value(), &l) == nil {
					lw.mu.Lock()
					lw.seen = append(lw.seen, leaseSeen{&l, at})
					lw.mu.Unlock()
				}
			}
		}
	}()
	return lw
}

// until is when the watch first saw a lease that satisfies ok (it must
// have: the caller saw that leader in status); it stops the watch.
func (lw *leaseWatch) until(ok func(*schemas.Lease) bool) time.Time {
	lw.s.t.Helper()
	defer lw.cancel()
	var at time.Time
	lw.s.waitFor(30*time.Second, "the lease watch to see the new holder", func() bool {
		lw.mu.Lock()
		defer lw.mu.Unlock()
		for _, x := range lw.seen {
			if ok(x.l) {
				at = x.at
				return true
			}
		}
		return false
	})
	return at
}

func (s *stack) health(service string) string {
	out, _ := s.run(30*time.Second, "docker", "inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}", s.ids[service])
	return strings.TrimSpace(out)
}

// newStack builds the binaries and the image and brings the stack up under a
// unique project name on a free host port; teardown is registered first, so
// it runs whatever happens.
func newStack(t *testing.T, tool []string) *stack {
	t.Helper()
	file, err := filepath.Abs("../deploy/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	project := "stoker-e2e-" + hex.EncodeToString(b[:])
	port := freePort(t)
	s := &stack{t: t, tool: tool, project: project, file: file, image: "stoker-e2e:" + project,
		ids: map[string]string{},
		c:   &Cluster{t: t, Dir: t.TempDir(), Port: port, URL: fmt.Sprintf("nats://127.0.0.1:%d", port)}}
	// deploy/build.sh makes the stack's credentials there (the image
	// carries them); the test is a client with the admin one.
	if s.c.AuthDir, err = filepath.Abs("../deploy/.build/auth"); err != nil {
		t.Fatal(err)
	}
	s.env = append(os.Environ(), fmt.Sprintf("STOKER_NATS_PORT=%d", port), "STOKER_NATS_HOST=127.0.0.1",
		"STOKER_IMAGE="+s.image, "STOKER_LOG_LEVEL=info")
	t.Logf("compose: %s, project %s, NATS on %s", strings.Join(tool, " "), project, s.c.URL)

	t.Cleanup(func() {
		if t.Failed() {
			out, _ := s.compose(2*time.Minute, "ps")
			t.Logf("---- %s ps ----\n%s", project, out)
			for _, svc := range composeServices {
				out, _ := s.compose(time.Minute, "logs", "--no-color", "--tail", "80", svc)
				t.Logf("---- logs %s ----\n%s", svc, out)
			}
		}
		if out, err := s.compose(5*time.Minute, "down", "-v", "--remove-orphans", "--timeout", "5"); err != nil {
			t.Errorf("teardown: %v\n%s", err, out)
		}
		_, _ = s.run(time.Minute, "docker", "image", "rm", "-f", s.image)
	})
	t.Cleanup(func() {
		if s.c.nc != nil {
			s.c.nc.Close()
		}
	})

	if out, err := s.run(10*time.Minute, "bash", "../deploy/build.sh"); err != nil {
		t.Fatalf("deploy/build.sh: %v\n%s", err, out)
	}
	return s
}

func TestCompose_Stack(t *testing.T) {
	// In CI on a machine with Docker the stack test runs: it may not be
	// skipped there, -short or not.
	if testing.Short() && (os.Getenv("CI") == "" || !dockerWorks()) {
		t.Skip("skipping the compose stack test in -short mode (it builds an image and runs 11 containers)")
	}
	tool := composeTool(t)
	s := newStack(t, tool)

	// ---- up → every agent ALIVE, the cluster ALIVE.
	upStart := time.Now()
	if out, err := s.compose(10*time.Minute, "up", "-d", "--build"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	upReturned := time.Since(upStart)
	for _, svc := range composeServices {
		out, err := s.compose(time.Minute, "ps", "-q", svc)
		if id := strings.TrimSpace(out); err != nil || id == "" {
			t.Fatalf("no container for %s: %v %s", svc, err, out)
		} else {
			s.ids[svc] = id
		}
	}
	agents := []string{"agent-1", "agent-2", "agent-3"}
	s.waitFor(3*time.Minute, "three agents ALIVE and the cluster ALIVE", func() bool {
		ws := s.workers()
		for _, a := range agents {
			if ws[a].State != schemas.WorkerAlive {
				return false
			}
		}
		st := s.status()
		return st != nil && st.State == schemas.ClusterAlive
	})
	t.Logf("TIMING compose up (image build included) → all agents ALIVE: %s (up -d returned after %s)",
		time.Since(upStart).Round(time.Millisecond), upReturned.Round(time.Millisecond))

	// ---- pi through the host port, run by an agent inside the stack.
	t.Logf("pi: %s", s.submitPi(4))

	// ---- kill the leading scheduler's container, -compose.leader-kills
	// times: each time the standby leads with a higher epoch. The time is
	// measured from just before `docker kill` to the new holder's lease
	// write, seen by a KV watch through the host port (the CLI polls of
	// waitFor are only the check, their 250 ms would be the resolution).
	var takeovers []time.Duration
	for k := 1; k <= *composeLeaderKills; k++ {
		st := s.status()
		if st == nil || st.Leader == nil {
			t.Fatalf("kill %d: no leader in status: %+v", k, st)
		}
		old := *st.Leader
		victim, ok := s.ids[old.ID]
		if !ok {
			t.Fatalf("leader id %q is not a scheduler container hostname (scheduler-1/scheduler-2)", old.ID)
		}
		leases := s.watchLease()
		killed := time.Now()
		s.docker("kill", victim)
		var leader schemas.LeaderView
		s.waitFor(time.Minute, "the standby scheduler to lead with a higher epoch", func() bool {
			st := s.status()
			if st == nil || st.Leader == nil || st.Leader.ID == old.ID || st.Leader.Epoch <= old.Epoch {
				return false
			}
			leader = *st.Leader
			return true
		})
		took := leases.until(func(l *schemas.Lease) bool { return l.Holder == leader.ID }).Sub(killed)
		takeovers = append(takeovers, took)
		alive := s.waitFor(time.Minute, "the cluster ALIVE under the new leader", func() bool {
			st := s.status()
			return st != nil && st.State == schemas.ClusterAlive && st.Leader != nil && st.Leader.Epoch == leader.Epoch
		})
		t.Logf("TIMING docker kill %d: %s (leader, epoch %d) → %s holds the lease after %s (epoch %d); cluster ALIVE %s later",
			k, old.ID, old.Epoch, leader.ID, took.Round(time.Millisecond), leader.Epoch, alive.Round(time.Millisecond))
		s.docker("start", victim) // back as the standby
		s.waitFor(2*time.Minute, old.ID+" healthy again", func() bool { return s.health(old.ID) == "healthy" })
	}
	slices.Sort(takeovers)
	t.Logf("TIMING docker kill of the leader → standby holds the lease, %d kills: min %s, median %s, max %s",
		len(takeovers), takeovers[0].Round(time.Millisecond), takeovers[len(takeovers)/2].Round(time.Millisecond),
		takeovers[len(takeovers)-1].Round(time.Millisecond))

	// ---- stop one NATS node: the cluster keeps serving. n1 carries the
	// host port, so the node stopped is the workers stream's leader if that
	// is not n1, else n3.
	kvLeader, _, _ := s.kvLeader()
	node := kvLeader
	if node == "" || node == "n1" {
		node = "n3"
	}
	t.Logf("workers stream leader is %q; stopping %s", kvLeader, node)
	stopped := time.Now()
	s.docker("stop", s.ids[node])
	s.waitFor(time.Minute, "status and all agents ALIVE with "+node+" down", func() bool {
		st := s.status()
		if st == nil || st.State != schemas.ClusterAlive {
			return false
		}
		ws := s.workers()
		for _, a := range agents {
			if ws[a].State != schemas.WorkerAlive {
				return false
			}
		}
		return true
	})
	t.Logf("TIMING %s stopped → status answers: %s", node, time.Since(stopped).Round(time.Millisecond))
	t.Logf("pi with %s down: %s", node, s.submitPi(2))
	s.docker("start", s.ids[node])
	s.waitFor(2*time.Minute, node+" back: healthy and the workers stream with every replica current", func() bool {
		if s.health(node) != "healthy" {
			return false
		}
		l, cur, n := s.kvLeader()
		return l != "" && n == 2 && cur == 2
	})
	t.Logf("TIMING %s stop → rejoined, replicas current: %s", node, time.Since(stopped).Round(time.Millisecond))

	// ---- an app with three executors; cut one agent off the network.
	appID := s.c.registerApp("compose-app", 1, 3, piInImage, "--executor")
	var app *schemas.AppView
	s.waitFor(2*time.Minute, "3 executors RUNNING", func() bool {
		app = s.app(appID)
		return app != nil && len(running(app, "")) == 3
	})
	cut := running(app, "")[0].WorkerID
	stale := running(app, cut)
	if n := countContaining(s.processes(cut), piInImage+" --executor"); n != len(stale) {
		t.Fatalf("%s runs %d executor processes, the cluster says %d", cut, n, len(stale))
	}
	network := s.docker("inspect", "-f", `{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}`, s.ids[cut])
	network = strings.Fields(network)[0]
	t.Logf("app %s: executors %v; disconnecting %s (%d executors) from %s", appID, execSummary(app), cut, len(stale), network)

	disconnected := time.Now()
	s.docker("network", "disconnect", network, s.ids[cut])
	dead := s.waitFor(time.Minute, cut+" DEAD", func() bool {
		w, ok := s.workers()[cut]
		return ok && w.State == schemas.WorkerDead
	})
	replaced := s.waitFor(2*time.Minute, "its executors LOST and replaced on other agents", func() bool {
		app = s.app(appID)
		if app == nil {
			return false
		}
		for _, e := range stale {
			if x := executor(app, e.ID); x == nil || x.State != schemas.ExecutorLost {
				return false
			}
		}
		return len(running(app, "")) == 3 && len(running(app, cut)) == 0
	})
	t.Logf("TIMING network disconnect %s → DEAD: %s; → executors LOST and 3 RUNNING elsewhere: %s (%v)",
		cut, dead.Round(time.Millisecond), (dead + replaced).Round(time.Millisecond), execSummary(app))
	// The cut-off agent still runs its (now stale) executors meanwhile.
	t.Logf("%s processes while cut off: %d executor(s)", cut, countContaining(s.processes(cut), piInImage+" --executor"))

	reconnected := time.Now()
	s.docker("network", "connect", network, s.ids[cut])
	back := s.waitFor(2*time.Minute, cut+" ALIVE again", func() bool {
		w, ok := s.workers()[cut]
		return ok && w.State == schemas.WorkerAlive
	})
	cleaned := s.waitFor(time.Minute, "the stale executors on "+cut+" killed", func() bool {
		return countContaining(s.processes(cut), piInImage+" --executor") == 0
	})
	app = s.app(appID)
	for _, e := range stale {
		if x := executor(app, e.ID); x == nil || x.State != schemas.ExecutorLost {
			t.Fatalf("stale executor %d is %+v after %s came back, want LOST", e.ID, x, cut)
		}
	}
	if n := len(running(app, "")); n != 3 {
		t.Fatalf("%d executors RUNNING after %s came back, want 3: %v", n, cut, execSummary(app))
	}
	t.Logf("TIMING network connect %s → ALIVE: %s; → stale executor processes gone: %s (cut off for %s in all)",
		cut, back.Round(time.Millisecond), (back + cleaned).Round(time.Millisecond), reconnected.Sub(disconnected).Round(time.Millisecond))

	// ---- compose stop on an agent that runs executors: SIGTERM → self-drain
	// (--drain-grace): its executors are replaced on the other agents and
	// KILLED there (never LOST), the worker DECOMMISSIONED, the agent exits 0.
	app = s.app(appID)
	drained := running(app, "")[0].WorkerID
	onDrained := running(app, drained)
	stopping := time.Now()
	if out, err := s.compose(2*time.Minute, "stop", drained); err != nil {
		t.Fatalf("compose stop %s: %v\n%s", drained, err, out)
	}
	stoppedIn := time.Since(stopping)
	if code := strings.TrimSpace(s.docker("inspect", "-f", "{{.State.ExitCode}}", s.ids[drained])); code != "0" {
		t.Fatalf("%s exited %s after compose stop, want 0 (drained, then left)", drained, code)
	}
	s.waitFor(time.Minute, drained+" DECOMMISSIONED by its own drain and 3 executors RUNNING elsewhere", func() bool {
		w, ok := s.workers()[drained]
		if !ok || w.State != schemas.WorkerDecommissioned || w.Drain == nil || w.Drain.By != "agent" {
			return false
		}
		app = s.app(appID)
		return app != nil && len(running(app, "")) == 3 && len(running(app, drained)) == 0
	})
	for _, e := range onDrained {
		if x := executor(app, e.ID); x == nil || x.State != schemas.ExecutorKilled {
			t.Fatalf("executor %d on %s is %+v after the drain, want KILLED (replaced first, not LOST): %v", e.ID, drained, x, execSummary(app))
		}
	}
	t.Logf("TIMING compose stop %s (%d executors, self-drain) returned after %s: %v",
		drained, len(onDrained), stoppedIn.Round(time.Millisecond), execSummary(app))
}

// running lists an app's RUNNING executors, on worker if it is not empty.
func running(a *schemas.AppView, worker string) []schemas.ExecutorView {
	var out []schemas.ExecutorView
	for _, e := range a.Executors {
		if e.State == schemas.ExecutorRunning && (worker == "" || e.WorkerID == worker) {
			out = append(out, e)
		}
	}
	return out
}

func executor(a *schemas.AppView, id int) *schemas.ExecutorView {
	if a == nil {
		return nil
	}
	for i := range a.Executors {
		if a.Executors[i].ID == id {
			return &a.Executors[i]
		}
	}
	return nil
}

func execSummary(a *schemas.AppView) []string {
	var out []string
	for _, e := range a.Executors {
		out = append(out, fmt.Sprintf("%d@%s:%s", e.ID, e.WorkerID, e.State))
	}
	return out
}
