package agent

// Memory enforcement: an executor granted N MB is held to it where the OS
// allows (cgroup v2 memory.max, or RLIMIT_AS on request), and one killed
// for memory is reported as such.

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Memory enforcement modes (Config.EnforceMemory, stoker agent --enforce-memory).
const (
	// EnforceAuto uses a cgroup when the agent may create one, else nothing
	// (with one warning at start). It does not fall back to RLIMIT_AS on
	// its own: that limits address space, not memory, and Go and JVM
	// executors reserve far more than they use (a Go hello world maps
	// 1.2 GB), so it would fail executors that fit their grant.
	EnforceAuto = "auto"
	// EnforceCgroup requires cgroup v2: a sub-cgroup per executor with
	// memory.max set to its grant; the kernel OOM-kills past it.
	EnforceCgroup = "cgroup"
	// EnforceRlimit sets RLIMIT_AS to the grant on each executor right
	// after it starts (best effort: address space, applied after exec).
	EnforceRlimit = "rlimit"
	// EnforceOff: memory grants are bookkeeping only.
	EnforceOff = "off"
)

// EnforceModes lists the valid modes, for flags and errors.
var EnforceModes = []string{EnforceAuto, EnforceCgroup, EnforceRlimit, EnforceOff}

// memoryEnforcer holds executors to their memory grants. nil enforces nothing.
type memoryEnforcer struct {
	mode string // EnforceCgroup or EnforceRlimit
	// parent is the cgroup directory executors' cgroups are created in.
	parent string
}

// Describe says how memory is enforced, for the agent's start log.
func (m *memoryEnforcer) describe() string {
	switch {
	case m == nil:
		return "not enforced"
	case m.mode == EnforceCgroup:
		return "cgroup v2 memory.max per executor under " + m.parent
	}
	return "RLIMIT_AS per executor (best effort: address space, set right after start)"
}

// memoryGrant is one executor's limit while it runs.
type memoryGrant struct {
	mode     string
	memoryMB int64
	cgroup   string   // the executor's cgroup directory (cgroup mode)
	fd       *os.File // open on cgroup, handed to clone (cgroup mode)
	stderr   string   // the executor's stderr file (rlimit mode)
}

// oomMessage is what an executor killed for memory reports.
func oomMessage(memoryMB int64) string {
	return fmt.Sprintf("killed: exceeded its memory grant of %d MB (OOM)", memoryMB)
}

// rlimitMessage is what an executor that failed an allocation under
// RLIMIT_AS reports.
func rlimitMessage(memoryMB int64) string {
	return fmt.Sprintf("failed: exceeded its memory grant of %d MB (an allocation failed under RLIMIT_AS; best effort)", memoryMB)
}

// allocationFailures are what runtimes print when an allocation fails.
var allocationFailures = []string{
	"out of memory",            // Go ("fatal error: runtime: out of memory"), many C programs
	"cannot allocate memory",   // ENOMEM via strerror
	"memoryerror",              // Python
	"outofmemoryerror",         // JVM
	"std::bad_alloc",           // C++
	"memory allocation of",     // Rust ("memory allocation of N bytes failed")
	"failed to reserve page",   // Go, other wording
	"mmap: cannot allocate",    // shells, loaders
	"virtual memory exhausted", // GNU tools
}

// looksLikeAllocationFailure reports whether the end of an executor's
// stderr says an allocation failed.
func looksLikeAllocationFailure(tail []byte) bool {
	low := bytes.ToLower(tail)
	for _, s := range allocationFailures {
		if bytes.Contains(low, []byte(s)) {
			return true
		}
	}
	return false
}

// readTail is the last n bytes of the file at path (nil if unreadable).
func readTail(path string, n int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(fi.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, n))
	return b
}

// oomKills reads the oom_kill count from a cgroup's memory.events.
func oomKills(cgroup string) int64 {
	b, err := os.ReadFile(filepath.Join(cgroup, "memory.events"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		var n int64
		if _, err := fmt.Sscanf(line, "oom_kill %d", &n); err == nil {
			return n
		}
	}
	return 0
}

// verdict is the message of an executor that ended with code under g: the
// memory message when memory ended it, else "".
func (g *memoryGrant) verdict(code int) string {
	if g == nil || code == 0 {
		return ""
	}
	switch g.mode {
	case EnforceCgroup:
		if oomKills(g.cgroup) > 0 {
			return oomMessage(g.memoryMB)
		}
	case EnforceRlimit:
		if looksLikeAllocationFailure(readTail(g.stderr, 8<<10)) {
			return rlimitMessage(g.memoryMB)
		}
	}
	return ""
}
