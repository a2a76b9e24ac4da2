package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// admitLocked fences commands by epoch: one from an older scheduler epoch
// than the highest seen is refused (Spark's "invalid master"). Only a
// master-changed command (raise, sent by recovery, which read the lease)
// and the registration reply raise the highest epoch: a launch or kill
// with an epoch above it is refused and the agent re-registers to learn the
// cluster's epoch, so one message with a made-up epoch cannot lock the
// agent out of the cluster. Callers hold s.mu.
func (s *Service) admitLocked(epoch uint64, what string, raise bool) error {
	if s.stopping {
		return bus.Errorf(bus.CodeUnavailable, "worker %s is stopping", s.wid)
	}
	if epoch < s.epoch {
		s.log.Warn().Uint64("epoch", epoch).Uint64("highest_epoch", s.epoch).Str("command", what).
			Msg("invalid master attempted a command")
		return bus.Errorf(bus.CodeConflict, "invalid master: epoch %d is older than %d", epoch, s.epoch)
	}
	if epoch > s.epoch && !raise {
		s.log.Warn().Uint64("epoch", epoch).Uint64("highest_epoch", s.epoch).Str("command", what).
			Msg("command from an epoch not announced yet; asking the cluster")
		s.triggerRegister(fmt.Sprintf("a command carried unknown epoch %d", epoch))
		return bus.Errorf(bus.CodeUnavailable, "unknown epoch %d (highest known %d): waiting for master", epoch, s.epoch)
	}
	s.epoch = epoch
	// The record of what this agent obeyed, in the order it obeyed it (the
	// line is written under s.mu): the chaos tests read it back to check
	// that no command of an older epoch was admitted after a newer one.
	s.log.Debug().Uint64("epoch", epoch).Str("command", what).Msg(CommandAdmitted)
	return nil
}

// CommandAdmitted is the message of the debug log line an agent writes for
// every command that passed its fences (fields epoch and command).
const CommandAdmitted = "command admitted"

// freshLocked refuses a command delivered after its sender's authority
// ended (plus the clock-skew allowance): bytes a partition held back and
// delivered after another scheduler may have taken over. Callers hold s.mu.
func (s *Service) freshLocked(validUntil time.Time, what string) error {
	if validUntil.IsZero() || s.cfg.CommandSkew < 0 {
		return nil
	}
	if late := time.Since(validUntil); late > s.cfg.CommandSkew {
		s.log.Warn().Time("valid_until", validUntil).Dur("late", late.Round(time.Millisecond)).Str("command", what).
			Msg("stale command refused: it arrived after its sender's authority ended")
		return bus.Errorf(bus.CodeConflict, "stale command: valid until %s, arrived %s later", validUntil.Format(time.RFC3339Nano), late.Round(time.Millisecond))
	}
	return nil
}

// childEnv is the agent's environment, then the command's, then Stoker's
// variables (the last value of a key wins in os/exec).
// The agent's own credential (STOKER_CREDS, a join token) is never passed
// on: a child gets the credential its launch command carried, or none.
func (s *Service) childEnv(extra []string, vars ...string) []string {
	base := inheritedEnv()
	env := make([]string, 0, len(base)+len(extra)+3+len(vars))
	env = append(env, base...)
	for _, kv := range extra {
		if !privateEnv(kv) {
			env = append(env, kv)
		}
	}
	env = append(env, schemas.EnvEntry(schemas.EnvNATSURL, s.cfg.NATSURL), schemas.EnvEntry(schemas.EnvWorkerID, s.wid))
	if s.cfg.TLSCA != "" {
		env = append(env, schemas.EnvEntry(schemas.EnvTLSCA, s.cfg.TLSCA))
	}
	return append(env, vars...)
}

// inheritedEnv is the process's environment less the agent's secrets,
// read once: nothing in stoker sets its own environment, and copying and
// filtering it for every launch was 3 % of what a simulated fleet
// allocated placing 100,000 executors.
var inheritedEnv = sync.OnceValue(func() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !privateEnv(kv) {
			env = append(env, kv)
		}
	}
	return slices.Clip(env)
})

