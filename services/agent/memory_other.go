//go:build !linux

package agent

import (
	"errors"
	"os/exec"
)

// newMemoryEnforcer: only Linux enforces memory.
func newMemoryEnforcer(mode, _ string) (*memoryEnforcer, string, error) {
	if mode == EnforceCgroup || mode == EnforceRlimit {
		return nil, "", errors.New("agent: --enforce-memory=" + mode + " needs Linux")
	}
	if mode == EnforceOff {
		return nil, "", nil
	}
	return nil, "memory grants are not enforced on this OS: an executor can use more than it was granted", nil
}

func (m *memoryEnforcer) prepare(*exec.Cmd, ChildSpec) (*memoryGrant, error) { return nil, nil }
func (g *memoryGrant) started(int) error                                     { return nil }
func (g *memoryGrant) release()                                              {}
