package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/stoker/stoker/schemas"
)

// Log file names inside a child's work directory, and the credential the
// launch command carried (0600; the child finds it through STOKER_CREDS).
const (
	stdoutFile = "stdout"
	stderrFile = "stderr"
	credsFile  = "nats.creds"
)

// kind tells executors from drivers.
type kind int

const (
	kindExecutor kind = iota
	kindDriver
)

func (k kind) String() string {
	if k == kindDriver {
		return "driver"
	}
	return "executor"
}

// runner is one executor or driver, Spark's ExecutorRunner / DriverRunner.
// Fields after the lock line are guarded by Service.mu.
type runner struct {
	creds     string // the launch command's credential, written to credsFile
	kind      kind
	key       string // "<appid>.<execid>" or the driver id
	appID     string
	execID    int
	driverID  string
	argv      []string
	env       []string // complete environment of the child
	cores     int
	memoryMB  int64
	supervise bool
	dir       string

	// killCh is closed on the first kill request (the kill path). Stopping
	// the agent does not close it: that is the shutdown path, which ends
	// the child without reporting it KILLED to the cluster.
	killCh chan struct{}

	// ---- guarded by Service.mu ----
	child    Child
	pid      int
	gen      int  // incremented on every start, so a late SIGKILL timer spares a new process
	running  bool // a process is started and not yet reaped
	killed   bool // a kill was requested
	attempt  int
	state    string
	exitCode *int
	message  string
	// launchErr is why the process could not be started ("" once it ran).
	launchErr string
	timer     *time.Timer // SIGKILL escalation
}

// stateChange is the report for the runner's current state. Callers hold Service.mu.
func (r *runner) stateChangeLocked(wid, instance string) schemas.StateChange {
	sc := schemas.StateChange{
		WorkerID: wid,
		Instance: instance,
		State:    r.state,
		ExitCode: r.exitCode,
		PID:      r.pid,
		Message:  r.message,
		Error:    r.launchErr,
		At:       time.Now().UTC(),
	}
	if r.kind == kindDriver {
		sc.DriverID = r.driverID
		sc.Attempt = r.attempt
	} else {
		sc.AppID = r.appID
		sc.ExecutorID = r.execID
	}
	return sc
}

