//go:build !linux

package agent

import (
	"os/exec"
	"syscall"
)

// startChild starts cmd in its own process group. Without Linux's
// parent-death signal, children of a SIGKILLed agent survive it.
func startChild(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	return cmd.Start()
}
