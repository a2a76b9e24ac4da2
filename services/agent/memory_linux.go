//go:build linux

package agent

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupRoot is where cgroup v2 is mounted.
const cgroupRoot = "/sys/fs/cgroup"

// newMemoryEnforcer picks how executors' memory is enforced for mode, with
// parent the cgroup to create executors' cgroups in ("": the agent's own).
// warning is set when memory goes unenforced in auto mode.
func newMemoryEnforcer(mode, parent string) (m *memoryEnforcer, warning string, err error) {
	switch mode {
	case EnforceOff:
		return nil, "", nil
	case EnforceRlimit:
		return &memoryEnforcer{mode: EnforceRlimit}, "", nil
	case EnforceCgroup, EnforceAuto, "":
	default:
		return nil, "", fmt.Errorf("agent: enforce-memory %q: want one of %s", mode, strings.Join(EnforceModes, ", "))
	}
	dir, cerr := cgroupParent(parent)
	if cerr == nil {
		return &memoryEnforcer{mode: EnforceCgroup, parent: dir}, "", nil
	}
	if mode == EnforceCgroup {
		return nil, "", fmt.Errorf("agent: --enforce-memory=cgroup: %w", cerr)
	}
	return nil, fmt.Sprintf("memory grants are NOT enforced: an executor can use more than it was granted (no cgroup v2 to use: %v; "+
		"run the agent with a delegated cgroup, give --cgroup-parent, or choose --enforce-memory=rlimit, best effort)", cerr), nil
}

// cgroupParent finds a cgroup v2 directory where the agent may create
// executors' cgroups with the memory controller: parent if given (the
// memory controller is enabled for its children), else the agent's own
// cgroup, if the agent is its only process (it moves itself into a leaf
// "agent" child first, as cgroup v2 allows no process beside controlled
// children).
func cgroupParent(parent string) (string, error) {
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err != nil {
		return "", fmt.Errorf("%s is not a cgroup v2 mount", cgroupRoot)
	}
	own := parent == ""
	if own {
		b, err := os.ReadFile("/proc/self/cgroup")
		if err != nil {
			return "", err
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok {
				parent = filepath.Join(cgroupRoot, p)
			}
		}
		if parent == "" {
			return "", errors.New("the agent's cgroup v2 path is unknown")
		}
	}
	ctl, err := os.ReadFile(filepath.Join(parent, "cgroup.controllers"))
	if err != nil {
		return "", fmt.Errorf("cgroup %s: %w", parent, err)
	}
	if !slices.Contains(strings.Fields(string(ctl)), "memory") {
		return "", fmt.Errorf("the memory controller is not delegated to %s", parent)
	}
	if own {
		if err := leaveForLeaf(parent); err != nil {
			return "", err
		}
	}
	if err := enableMemory(parent); err != nil {
		return "", err
	}
	// A probe: the agent may create a child with memory.max.
	probe := filepath.Join(parent, fmt.Sprintf("stoker-probe-%d", os.Getpid()))
	if err := os.Mkdir(probe, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("cannot create a cgroup in %s: %w", parent, err)
	}
	defer os.Remove(probe)
	if _, err := os.Stat(filepath.Join(probe, "memory.max")); err != nil {
		return "", fmt.Errorf("a cgroup in %s has no memory.max", parent)
	}
	return parent, nil
}

// leaveForLeaf moves the agent into parent/agent, when it is parent's only
// process, so parent may enable controllers for its children.
func leaveForLeaf(parent string) error {
	b, err := os.ReadFile(filepath.Join(parent, "cgroup.procs"))
	if err != nil {
		return err
	}
	self := strconv.Itoa(os.Getpid())
	for _, p := range strings.Fields(string(b)) {
		if p != self {
			return fmt.Errorf("cgroup %s holds other processes than the agent (pid %s)", parent, p)
		}
	}
	if len(strings.Fields(string(b))) == 0 {
		return nil // already in a leaf below parent
	}
	leaf := filepath.Join(parent, "agent")
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cannot create %s: %w", leaf, err)
	}
	if err := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(self), 0); err != nil {
		return fmt.Errorf("cannot move the agent into %s: %w", leaf, err)
	}
	return nil
}

// enableMemory enables the memory controller for parent's children.
func enableMemory(parent string) error {
	b, _ := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
	if slices.Contains(strings.Fields(string(b)), "memory") {
		return nil
	}
	if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+memory"), 0); err != nil {
		return fmt.Errorf("cannot enable the memory controller in %s: %w", parent, err)
	}
	return nil
}

// prepare sets an executor's limit up before it starts: a cgroup with
// memory.max that clone puts the child in (cgroup), or nothing yet (rlimit).
func (m *memoryEnforcer) prepare(cmd *exec.Cmd, spec ChildSpec) (*memoryGrant, error) {
	if m == nil || spec.Driver || spec.MemoryMB <= 0 {
		return nil, nil
	}
	g := &memoryGrant{mode: m.mode, memoryMB: spec.MemoryMB, stderr: filepath.Join(spec.Dir, stderrFile)}
	if m.mode != EnforceCgroup {
		return g, nil
	}
	// Unique: two agents of one process (tests) may run the same key.
	g.cgroup = filepath.Join(m.parent, fmt.Sprintf("stoker-%s-%d", spec.Key, time.Now().UnixNano()))
	if err := os.Mkdir(g.cgroup, 0o755); err != nil {
		return nil, fmt.Errorf("memory cgroup: %w", err)
	}
	limit := strconv.FormatInt(spec.MemoryMB<<20, 10)
	if err := os.WriteFile(filepath.Join(g.cgroup, "memory.max"), []byte(limit), 0); err != nil {
		_ = os.Remove(g.cgroup)
		return nil, fmt.Errorf("memory cgroup: set memory.max: %w", err)
	}
	// Past the grant means past it: no swap to spill into (absent without swap accounting).
	_ = os.WriteFile(filepath.Join(g.cgroup, "memory.swap.max"), []byte("0"), 0)
	fd, err := os.Open(g.cgroup)
	if err != nil {
		_ = os.Remove(g.cgroup)
		return nil, fmt.Errorf("memory cgroup: %w", err)
	}
	g.fd = fd
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(fd.Fd())
	return g, nil
}

// started applies what needs the child's pid: RLIMIT_AS.
func (g *memoryGrant) started(pid int) error {
	if g == nil {
		return nil
	}
	if g.fd != nil {
		_ = g.fd.Close()
		g.fd = nil
	}
	if g.mode != EnforceRlimit {
		return nil
	}
	lim := uint64(g.memoryMB) << 20
	if err := unix.Prlimit(pid, unix.RLIMIT_AS, &unix.Rlimit{Cur: lim, Max: lim}, nil); err != nil {
		return fmt.Errorf("set RLIMIT_AS: %w", err)
	}
	return nil
}

// release removes the executor's cgroup once it ended.
func (g *memoryGrant) release() {
	if g == nil {
		return
	}
	if g.fd != nil {
		_ = g.fd.Close()
	}
	if g.cgroup != "" {
		_ = os.Remove(g.cgroup)
	}
}
