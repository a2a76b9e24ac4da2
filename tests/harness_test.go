// Package tests holds end-to-end tests: the real stoker binary, run as
// separate processes (bus, services, agents, clients), talking over a real
// NATS server with JetStream, killed with real signals.
package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

var (
	stokerBin string
	piBin     string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "stoker-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	stokerBin = filepath.Join(dir, "stoker")
	piBin = filepath.Join(dir, "pi")
	for _, b := range []struct{ out, pkg string }{{stokerBin, "../cmd/stoker"}, {piBin, "../examples/pi"}} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", b.pkg, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Proc is a stoker process started by a test.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Log  string
	done chan struct{}
	err  error
}

// Signal sends sig to the process (not its group: an agent's children are
// its own business, as on a real machine).
func (p *Proc) Signal(sig syscall.Signal) { _ = p.Cmd.Process.Signal(sig) }

// Wait waits for the process to exit.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Cluster is a set of processes around one bus.
type Cluster struct {
	t       testing.TB
	Dir     string
	Port    int
	URL     string
	mu      sync.Mutex
	procs   []*Proc
	nc      *nats.Conn
	timeout string // worker timeout flag value
	hb      string // heartbeat interval flag value
	// AuthDir holds the keys (auth/) and credentials (creds/) every bus
	// node trusts and every process connects with: the harness makes them
	// once, so the nodes of a multi-node bus share one operator and a bus
	// restarted on a fresh store (Dir2) still knows everyone.
	AuthDir  string
	keys     *auth.Keys
	insecure bool
}

