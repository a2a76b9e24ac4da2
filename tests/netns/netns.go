// Package netns is the partition harness of the end-to-end tests: each
// process a test starts (a `stoker bus` node, a service, an agent) can run
// in a network namespace of its own, and the test cuts, heals, delays and
// drops the links between them as a real network would, with no change to
// the code under test.
//
// Layout: one "hub" namespace holds a Linux bridge; every node namespace is
// joined to it by a veth pair (eth0 inside the node, v<N> on the bridge),
// and the test process itself by one more pair (the observer link, never
// cut), so the test can talk to every node. Faults are nftables rules in
// the hub's bridge-family forward chain: frames are dropped silently, in
// the bridge, so senders see no error (the half-open sockets of a real
// partition), and one direction can be dropped without the other. Delay
// uses tc netem on the node's links, where the kernel has it.
//
// Names are unique per test process and test (prefix "stk<pid>-<k>-"), the
// subnet 10.213.<k>.0/24 is chosen under a file lock so parallel test
// processes never share one, and everything is removed by t.Cleanup, also
// when the test fails; namespaces left by a test process that died are
// removed by the next New. Tests send traffic only to loopback and to the
// namespaces they made.
//
// It needs root, iproute2 (ip) and nftables (nft); New skips the test with
// the reason when namespaces cannot be made. It does not promise delay
// (Delay reports ErrNoNetem where the kernel lacks sch_netem).
package netns

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ErrNoNetem is returned by Delay when the kernel has no netem qdisc.
var ErrNoNetem = errors.New("netns: tc netem is not available in this kernel (sch_netem)")

// lockFile serialises subnet choice and stale clean-up between test
// processes on one machine.
const lockFile = "/tmp/stoker-netns.lock"

// Net is one test's namespaces, bridge and faults.
type Net struct {
	t      testing.TB
	prefix string // "stk<pid>-<k>-"
	hub    string // the hub namespace
	obs    string // the observer veth on the host
	subnet string // "10.213.<k>."

	mu    sync.Mutex
	nodes []*Node
	rules map[string][]string // fault name → nft rules
}

// Node is one network namespace on the bridge.
type Node struct {
	Name string
	NS   string // namespace name, for `ip netns exec`
	IP   string
	port string // its veth on the bridge
	net  *Net
}

// Available reports why namespaces cannot be made here, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("not root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: %v", tool, err)
		}
	}
	return nil
}

// New makes the hub and the observer link, or skips the test when
// namespaces cannot be made. Everything is removed at cleanup.
func New(t testing.TB) *Net {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("partition harness unavailable: %v (needs root, iproute2 and nftables)", err)
	}
	unlock := lock(t)
	defer unlock()
	removeStale()
	k := freeSubnet(t)
	n := &Net{t: t, prefix: fmt.Sprintf("stk%d-%d-", os.Getpid(), k), subnet: fmt.Sprintf("10.213.%d.", k),
		obs: fmt.Sprintf("stko%d", k), rules: map[string][]string{}}
	n.hub = n.prefix + "hub"
	t.Cleanup(n.destroy)
	if err := run("ip", "netns", "add", n.hub); err != nil {
		t.Skipf("partition harness unavailable: cannot make a network namespace: %v", err)
	}
	n.must("ip", "-n", n.hub, "link", "set", "lo", "up")
	n.must("ip", "-n", n.hub, "link", "add", "br0", "type", "bridge")
	n.must("ip", "-n", n.hub, "link", "set", "br0", "up")
	n.must("ip", "link", "add", n.obs, "type", "veth", "peer", "name", "obs", "netns", n.hub)
	n.must("ip", "-n", n.hub, "link", "set", "obs", "master", "br0", "up")
	n.must("ip", "addr", "add", n.subnet+"1/24", "dev", n.obs)
	n.must("ip", "link", "set", n.obs, "up")
	n.nft("add table bridge stoker\nadd chain bridge stoker faults { type filter hook forward priority 0; policy accept; }\n")
	return n
}