// privateEnv reports whether an environment entry is the agent's secret.
func privateEnv(kv string) bool {
	k, _, _ := strings.Cut(kv, "=")
	return k == schemas.EnvCreds || strings.HasPrefix(k, "STOKER_AGENT_")
}

// handleLaunchExecutor is Spark's LaunchExecutor: idempotent by
// "<appid>.<execid>"; a process that cannot start is reported FAILED and
// forgotten, and the scheduler starts a replacement.
func (s *Service) handleLaunchExecutor(_ context.Context, _ bus.Inbound, req *schemas.LaunchExecutor) (any, error) {
	key := schemas.ExecutorKey(req.AppID, req.ExecutorID)
	log := s.log.With().Str("executor", key).Logger()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.freshLocked(req.ValidUntil, "launch executor "+key); err != nil {
		return nil, err
	}
	if err := s.admitLocked(req.Epoch, "launch executor "+key, false); err != nil {
		return nil, err
	}
	if r := s.executors[key]; r != nil {
		return &schemas.Ack{OK: true, Message: fmt.Sprintf("executor %s already running (pid %d)", key, r.pid)}, nil
	}
	if r, ok := s.finishedExecutors.get(key); ok {
		return &schemas.Ack{OK: true, Message: fmt.Sprintf("executor %s already ended %s", key, r.state)}, nil
	}
	log.Info().Strs("command", req.Command).Int("cores", req.Cores).Int64("memory_mb", req.MemoryMB).
		Msg("asked to launch executor")
	r := &runner{
		kind:     kindExecutor,
		key:      key,
		appID:    req.AppID,
		execID:   req.ExecutorID,
		creds:    req.Creds,
		argv:     req.Command,
		cores:    req.Cores,
		memoryMB: req.MemoryMB,
		dir:      s.childDir(schemas.ExecutorKey(req.AppID, req.ExecutorID)),
		killCh:   make(chan struct{}),
		env: s.childEnv(req.Env, append([]string{
			schemas.EnvEntry(schemas.EnvAppID, req.AppID),
			schemas.EnvEntry(schemas.EnvExecutorID, strconv.Itoa(req.ExecutorID)),
			schemas.EnvEntry(schemas.EnvCores, strconv.Itoa(req.Cores)),
			schemas.EnvEntry(schemas.EnvMemoryMB, strconv.FormatInt(req.MemoryMB, 10))},
			schemas.ResourceVars(req.Resources)...)...),
	}
	return s.launchLocked(r, req.Artifacts, log), nil
}

// handleLaunchExecutors carries out a batch of executor launches in order,
// each exactly as handleLaunchExecutor does one (its own fences, its own
// idempotence): a refused launch is answered in its place, and the rest
// go on.
func (s *Service) handleLaunchExecutors(ctx context.Context, in bus.Inbound, req *schemas.LaunchExecutors) (any, error) {
	return &schemas.LaunchAcks{Acks: eachOnItsOwn(ctx, in, req.Launches, s.handleLaunchExecutor)}, nil
}

// eachOnItsOwn answers a batch command item by item, in order, each as
// handle answers it alone: a refusal (an error) is that item's Ack.
func eachOnItsOwn[T any](ctx context.Context, in bus.Inbound, items []T, handle bus.Handler[T]) []schemas.Ack {
	acks := make([]schemas.Ack, len(items))
	for i := range items {
		reply, err := handle(ctx, in, &items[i])
		switch {
		case err != nil:
			acks[i] = schemas.Ack{Message: err.Error(), Code: bus.ErrorCode(err)}
		case reply != nil:
			acks[i] = *reply.(*schemas.Ack)
		}
	}
	return acks
}

