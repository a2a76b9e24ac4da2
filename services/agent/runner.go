package agent

import (
	"errors"
	"fmt"
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
	creds     []byte // the launch command's credential, written to credsFile
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
	cmd      *exec.Cmd
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

// startLocked starts a new process for r in its work directory, with stdout
// and stderr appended to the files there (a relaunched driver keeps the
// output of earlier attempts). Callers hold Service.mu.
func (r *runner) startLocked() error {
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return fmt.Errorf("create work dir: %w", err)
	}
	if len(r.creds) > 0 {
		path := filepath.Join(r.dir, credsFile)
		if err := writeSecret(path, r.creds); err != nil {
			return fmt.Errorf("write credentials: %w", err)
		}
		r.env = append(r.env, schemas.EnvEntry(schemas.EnvCreds, path))
	}
	stdout, err := openLog(filepath.Join(r.dir, stdoutFile))
	if err != nil {
		return err
	}
	defer stdout.Close()
	stderr, err := openLog(filepath.Join(r.dir, stderrFile))
	if err != nil {
		return err
	}
	// The child holds its own descriptors once started; ours are closed on return.
	defer stderr.Close()
	cmd := exec.Command(r.argv[0], r.argv[1:]...)
	cmd.Dir = r.dir
	cmd.Env = r.env
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	// Its own process group, so SIGTERM and SIGKILL reach whatever it forks,
	// and a parent-death signal (see spawn_linux.go).
	if err := startChild(cmd); err != nil {
		return err
	}
	r.cmd = cmd
	r.pid = cmd.Process.Pid
	r.gen++
	r.running = true
	r.exitCode = nil
	r.message = ""
	return nil
}

func openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", filepath.Base(path), err)
	}
	return f, nil
}

// signalLocked sends sig to the child's process group. Callers hold Service.mu.
func (r *runner) signalLocked(sig syscall.Signal) {
	if !r.running || r.pid <= 0 {
		return
	}
	if err := syscall.Kill(-r.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		// The group leader may have changed its group; reach it at least.
		_ = syscall.Kill(r.pid, sig)
	}
}

// terminateLocked sends SIGTERM now and SIGKILL after grace if the same
// process is still running. lock is Service.mu (the timer takes it).
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

// reapedLocked records that the process was reaped. Callers hold Service.mu.
func (r *runner) reapedLocked() {
	if r.timer != nil {
		// It was terminated (kill or shutdown): whatever the leader left
		// behind in its group goes with it.
		r.timer.Stop()
		r.timer = nil
		if r.pid > 0 {
			_ = syscall.Kill(-r.pid, syscall.SIGKILL)
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