// HostIP is the test process's own address on the bridge.
func (n *Net) HostIP() string { return n.subnet + "1" }

// Node makes a namespace named name joined to the bridge, with loopback
// up and an address of its own.
func (n *Net) Node(name string) *Node {
	n.t.Helper()
	n.mu.Lock()
	i := len(n.nodes) + 2
	n.mu.Unlock()
	nd := &Node{Name: name, NS: n.prefix + name, IP: n.subnet + strconv.Itoa(i), port: "v" + strconv.Itoa(i), net: n}
	n.must("ip", "netns", "add", nd.NS)
	n.mu.Lock()
	n.nodes = append(n.nodes, nd)
	n.mu.Unlock()
	n.must("ip", "-n", nd.NS, "link", "set", "lo", "up")
	n.must("ip", "-n", n.hub, "link", "add", nd.port, "type", "veth", "peer", "name", "eth0", "netns", nd.NS)
	n.must("ip", "-n", n.hub, "link", "set", nd.port, "master", "br0", "up")
	n.must("ip", "-n", nd.NS, "addr", "add", nd.IP+"/24", "dev", "eth0")
	n.must("ip", "-n", nd.NS, "link", "set", "eth0", "up")
	return nd
}

// Command is name run inside the node's namespace.
func (nd *Node) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", nd.NS, name}, args...)...)
}

// Wrap is argv prefixed to run inside the node's namespace (`ip netns exec`
// execs argv[0] in place, so the pid a caller gets is the program's).
func (nd *Node) Wrap(argv ...string) []string {
	return append([]string{"ip", "netns", "exec", nd.NS}, argv...)
}

// Cut drops everything to and from each node (the observer link too).
func (n *Net) Cut(nodes ...*Node) {
	for _, nd := range nodes {
		n.set("cut/"+nd.Name, fmt.Sprintf("iifname %q drop", nd.port), fmt.Sprintf("oifname %q drop", nd.port))
	}
}

// DropIn drops what is sent to the node; what it sends still arrives.
func (n *Net) DropIn(nd *Node) { n.set("in/"+nd.Name, fmt.Sprintf("oifname %q drop", nd.port)) }

// DropOut drops what the node sends; what is sent to it still arrives.
func (n *Net) DropOut(nd *Node) { n.set("out/"+nd.Name, fmt.Sprintf("iifname %q drop", nd.port)) }

// Partition drops everything between the nodes of a and those of b; nodes
// on one side still reach each other (and the observer reaches all).
func (n *Net) Partition(a, b []*Node) {
	pa, pb := ports(a), ports(b)
	n.set("partition/"+strings.Join(names(a), ",")+"|"+strings.Join(names(b), ","),
		fmt.Sprintf("iifname { %s } oifname { %s } drop", pa, pb),
		fmt.Sprintf("iifname { %s } oifname { %s } drop", pb, pa))
}

// Heal removes every fault: cuts, drops and partitions (delays stay).
func (n *Net) Heal() {
	n.mu.Lock()
	n.rules = map[string][]string{}
	n.mu.Unlock()
	n.apply()
}

// HealNode removes the faults that name nd alone (Cut, DropIn, DropOut).
func (n *Net) HealNode(nd *Node) {
	n.mu.Lock()
	for _, k := range []string{"cut/", "in/", "out/"} {
		delete(n.rules, k+nd.Name)
	}
	n.mu.Unlock()
	n.apply()
}

// Delay adds d to every packet the node sends and receives (netem on both
// ends of its link); 0 removes it. ErrNoNetem where the kernel lacks it.
func (n *Net) Delay(nd *Node, d time.Duration) error {
	ends := [][]string{{"-n", nd.NS, "qdisc", "%s", "dev", "eth0", "root"}, {"-n", n.hub, "qdisc", "%s", "dev", nd.port, "root"}}
	for _, e := range ends {
		args := slices.Clone(e)
		if d <= 0 {
			args[3] = "del"
			_ = run("tc", args...)
			continue
		}
		args[3] = "replace"
		args = append(args, "netem", "delay", fmt.Sprintf("%dus", d.Microseconds()))
		var stderr bytes.Buffer
		cmd := exec.Command("tc", args...)
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			if strings.Contains(stderr.String(), "unknown") {
				return ErrNoNetem
			}
			return fmt.Errorf("tc %s: %v: %s", strings.Join(args, " "), err, stderr.String())
		}
	}
	return nil
}