// handleLaunchDriver starts a driver. It is idempotent by driver id and
// attempt: a driver already running is acknowledged; a finished one is
// started again only for a higher attempt (the cluster relaunching it).
func (s *Service) handleLaunchDriver(_ context.Context, _ bus.Inbound, req *schemas.LaunchDriver) (any, error) {
	log := s.log.With().Str("driver", req.DriverID).Logger()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.freshLocked(req.ValidUntil, "launch driver "+req.DriverID); err != nil {
		return nil, err
	}
	if err := s.admitLocked(req.Epoch, "launch driver "+req.DriverID, false); err != nil {
		return nil, err
	}
	if r := s.drivers[req.DriverID]; r != nil {
		return &schemas.Ack{OK: true, Message: fmt.Sprintf("driver %s already running (attempt %d)", req.DriverID, r.attempt)}, nil
	}
	if r, ok := s.finishedDrivers.get(req.DriverID); ok {
		if req.Attempt <= r.attempt {
			return &schemas.Ack{OK: true, Message: fmt.Sprintf("driver %s attempt %d already ended %s", req.DriverID, r.attempt, r.state)}, nil
		}
		s.finishedDrivers.remove(req.DriverID)
	}
	log.Info().Strs("command", req.Command).Int("cores", req.Cores).Int64("memory_mb", req.MemoryMB).
		Bool("supervise", req.Supervise).Int("attempt", req.Attempt).Msg("asked to launch driver")
	r := &runner{
		kind:      kindDriver,
		key:       req.DriverID,
		driverID:  req.DriverID,
		argv:      req.Command,
		cores:     req.Cores,
		memoryMB:  req.MemoryMB,
		supervise: req.Supervise,
		attempt:   req.Attempt,
		creds:     req.Creds,
		dir:       s.childDir(req.DriverID),
		killCh:    make(chan struct{}),
		env:       s.childEnv(req.Env, driverVars(req)...),
	}
	return s.launchLocked(r, req.Artifacts, log), nil
}

// launchLocked starts r. Without artifacts it starts at once, and a
// process that cannot start is reported and refused (never recorded, so
// nothing to kill or forget). With artifacts, r is recorded now (a
// duplicate launch or a kill finds it) and acknowledged, and a goroutine
// fetches them and starts it: the fetch may outlast the scheduler's launch
// timeout. A fetch or start that fails then ends it FAILED (ERROR for a
// driver) through the state report, with the reason in its error. Callers
// hold s.mu.
func (s *Service) launchLocked(r *runner, arts []schemas.Artifact, log zerolog.Logger) *schemas.Ack {
	if len(arts) == 0 {
		if err := r.startLocked(s.cfg.Launcher); err != nil {
			s.launchFailedLocked(r, err, log, false)
			return &schemas.Ack{OK: false, Message: r.message}
		}
		s.startedLocked(r, log)
		return &schemas.Ack{OK: true}
	}
	r.env = append(r.env, schemas.EnvEntry(schemas.EnvArtifacts, schemas.EncodeArtifacts(arts)))
	running := s.executors
	if r.kind == kindDriver {
		running = s.drivers
	}
	running[r.key] = r
	ok := s.group.Go(func(ctx context.Context) {
		argv, err := s.prepareArtifacts(ctx, arts, r.dir, r.argv)
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case s.stopping:
			s.finishLocked(r, killedState(r.kind), "the agent stopped", false)
			return
		case r.killed:
			s.finishLocked(r, killedState(r.kind), r.message, true)
			return
		}
		if err == nil {
			r.argv = argv
			err = r.startLocked(s.cfg.Launcher)
		}
		if err != nil {
			s.launchFailedLocked(r, err, log, true)
			return
		}
		s.startedLocked(r, log)
	})
	if !ok {
		delete(running, r.key)
		return &schemas.Ack{OK: false, Message: "the agent is stopping"}
	}
	log.Info().Int("artifacts", len(arts)).Msg("fetching artifacts before the start")
	return &schemas.Ack{OK: true, Message: "fetching artifacts"}
}

