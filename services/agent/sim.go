package agent

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// SimLauncher is the launcher of a simulated agent (stoker agent
// --simulate): it starts no process and writes nothing to disk. A child
// "runs" until it is signalled (SIGTERM or SIGKILL end it at once, with
// 128+signal as a process would), or until RunTime has passed (exit 0),
// and a FailRate fraction of the children fail instead (exit 1, after
// RunTime or at once when RunTime is 0). Everything else the agent does,
// registration, heartbeats, commands, epoch fencing, ordered state reports
// and answers to recovery, is the real agent's code.
type SimLauncher struct {
	// RunTime after which a child exits on its own; 0: it runs until killed.
	RunTime time.Duration
	// FailRate in [0,1]: the chance that a child fails (exit code 1).
	FailRate float64
	// Rand returns a float in [0,1) for the failure draw. Default math/rand/v2.
	Rand func() float64
}

// simPIDBase is above Linux's largest pid (PID_MAX_LIMIT, 2^22), so a
// simulated pid is never a real process's.
const simPIDBase = 1 << 22

var simPIDs atomic.Int64

// SimExitMessage is the message of a simulated child that failed.
const SimExitMessage = "simulated failure (exit code 1)"

// Launch implements Launcher.
func (l *SimLauncher) Launch(ChildSpec) (Child, error) {
	c := &simChild{pid: simPIDBase + int(simPIDs.Add(1)), done: make(chan struct{})}
	draw := rand.Float64
	if l.Rand != nil {
		draw = l.Rand
	}
	fail := l.FailRate > 0 && draw() < l.FailRate
	switch {
	case fail && l.RunTime <= 0:
		c.end(1, SimExitMessage)
	case fail:
		c.timer = time.AfterFunc(l.RunTime, func() { c.end(1, SimExitMessage) })
	case l.RunTime > 0:
		c.timer = time.AfterFunc(l.RunTime, func() { c.end(0, "") })
	}
	return c, nil
}

// simChild is a Child that is no process.
type simChild struct {
	pid   int
	once  sync.Once
	done  chan struct{}
	timer *time.Timer
	code  int
	msg   string
}

func (c *simChild) PID() int { return c.pid }

func (c *simChild) end(code int, msg string) {
	c.once.Do(func() {
		c.code, c.msg = code, msg
		close(c.done)
	})
}

// Signal ends the child for SIGTERM and SIGKILL, as a process that does
// not catch them; other signals are ignored.
func (c *simChild) Signal(sig syscall.Signal) {
	if sig != syscall.SIGTERM && sig != syscall.SIGKILL {
		return
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	c.end(128+int(sig), "terminated by signal "+sig.String())
}

func (c *simChild) Wait() (int, string) {
	<-c.done
	return c.code, c.msg
}