// set records one named fault and applies the whole rule set.
func (n *Net) set(name string, rules ...string) {
	n.t.Helper()
	n.mu.Lock()
	n.rules[name] = rules
	n.mu.Unlock()
	n.apply()
}

// apply replaces the chain's rules with the current faults, atomically.
func (n *Net) apply() {
	n.t.Helper()
	n.mu.Lock()
	var b strings.Builder
	b.WriteString("flush chain bridge stoker faults\n")
	for _, k := range slices.Sorted(maps.Keys(n.rules)) {
		for _, r := range n.rules[k] {
			fmt.Fprintf(&b, "add rule bridge stoker faults %s\n", r)
		}
	}
	n.mu.Unlock()
	n.nft(b.String())
}

func (n *Net) nft(script string) {
	n.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", n.hub, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		n.t.Fatalf("netns: nft: %v: %s\n%s", err, out, script)
	}
}

func (n *Net) must(name string, args ...string) {
	n.t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		n.t.Fatalf("netns: %s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// destroy kills what still runs in the test's namespaces and removes them.
func (n *Net) destroy() {
	n.mu.Lock()
	nodes := slices.Clone(n.nodes)
	n.mu.Unlock()
	for _, nd := range nodes {
		killIn(nd.NS)
		_ = run("ip", "netns", "del", nd.NS)
	}
	_ = run("ip", "link", "del", n.obs)
	_ = run("ip", "netns", "del", n.hub)
}

// killIn SIGKILLs every process in namespace ns.
func killIn(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// lock takes the machine-wide harness lock.
func lock(t testing.TB) func() {
	t.Helper()
	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Skipf("partition harness unavailable: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Skipf("partition harness unavailable: lock %s: %v", lockFile, err)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }
}

// freeSubnet is a k in 1..254 whose 10.213.k.0/24 no observer link on this
// host uses. Caller holds the lock.
func freeSubnet(t testing.TB) int {
	t.Helper()
	out, err := exec.Command("ip", "-o", "addr", "show").Output()
	if err != nil {
		t.Skipf("partition harness unavailable: ip addr: %v", err)
	}
	used := string(out)
	start := os.Getpid()%254 + 1
	for i := range 254 {
		k := (start+i-1)%254 + 1
		if !strings.Contains(used, fmt.Sprintf("10.213.%d.", k)) {
			return k
		}
	}
	t.Skip("partition harness unavailable: no free 10.213.k.0/24 subnet")
	return 0
}

// removeStale removes namespaces and observer links of test processes that
// died without cleaning up. Caller holds the lock.
func removeStale() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	dead := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "stk") {
			continue
		}
		rest := strings.TrimPrefix(f[0], "stk")
		i := strings.IndexByte(rest, '-')
		if i <= 0 {
			continue
		}
		pid, err := strconv.Atoi(rest[:i])
		if err != nil || alive(pid) {
			continue
		}
		killIn(f[0])
		_ = run("ip", "netns", "del", f[0])
		if parts := strings.SplitN(rest, "-", 3); len(parts) == 3 && parts[2] == "hub" && !dead[parts[1]] {
			dead[parts[1]] = true
			_ = run("ip", "link", "del", "stko"+parts[1])
		}
	}
}

func alive(pid int) bool {
	_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	return err == nil
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

func ports(nodes []*Node) string {
	var p []string
	for _, nd := range nodes {
		p = append(p, fmt.Sprintf("%q", nd.port))
	}
	return strings.Join(p, ", ")
}

func names(nodes []*Node) []string {
	var s []string
	for _, nd := range nodes {
		s = append(s, nd.Name)
	}
	return s
}