// launchFailedLocked reports a process that could not start: FAILED (an
// executor) or ERROR (a driver), with the reason as its launch error;
// recorded says whether r is in the running maps. Callers hold s.mu.
func (s *Service) launchFailedLocked(r *runner, err error, log zerolog.Logger, recorded bool) {
	log.Error().Err(err).Msg("failed to launch " + r.kind.String())
	state := string(schemas.ExecutorFailed)
	if r.kind == kindDriver {
		state = string(schemas.DriverError)
	}
	msg := "launch failed: " + err.Error()
	r.launchErr = msg
	if recorded {
		s.finishLocked(r, state, msg, true)
		return
	}
	r.state, r.message = state, msg
	s.reports.push(r.stateChangeLocked(s.wid, s.instance))
}

// startedLocked records a started r and reports it RUNNING. Callers hold s.mu.
func (s *Service) startedLocked(r *runner, log zerolog.Logger) {
	if r.kind == kindDriver {
		r.state = string(schemas.DriverRunning)
		s.drivers[r.key] = r
	} else {
		r.state = string(schemas.ExecutorRunning)
		s.executors[r.key] = r
	}
	s.reports.push(r.stateChangeLocked(s.wid, s.instance))
	s.watchLocked(r)
	log.Info().Int("pid", r.pid).Msg(r.kind.String() + " running")
}

// driverVars are a driver's Stoker variables. A driver launched with an
// app credential has its app id reserved: the SDK registers that id.
func driverVars(req *schemas.LaunchDriver) []string {
	vars := []string{schemas.EnvEntry(schemas.EnvDriverID, req.DriverID),
		schemas.EnvEntry(schemas.EnvCores, strconv.Itoa(req.Cores)),
		schemas.EnvEntry(schemas.EnvMemoryMB, strconv.FormatInt(req.MemoryMB, 10))}
	if req.AppID != "" {
		vars = append(vars, schemas.EnvEntry(schemas.EnvAppID, req.AppID))
	}
	return append(vars, schemas.ResourceVars(req.Resources)...)
}

// watchLocked starts the goroutine that waits for r's process. Callers
// hold s.mu with s.stopping false, so the group is still open.
func (s *Service) watchLocked(r *runner) {
	if !s.group.Go(func(ctx context.Context) { s.watch(ctx, r) }) {
		// Unreachable while the contract above holds; never leak a child.
		r.signalLocked(syscall.SIGKILL)
		go func() { _, _ = r.child.Wait() }()
	}
}

// watch waits for r's process and acts on its end: report the final state,
// or restart a supervised driver in place. A stopping agent ends the child
// without reporting it (the shutdown path); a kill request reports KILLED.
func (s *Service) watch(ctx context.Context, r *runner) {
	relaunches := 0
	for {
		s.mu.Lock()
		child := r.child
		s.mu.Unlock()
		started := time.Now()
		code, msg := child.Wait()

		s.mu.Lock()
		r.reapedLocked()
		r.exitCode = &code
		switch {
		case s.stopping:
			s.finishLocked(r, killedState(r.kind), "the agent stopped", false)
			s.mu.Unlock()
			return
		case r.killed:
			s.finishLocked(r, killedState(r.kind), r.message, true)
			s.mu.Unlock()
			return
		case r.kind == kindExecutor && code == 0:
			s.finishLocked(r, string(schemas.ExecutorExited), "", true)
			s.mu.Unlock()
			return
		case r.kind == kindExecutor:
			s.finishLocked(r, string(schemas.ExecutorFailed), msg, true)
			s.mu.Unlock()
			return
		case code == 0:
			s.finishLocked(r, string(schemas.DriverFinished), "", true)
			s.mu.Unlock()
			return
		case !r.supervise:
			s.finishLocked(r, string(schemas.DriverFailed), msg, true)
			s.mu.Unlock()
			return
		}

		// A supervised driver failed: restart it in place after a backoff.
		if time.Since(started) >= relaunchResetAfter {
			relaunches = 0
		}
		r.attempt++
		r.state = string(schemas.DriverRelaunching)
		r.message = msg
		r.pid = 0
		s.reports.push(r.stateChangeLocked(s.wid, s.instance))
		s.log.Warn().Str("driver", r.driverID).Int("exit_code", code).Int("attempt", r.attempt).
			Msg("supervised driver failed; relaunching")
		s.mu.Unlock()

		wait := svc.Backoff(relaunches, s.cfg.RelaunchBackoff, relaunchBackoffMax, rand.Int64N)
		relaunches++
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-r.killCh:
		case <-ctx.Done():
		}
		timer.Stop()

		s.mu.Lock()
		switch {
		case s.stopping:
			s.finishLocked(r, killedState(r.kind), "the agent stopped", false)
			s.mu.Unlock()
			return
		case r.killed:
			s.finishLocked(r, killedState(r.kind), r.message, true)
			s.mu.Unlock()
			return
		}
		if err := r.startLocked(s.cfg.Launcher); err != nil {
			s.log.Error().Err(err).Str("driver", r.driverID).Msg("failed to relaunch driver")
			s.finishLocked(r, string(schemas.DriverError), "relaunch failed: "+err.Error(), true)
			s.mu.Unlock()
			return
		}
		r.state = string(schemas.DriverRunning)
		s.reports.push(r.stateChangeLocked(s.wid, s.instance))
		s.log.Info().Str("driver", r.driverID).Int("pid", r.pid).Int("attempt", r.attempt).Msg("driver relaunched")
		s.mu.Unlock()
	}
}