// ClusterOptions sets timings for the services started by NewCluster.
type ClusterOptions struct {
	WorkerTimeout     time.Duration
	HeartbeatInterval time.Duration
	// NoBus leaves starting the bus to the test (a multi-node bus).
	NoBus bool
	// Insecure runs the bus with --insecure and every process without
	// credentials or TLS (benchmarks comparing the cost of security).
	Insecure bool
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// NewCluster starts a bus process on a free port with its data in a temp dir.
func NewCluster(t testing.TB, o ClusterOptions) *Cluster {
	t.Helper()
	if o.WorkerTimeout == 0 {
		o.WorkerTimeout = 2 * time.Second
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = 200 * time.Millisecond
	}
	c := &Cluster{t: t, Dir: t.TempDir(), Port: freePort(t), timeout: o.WorkerTimeout.String(), hb: o.HeartbeatInterval.String(),
		insecure: o.Insecure}
	c.URL = fmt.Sprintf("nats://127.0.0.1:%d", c.Port)
	c.AuthDir = t.TempDir()
	keys, _, err := auth.Install(c.AuthDir)
	if err != nil {
		t.Fatal(err)
	}
	c.keys = keys
	// The CA every node's certificate chains to, made before the nodes
	// start (each then makes its own server certificate from it).
	if _, err := auth.EnsureTLS(c.AuthDir, "e2e", nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stopAll)
	if !o.NoBus {
		c.StartBus()
	}
	return c
}

// StartBus starts (or restarts) the bus process on the cluster's port and data.
func (c *Cluster) StartBus() *Proc {
	c.t.Helper()
	args := []string{"bus", "--host", "127.0.0.1", "--port", fmt.Sprint(c.Port), "--data", filepath.Join(c.Dir, "bus"),
		"--auth-dir", c.AuthDir}
	if c.insecure {
		args = append(args, "--insecure")
	}
	p := c.Start("bus", args...)
	c.eventually(20*time.Second, "bus accepting connections", func() bool {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.Port), 200*time.Millisecond)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	return p
}

// StartServices starts registration, heartbeat, scheduler and recovery.
func (c *Cluster) StartServices(extra ...string) {
	c.t.Helper()
	c.StartService("registration", "--heartbeat-interval", c.hb, "--worker-timeout", c.timeout)
	c.StartService("heartbeat", "--heartbeat-interval", c.hb, "--worker-timeout", c.timeout)
	c.StartService("recovery")
	c.StartService("scheduler", extra...)
}

// StartService starts one `stoker <name>` service process.
func (c *Cluster) StartService(name string, args ...string) *Proc {
	c.t.Helper()
	if c.insecure {
		return c.Start(name, append([]string{name, "--nats", c.URL}, args...)...)
	}
	return c.Start(name, append([]string{name, "--nats", c.URL, "--creds", auth.CredsPath(c.AuthDir, auth.Role(name))}, args...)...)
}

// ConnAs connects to the bus as name in role (closed at cleanup).
func (c *Cluster) ConnAs(role auth.Role, name string) *nats.Conn {
	c.t.Helper()
	b, err := c.keys.Mint(role, name, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	nc, err := bus.Connect(c.URL, bus.ConnectOptions{Name: "e2e-" + name, CredsData: b, CA: c.CA()})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// secureOr is v, or "" on an insecure cluster.
func (c *Cluster) secureOr(v string) string {
	if c.insecure {
		return ""
	}
	return v
}

// CA is the CA file the bus's certificates chain to.
func (c *Cluster) CA() string { return auth.CAPath(c.AuthDir) }

// AdminCreds is the admin credential clients use.
func (c *Cluster) AdminCreds() string { return auth.CredsPath(c.AuthDir, auth.RoleAdmin) }

// AgentCreds mints (once) the credential of agent id and returns its path.
func (c *Cluster) AgentCreds(id string) string {
	c.t.Helper()
	p := filepath.Join(c.AuthDir, auth.CredsDir, "agent-"+id+".creds")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	b, err := c.keys.Mint(auth.RoleAgent, id, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := auth.WriteSecret(p, b); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// StartAgent starts an agent process with the given id, cores and memory.
func (c *Cluster) StartAgent(id string, cores int, memory string, args ...string) *Proc {
	c.t.Helper()
	creds := ""
	if !c.insecure {
		creds = c.AgentCreds(id)
	}
	a := append([]string{"agent", "--nats", c.URL, "--creds", creds, "--id", id, "--cores", fmt.Sprint(cores),
		"--memory", memory, "--work-dir", filepath.Join(c.Dir, "work", id), "--heartbeat-interval", c.hb}, args...)
	return c.Start("agent-"+id, a...)
}

// Start runs the stoker binary with args, logging to a file in the cluster dir.
func (c *Cluster) Start(name string, args ...string) *Proc {
	c.t.Helper()
	return c.StartWrapped(name, nil, args...)
}

// StartWrapped is Start with the command line prefixed by wrap (the
// partition harness's `ip netns exec <ns>`, which execs in place: the
// process's pid is stoker's).
func (c *Cluster) StartWrapped(name string, wrap []string, args ...string) *Proc {
	c.t.Helper()
	logPath := filepath.Join(c.Dir, fmt.Sprintf("%s-%d.log", name, time.Now().UnixNano()))
	f, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	argv := append(append(append([]string(nil), wrap...), stokerBin), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "STOKER_LOG_LEVEL=debug")
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p
}

func (c *Cluster) stopAll() {
	c.mu.Lock()
	procs := append([]*Proc(nil), c.procs...)
	c.mu.Unlock()
	// Agents first (they kill their children), then the rest.
	for _, p := range procs {
		if strings.HasPrefix(p.Name, "agent") && !p.Exited() {
			p.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range procs {
		if strings.HasPrefix(p.Name, "agent") {
			if p.Wait(10*time.Second) != nil && !p.Exited() {
				p.Signal(syscall.SIGKILL)
			}
		}
	}
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		if !p.Exited() {
			p.Signal(syscall.SIGTERM)
			if p.Wait(5*time.Second) != nil {
				p.Signal(syscall.SIGKILL)
				_ = p.Wait(5 * time.Second)
			}
		}
	}
	if c.nc != nil {
		c.nc.Close()
	}
	if c.t.Failed() {
		// STOKER_TEST_LOGS=dir keeps every process's whole log of a failed
		// test in dir/<test name> (the temp dir goes with the test).
		if dir := os.Getenv("STOKER_TEST_LOGS"); dir != "" {
			out := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(c.t.Name()))
			if err := os.MkdirAll(out, 0o755); err == nil {
				for _, p := range procs {
					if b, err := os.ReadFile(p.Log); err == nil {
						_ = os.WriteFile(filepath.Join(out, filepath.Base(p.Log)), b, 0o644)
					}
				}
				c.t.Logf("every process log kept in %s", out)
			}
		}
		for _, p := range procs {
			b, _ := os.ReadFile(p.Log)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			c.t.Logf("---- %s (%s) ----\n%s", p.Name, p.Log, b)
		}
	}
}

// waitBusNodes waits until every bus node at addrs (host:port) accepts
// connections, then until the store is provisioned: the nodes provision it
// once their JetStream cluster has a meta leader, a while on a loaded
// machine, and services started before it give up.
func (c *Cluster) waitBusNodes(addrs ...string) {
	c.t.Helper()
	c.Eventually(60*time.Second, fmt.Sprintf("the %d bus nodes accepting connections", len(addrs)), func() bool {
		for _, a := range addrs {
			conn, err := net.DialTimeout("tcp", a, 200*time.Millisecond)
			if err != nil {
				return false
			}
			conn.Close()
		}
		return true
	})
	c.Eventually(120*time.Second, "the store provisioned", func() bool {
		js, err := jetstream.New(c.NC())
		if err != nil {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = bus.OpenStore(ctx, js)
		return err == nil
	})
}

// NC is a test client connection to the bus.
func (c *Cluster) NC() *nats.Conn {
	c.t.Helper()
	if c.nc == nil {
		nc, err := bus.Connect(c.URL, bus.ConnectOptions{Name: "e2e-test", ReconnectWait: 50 * time.Millisecond, Creds: c.secureOr(c.AdminCreds()), CA: c.secureOr(c.CA())})
		if err != nil {
			c.t.Fatal(err)
		}
		c.nc = nc
	}
	return c.nc
}

// Store binds to the buckets (they must exist: the bus provisioned them).
func (c *Cluster) Store() *bus.Store {
	c.t.Helper()
	var st *bus.Store
	c.eventually(20*time.Second, "buckets created", func() bool {
		js, err := jetstream.New(c.NC())
		if err != nil {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err = bus.OpenStore(ctx, js)
		return err == nil
	})
	return st
}

// Worker reads a worker record (nil if absent).
func (c *Cluster) Worker(id string) *schemas.Worker {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	w, _, err := bus.Get[schemas.Worker](ctx, c.Store().Workers, id)
	if err != nil {
		return nil
	}
	return w
}

// CLI runs a stoker client command and returns its stdout; it fails the
// test on a non-zero exit unless allowFail.
func (c *Cluster) CLI(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, stokerBin, args...)
	cmd.Env = append(os.Environ(), "STOKER_NATS_URL="+c.URL, "STOKER_CREDS="+c.secureOr(c.AdminCreds()))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// CLIJSON runs a client command with --json and decodes its output into v.
func (c *Cluster) CLIJSON(v any, args ...string) {
	c.t.Helper()
	out, errOut, err := c.CLI(append(args, "--json")...)
	if err != nil {
		c.t.Fatalf("stoker %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		c.t.Fatalf("stoker %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (c *Cluster) eventually(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	bustest.Eventually(c.t, timeout, what, cond)
}

// Eventually polls cond until it holds.
func (c *Cluster) Eventually(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	c.eventually(timeout, what, cond)
}

// Dir2 points the bus at a fresh, empty data directory (for the next StartBus).
func (c *Cluster) Dir2() {
	c.Dir = c.t.TempDir()
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func jsonInto(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func asBusError(err error, target **bus.Error) bool { return errors.As(err, target) }
