package agent

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// Children must not outlive a SIGKILLed agent ("nothing a dead client
// started may run forever"). Linux's parent-death signal does that, but it
// fires when the *thread* that forked the child exits, and Go retires
// threads at will. So every child is started from one goroutine locked to
// its OS thread for the life of the process: that thread only ends with the
// agent, and then the kernel SIGKILLs the children.

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnOnce sync.Once
	spawnCh   chan spawnReq
)

func spawner() {
	runtime.LockOSThread() // never unlocked: the thread lives as long as the process
	for req := range spawnCh {
		req.done <- req.cmd.Start()
	}
}

// startChild starts cmd in its own process group with a parent-death signal.
func startChild(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnCh = make(chan spawnReq)
		go spawner()
	})
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	done := make(chan error, 1)
	spawnCh <- spawnReq{cmd: cmd, done: done}
	return <-done
}