func killedState(k kind) string {
	if k == kindDriver {
		return string(schemas.DriverKilled)
	}
	return string(schemas.ExecutorKilled)
}

// finishLocked moves r to the finished map in its final state and, unless
// the agent is stopping, reports it. Callers hold s.mu.
func (s *Service) finishLocked(r *runner, state, message string, report bool) {
	r.state = state
	r.message = message
	if r.kind == kindDriver {
		delete(s.drivers, r.key)
		s.finishedDrivers.add(r)
	} else {
		delete(s.executors, r.key)
		s.finishedExecutors.add(r)
	}
	ev := s.log.Info()
	if r.exitCode != nil {
		ev = ev.Int("exit_code", *r.exitCode)
	}
	ev.Str(r.kind.String(), r.key).Str("state", state).Str("detail", message).Msg(r.kind.String() + " ended")
	if report {
		s.reports.push(r.stateChangeLocked(s.wid, s.instance))
	}
}

// killLocked is the kill path: SIGTERM to the process group, SIGKILL after
// KillGrace; the watcher reports KILLED once the process is gone (or at
// once, if a supervised driver is waiting to be relaunched). Callers hold s.mu.
func (s *Service) killLocked(r *runner, reason string) {
	if r.killed {
		return
	}
	r.killed = true
	r.message = "killed"
	if reason != "" {
		r.message = "killed: " + reason
	}
	close(r.killCh)
	r.terminateLocked(s.cfg.KillGrace, &s.mu)
}