// writeSecret writes b to path, readable by the owner only.
func writeSecret(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Launcher starts a runner's child. The agent forks real processes
// (ProcessLauncher, the default); a simulated agent (SimLauncher) starts
// none, so thousands of agents fit in one process while everything else,
// registration, heartbeats, commands, fencing and reports, stays the same code.
type Launcher interface {
	Launch(spec ChildSpec) (Child, error)
}

// ChildSpec is what a launcher needs to start one executor or driver.
type ChildSpec struct {
	Driver bool   // a driver, else an executor
	Key    string // "<appid>.<execid>" or the driver id
	Argv   []string
	// Env is the child's complete environment.
	Env []string
	// Dir is the child's work directory (stdout and stderr live there).
	Dir string
	// Creds is the launch command's credential, written to Dir/nats.creds
	// (a string: the command's own, not a copy per launch).
	Creds string
	// MemoryMB is the grant, enforced on executors where the launcher can.
	MemoryMB int64
}

// Child is a started executor or driver.
type Child interface {
	// PID is the process id reported to the cluster.
	PID() int
	// Signal sends sig to the child (a process: to its process group).
	Signal(sig syscall.Signal)
	// Wait blocks until the child ended and returns its exit code (128+signal
	// when a signal ended it) and a message ("" for exit code 0).
	Wait() (code int, message string)
}

// startLocked starts a new child for r through the launcher. Callers hold Service.mu.
func (r *runner) startLocked(l Launcher) error {
	c, err := l.Launch(ChildSpec{Driver: r.kind == kindDriver, Key: r.key, Argv: r.argv, Env: r.env, Dir: r.dir, Creds: r.creds,
		MemoryMB: r.memoryMB})
	if err != nil {
		return err
	}
	r.child = c
	r.pid = c.PID()
	r.gen++
	r.running = true
	r.exitCode = nil
	r.message = ""
	return nil
}

// ProcessLauncher starts real processes: in the child's work directory,
// with stdout and stderr appended to the files there (a relaunched driver
// keeps the output of earlier attempts), in a process group of its own,
// executors held to their memory grant as the agent's Config.EnforceMemory
// chose (the zero value enforces nothing). With LogMaxBytes > 0 the agent
// copies the child's output through a pipe into files rolled at that size,
// keeping LogMaxFiles rolled ones (stdout.1 the newest), as Spark's
// executor log rolling does.
type ProcessLauncher struct {
	mem         *memoryEnforcer
	LogMaxBytes int64
	LogMaxFiles int
}

// Launch implements Launcher.
func (l ProcessLauncher) Launch(spec ChildSpec) (Child, error) {
	if err := os.MkdirAll(spec.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create work dir: %w", err)
	}
	env := spec.Env
	if len(spec.Creds) > 0 {
		path := filepath.Join(spec.Dir, credsFile)
		if err := writeSecret(path, []byte(spec.Creds)); err != nil {
			return nil, fmt.Errorf("write credentials: %w", err)
		}
		env = append(env[:len(env):len(env)], schemas.EnvEntry(schemas.EnvCreds, path))
	}
	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Dir = spec.Dir
	cmd.Env = env
	var rolled []io.Closer
	if l.LogMaxBytes > 0 {
		// exec copies the child's pipes into them; Wait waits for the copy.
		for _, out := range []struct {
			name string
			to   *io.Writer
		}{{stdoutFile, &cmd.Stdout}, {stderrFile, &cmd.Stderr}} {
			rf, err := openRolling(filepath.Join(spec.Dir, out.name), l.LogMaxBytes, l.LogMaxFiles)
			if err != nil {
				closeAll(rolled)
				return nil, err
			}
			*out.to, rolled = rf, append(rolled, rf)
		}
	} else {
		stdout, err := openLog(filepath.Join(spec.Dir, stdoutFile))
		if err != nil {
			return nil, err
		}
		defer stdout.Close()
		stderr, err := openLog(filepath.Join(spec.Dir, stderrFile))
		if err != nil {
			return nil, err
		}
		// The child holds its own descriptors once started; ours are closed on return.
		defer stderr.Close()
		cmd.Stdout = stdout
		cmd.Stderr = stderr
	}
	grant, err := l.mem.prepare(cmd, spec)
	if err != nil {
		closeAll(rolled)
		return nil, err
	}
	// Its own process group, so SIGTERM and SIGKILL reach whatever it forks,
	// and a parent-death signal (see spawn_linux.go).
	if err := startChild(cmd); err != nil {
		grant.release()
		closeAll(rolled)
		return nil, err
	}
	p := &process{cmd: cmd, pid: cmd.Process.Pid, grant: grant, logs: rolled}
	if err := grant.started(p.pid); err != nil {
		// Never run an executor past a limit that was asked for.
		p.Signal(syscall.SIGKILL)
		p.Wait()
		return nil, err
	}
	return p, nil
}

func closeAll(cs []io.Closer) {
	for _, c := range cs {
		_ = c.Close()
	}
}

// process is a Child that is an OS process.
type process struct {
	cmd   *exec.Cmd
	pid   int
	grant *memoryGrant // nil: memory not enforced
	logs  []io.Closer  // rolled log files, closed once the output is copied
}

func (p *process) PID() int { return p.pid }

// Signal sends sig to the process group; the leader alone if it left the group.
func (p *process) Signal(sig syscall.Signal) {
	if p.pid <= 0 {
		return
	}
	if err := syscall.Kill(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		_ = syscall.Kill(p.pid, sig)
	}
}

func (p *process) Wait() (int, string) {
	err := p.cmd.Wait()
	closeAll(p.logs)
	code, msg := exitStatus(p.cmd.ProcessState, err)
	if v := p.grant.verdict(code); v != "" {
		msg = v
	}
	p.grant.release()
	return code, msg
}

func openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", filepath.Base(path), err)
	}
	return f, nil
}

// signalLocked sends sig to the child. Callers hold Service.mu.
func (r *runner) signalLocked(sig syscall.Signal) {
	if !r.running || r.child == nil {
		return
	}
	r.child.Signal(sig)
}

// terminateLocked sends SIGTERM now and SIGKILL after grace if the same
// child is still running. lock is Service.mu (the timer takes it).
// Callers hold Service.mu.
func (r *runner) terminateLocked(grace time.Duration, lock sync.Locker) {
	if !r.running || r.timer != nil {
		return
	}
	r.signalLocked(syscall.SIGTERM)
	gen := r.gen
	r.timer = time.AfterFunc(grace, func() {
		lock.Lock()
		defer lock.Unlock()
		if r.running && r.gen == gen {
			r.signalLocked(syscall.SIGKILL)
		}
	})
}

// reapedLocked records that the child was reaped. Callers hold Service.mu.
func (r *runner) reapedLocked() {
	if r.timer != nil {
		// It was terminated (kill or shutdown): whatever the leader left
		// behind in its group goes with it.
		r.timer.Stop()
		r.timer = nil
		if r.child != nil {
			r.child.Signal(syscall.SIGKILL)
		}
	}
	r.running = false
}

// exitStatus turns a reaped process's state into an exit code and a
// message: a process ended by a signal gets 128+signal, as a shell says.
func exitStatus(ps *os.ProcessState, waitErr error) (int, string) {
	if ps == nil {
		return -1, fmt.Sprintf("wait: %v", waitErr)
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), "terminated by signal " + ws.Signal().String()
	}
	code := ps.ExitCode()
	if code == 0 {
		return 0, ""
	}
	return code, "exit code " + strconv.Itoa(code)
}