// handleKill is Spark's KillExecutor / KillDriver.
func (s *Service) handleKill(_ context.Context, _ bus.Inbound, req *schemas.Kill) (any, error) {
	k, key := kindExecutor, schemas.ExecutorKey(req.AppID, req.ExecutorID)
	if req.DriverID != "" {
		k, key = kindDriver, req.DriverID
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.freshLocked(req.ValidUntil, "kill "+key); err != nil {
		return nil, err
	}
	if err := s.admitLocked(req.Epoch, "kill "+key, false); err != nil {
		return nil, err
	}
	running, finished := s.executors, s.finishedExecutors
	if k == kindDriver {
		running, finished = s.drivers, s.finishedDrivers
	}
	r := running[key]
	if r == nil {
		if f, ok := finished.get(key); ok {
			return &schemas.Ack{OK: true, Message: fmt.Sprintf("%s %s already ended %s", k, key, f.state)}, nil
		}
		s.log.Error().Str(k.String(), key).Msgf("asked to kill unknown %s", k)
		return &schemas.Ack{OK: false, Message: fmt.Sprintf("unknown %s %s", k, key)}, nil
	}
	s.log.Info().Str(k.String(), key).Str("reason", req.Reason).Msgf("asked to kill %s", k)
	s.killLocked(r, req.Reason)
	return &schemas.Ack{OK: true}, nil
}

// handleKillExecutors carries out a batch of kills in order, each exactly
// as handleKill does one (its own fences): a refused kill is answered in
// its place, and the rest go on.
func (s *Service) handleKillExecutors(ctx context.Context, in bus.Inbound, req *schemas.KillExecutors) (any, error) {
	return &schemas.KillAcks{Acks: eachOnItsOwn(ctx, in, req.Kills, s.handleKill)}, nil
}

// handleMaster answers a new scheduler epoch with what the agent runs.
func (s *Service) handleMaster(_ context.Context, _ bus.Inbound, req *schemas.MasterChanged) (any, error) {
	s.mu.Lock()
	err := s.admitLocked(req.Epoch, "master changed", true)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s.log.Info().Uint64("epoch", req.Epoch).Str("leader", req.Leader).Msg("master changed")
	execs, drivers := s.runningLists()
	return &schemas.WorkerReport{
		WorkerID: s.wid, Instance: s.instance, Epoch: req.Epoch,
		Executors: execs, Drivers: drivers,
	}, nil
}

// handleLogs returns the tail of a child's stdout or stderr, running or finished.
func (s *Service) handleLogs(_ context.Context, _ bus.Inbound, req *schemas.LogsRequest) (any, error) {
	s.mu.Lock()
	var r *runner
	if req.ID != "" {
		if r = s.drivers[req.ID]; r == nil {
			if r = s.executors[req.ID]; r == nil {
				if r, _ = s.finishedDrivers.get(req.ID); r == nil {
					r, _ = s.finishedExecutors.get(req.ID)
				}
			}
		}
	}
	s.mu.Unlock()
	var dir string
	if r != nil {
		dir = r.dir
	} else if dir = s.childDir(req.ID); dir == "" {
		return nil, bus.Errorf(bus.CodeNotFound, "no driver or executor %s on worker %s", req.ID, s.wid)
	}
	name := stdoutFile
	if req.Stderr {
		name = stderrFile
	}
	data, truncated, err := tail(filepath.Join(dir, name), logLimit(req.MaxBytes, s.nc.MaxPayload()))
	if errors.Is(err, os.ErrNotExist) {
		if r == nil {
			return nil, bus.Errorf(bus.CodeNotFound, "no driver or executor %s on worker %s", req.ID, s.wid)
		}
		return nil, bus.Errorf(bus.CodeNotFound, "%s of %s is gone", name, req.ID)
	}
	if err != nil {
		return nil, bus.Errorf(bus.CodeInternal, "read %s of %s: %v", name, req.ID, err)
	}
	return &schemas.LogsReply{ID: req.ID, Data: data, Truncated: truncated}, nil
}

// childDir is where a driver (id) or an executor ("<appid>.<execid>") ran
// or runs, from the id alone: logs stay readable from disk after the agent
// restarts and forgets its runners. "" for an id that is neither.
func (s *Service) childDir(id string) string {
	if schemas.ValidDriverID(id) == nil {
		return filepath.Join(s.cfg.WorkDir, id)
	}
	if app, n, err := schemas.ParseExecutorKey(id); err == nil {
		return filepath.Join(s.cfg.WorkDir, app, strconv.Itoa(n))
	}
	return ""
}

// logLimit is how many bytes a logs request gets: what it asks (0: the
// default), at most what fits in one message of maxPayload with room for
// its envelope.
func logLimit(asked int, maxPayload int64) int64 {
	limit := int64(asked)
	if limit <= 0 {
		limit = DefaultLogsMaxBytes
	}
	if mp := maxPayload - 4096; mp > 0 && limit > mp {
		limit = mp
	}
	return limit
}

// tail reads at most n bytes from the end of path.
func tail(path string, n int64) ([]byte, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	size := fi.Size()
	off := max(size-n, 0)
	buf := make([]byte, size-off)
	got, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, false, err
	}
	return buf[:got], off > 0, nil
}
