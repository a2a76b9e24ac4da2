package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// Registration retry timings.
const (
	registerBackoffBase = 200 * time.Millisecond
	registerBackoffMax  = 5 * time.Second
	// relaunchBackoffMax caps the wait before a supervised driver restarts.
	relaunchBackoffMax = 30 * time.Second
	// relaunchResetAfter: a driver that ran this long before failing starts
	// its backoff from the beginning again.
	relaunchResetAfter = time.Minute
	// minHeartbeatInterval bounds what a registration reply may ask for.
	minHeartbeatInterval = 10 * time.Millisecond
)

// Service is one worker agent.
type Service struct {
	cfg Config
	// memory says how memory grants are enforced; memoryWarning, when set,
	// that they are not (logged once at start).
	memory, memoryWarning string
	nc                    *nats.Conn
	log                   zerolog.Logger
	wid                   string
	instance              string
	since                 time.Time // when this instance started
	counters              bus.Counters
	reports               *reporter

	registered     chan struct{}
	registeredOnce sync.Once
	// reregister holds at most one pending registration request, so
	// registrations never overlap and bursts of triggers collapse.
	reregister chan string
	hbInterval atomic.Int64 // nanoseconds
	// ackedAt is when the cluster last proved contact (unix nanoseconds;
	// 0: never): a heartbeat service acknowledged a heartbeat, or the
	// registration service accepted a registration (it wrote the worker's
	// record, so it hears a quorum). Contact with the cluster, not only
	// with the agent's NATS server (see contactLoop).
	ackedAt atomic.Int64
	hbReset chan struct{}

	stopOnce  sync.Once
	leaveOnce sync.Once
	failOnce  sync.Once
	done      chan struct{} // closed when replaced (see replacedBy)
	fatal     error

	mu       sync.Mutex // guards what follows and every runner's guarded fields
	group    *svc.Group
	subs     []*nats.Subscription
	started  bool
	stopping bool
	epoch    uint64 // the highest scheduler epoch seen

	untrusted atomic.Int64 // commands dropped for their reply subject
	// Spark's Worker keeps the same four maps.
	executors         map[string]*runner
	drivers           map[string]*runner
	finishedExecutors *retained
	finishedDrivers   *retained

	artifacts *artifactCache
}

// New validates cfg, applies defaults and returns an agent that is not yet running.
func New(cfg Config) (*Service, error) {
	memory, memoryWarning := "set by the launcher", ""
	if cfg.Launcher == nil {
		m, warning, err := newMemoryEnforcer(cfg.EnforceMemory, cfg.CgroupParent)
		if err != nil {
			return nil, err
		}
		cfg.Launcher = ProcessLauncher{mem: m, LogMaxBytes: cfg.LogMaxBytes, LogMaxFiles: cfg.LogMaxFiles}
		memory, memoryWarning = m.describe(), warning
	} else if cfg.EnforceMemory != "" && cfg.EnforceMemory != EnforceAuto && cfg.EnforceMemory != EnforceOff {
		return nil, fmt.Errorf("agent: EnforceMemory %q needs the default launcher", cfg.EnforceMemory)
	}
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	s := &Service{
		cfg:               cfg,
		memory:            memory,
		memoryWarning:     memoryWarning,
		nc:                cfg.NC,
		wid:               cfg.WorkerID,
		instance:          schemas.NewInstance(),
		since:             time.Now().UTC(),
		done:              make(chan struct{}),
		registered:        make(chan struct{}),
		reregister:        make(chan string, 1),
		hbReset:           make(chan struct{}, 1),
		executors:         map[string]*runner{},
		drivers:           map[string]*runner{},
		finishedExecutors: newRetained(retainFinished),
		finishedDrivers:   newRetained(retainFinished),
	}
	s.log = cfg.Log.With().Str("component", "agent").Str("worker_id", s.wid).Str("instance", s.instance).Logger()
	s.hbInterval.Store(int64(cfg.HeartbeatInterval))
	s.reports = newReporter(s.nc, bus.WorkerStateSubject(s.wid), bus.WorkerStatesSubject(s.wid), s.log, s.onStateAck)
	js, err := jetstream.New(s.nc)
	if err != nil {
		return nil, fmt.Errorf("agent: jetstream: %w", err)
	}
	s.artifacts = newArtifactCache(cfg.WorkDir, js)
	return s, nil
}

// WorkerID is the worker's id.
func (s *Service) WorkerID() string { return s.wid }

// Instance is this agent process's random nonce (a restart is a new instance).
func (s *Service) Instance() string { return s.instance }

// Registered is closed once the first registration is accepted.
func (s *Service) Registered() <-chan struct{} { return s.registered }

// Epoch is the highest scheduler epoch the agent has seen.
func (s *Service) Epoch() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

// Used is the cores and memory held by the executors and drivers it runs.
func (s *Service) Used() (cores int, memoryMB int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range []map[string]*runner{s.executors, s.drivers} {
		for _, r := range m {
			cores += r.cores
			memoryMB += r.memoryMB
		}
	}
	return cores, memoryMB
}

// Start creates the work directory, answers stoker.worker.<wid>.ping and
// asks it: if an older live agent holds the worker id, Start returns a
// *HeldError and acts on nothing. Else it subscribes to the agent's command
// and logs subjects and its heartbeat inbox, and returns once they are in
// place. Registration runs in the background (see Registered).
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started || s.stopping {
		s.mu.Unlock()
		return errors.New("agent: Start called twice or after Stop")
	}
	s.started = true
	s.group = svc.NewGroup(context.Background())
	s.mu.Unlock()

	if err := os.MkdirAll(s.cfg.WorkDir, 0o755); err != nil {
		return fmt.Errorf("agent: work dir: %w", err)
	}
	if err := s.claimID(ctx); err != nil {
		s.Stop()
		return err
	}
	gctx := s.group.Context()
	log := s.log
	inbox := s.nc.NewInbox()
	subs := []struct {
		subject string
		h       nats.MsgHandler
	}{
		{bus.WorkerCmdLaunchSubject(s.wid), s.fromCommander(bus.MsgHandler(gctx, &log, &s.counters, s.handleLaunchExecutor))},
		{bus.WorkerCmdLaunchExecutorsSubject(s.wid), s.fromCommander(bus.MsgHandler(gctx, &log, &s.counters, s.handleLaunchExecutors))},
		{bus.WorkerCmdLaunchDriverSubject(s.wid), s.fromCommander(bus.MsgHandler(gctx, &log, &s.counters, s.handleLaunchDriver))},
		{bus.WorkerCmdKillSubject(s.wid), s.fromCommander(bus.MsgHandler(gctx, &log, &s.counters, s.handleKill))},
		{bus.WorkerCmdKillExecutorsSubject(s.wid), s.fromCommander(bus.MsgHandler(gctx, &log, &s.counters, s.handleKillExecutors))},
		{bus.WorkerCmdMasterSubject(s.wid), s.fromCommander(bus.MsgHandler(gctx, &log, &s.counters, s.handleMaster))},
		{bus.WorkerLogsSubject(s.wid), bus.MsgHandler(gctx, &log, &s.counters, s.handleLogs)},
		// One reply subject per beat (inbox.<seq>): the heartbeat
		// service may answer each request once (its response
		// permission), so two answers to one shared reply subject would
		// see the second refused by the server.
		{inbox + ".*", s.onHeartbeatReply},
	}
	for _, sub := range subs {
		ns, err := s.nc.Subscribe(sub.subject, sub.h)
		if err != nil {
			s.Stop()
			return fmt.Errorf("agent: subscribe %s: %w", sub.subject, err)
		}
		s.mu.Lock()
		s.subs = append(s.subs, ns)
		s.mu.Unlock()
	}
	if s.nc.IsConnected() {
		fctx := ctx
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			fctx, cancel = context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
		}
		if err := s.nc.FlushWithContext(fctx); err != nil {
			s.Stop()
			return fmt.Errorf("agent: flush subscriptions: %w", err)
		}
	}
	s.triggerRegister("agent started")
	s.group.Go(s.registerLoop)
	s.group.Go(func(ctx context.Context) { s.heartbeatLoop(ctx, inbox) })
	s.group.Go(s.reports.run)
	if s.cfg.StopAfterDisconnect > 0 {
		s.group.Go(s.contactLoop)
	}
	if s.cfg.CleanupInterval > 0 {
		s.group.Go(s.cleanupLoop)
	}
	s.log.Info().Str("host", s.cfg.Host).Int("cores", s.cfg.Cores).Int64("memory_mb", s.cfg.MemoryMB).
		Str("work_dir", s.cfg.WorkDir).Str("memory_enforcement", s.memory).Msg("agent started")
	if s.memoryWarning != "" {
		s.log.Warn().Msg(s.memoryWarning)
	}
	return nil
}

// Stop kills every child (SIGTERM, SIGKILL after KillGrace), waits for
// them, and stops the agent's goroutines. It sends no leaving notice: the
// cluster finds out from the missing heartbeats. Idempotent.
func (s *Service) Stop() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopping = true
		subs := s.subs
		s.subs = nil
		n := len(s.executors) + len(s.drivers)
		for _, m := range []map[string]*runner{s.executors, s.drivers} {
			for _, r := range m {
				// The shutdown path: end the child, do not report it killed.
				r.terminateLocked(s.cfg.KillGrace, &s.mu)
			}
		}
		g := s.group
		s.mu.Unlock()
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
		if g != nil {
			g.Stop()
		}
		s.log.Info().Int("children_stopped", n).Msg("agent stopped")
	})
}

// Shutdown is a purposeful leave: it tells the cluster the worker is going
// (stoker.worker.<wid>.leave, so it is DECOMMISSIONED at once rather than
// DEAD after the timeout), then Stops. Idempotent; the error is the leave's:
// not acknowledged, or refused (wrapping bus.ErrRefused).
func (s *Service) Shutdown(ctx context.Context) error {
	var err error
	s.leaveOnce.Do(func() {
		s.mu.Lock()
		live := s.started && !s.stopping
		s.mu.Unlock()
		if !live {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, s.cfg.RegisterTimeout)
		defer cancel()
		_, err = bus.CallAck(cctx, s.nc, bus.WorkerLeaveSubject(s.wid),
			&schemas.WorkerLeaving{WorkerID: s.wid, Instance: s.instance})
		switch {
		case errors.Is(err, bus.ErrRefused) && strings.Contains(err.Error(), "already "+string(schemas.WorkerDecommissioned)):
			// Drained (stoker drain, or this agent's own drain) before it
			// left: what the leave asks for is done.
			s.log.Info().Msg("the worker is already DECOMMISSIONED (drained)")
			err = nil
		case errors.Is(err, bus.ErrRefused):
			// Not registered, registered by another instance, or already
			// gone: asking again changes nothing.
			s.log.Error().Err(err).Msg("the cluster refused the leave; the worker is not DECOMMISSIONED")
		case err != nil:
			s.log.Warn().Err(err).Msg("cannot tell the cluster the worker is leaving")
		default:
			s.log.Info().Msg("told the cluster the worker is leaving")
		}
	})
	s.Stop()
	return err
}

// Decommission is the agent's self-drain (SIGTERM or SIGPWR with
// --drain-grace, as Spark's worker on SIGPWR with spark.decommission.enabled):
// it asks the cluster to drain the worker with grace as the deadline
// (stoker.worker.<wid>.drain), so the scheduler replaces its executors on
// other workers before killing them here and relaunches supervised drivers
// elsewhere; it waits until the agent runs nothing any more, grace (plus
// KillGrace, for the deadline's kills) has passed, or ctx ends (a second
// signal); then it leaves (Shutdown). A drain the cluster refuses or does
// not acknowledge is logged and the agent leaves at once.
func (s *Service) Decommission(ctx context.Context, grace time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.RegisterTimeout)
	_, err := bus.CallAck(cctx, s.nc, bus.WorkerDrainSubject(s.wid),
		&schemas.DrainRequest{WorkerID: s.wid, Instance: s.instance, DeadlineMS: max(grace.Milliseconds(), 1)})
	cancel()
	if err != nil {
		s.log.Warn().Err(err).Msg("the cluster did not take the drain; leaving now")
	} else {
		s.log.Info().Dur("grace", grace).Msg("draining: the cluster replaces this worker's executors elsewhere, then stops them here")
		s.waitEmpty(ctx, grace+s.cfg.KillGrace)
	}
	return s.Shutdown(context.WithoutCancel(ctx))
}

// waitEmpty waits until no executor or driver runs and the cluster has
// acknowledged every state report, for at most d or until ctx ends. The
// reports count: an agent that left with the KILLED report of its last
// executor still unacknowledged had the worker DECOMMISSIONED first, and
// that executor, killed here as the drain asked, was recorded LOST
// (TestService_Decommission_LeavesAfterItsReports; the compose test met it).
func (s *Service) waitEmpty(ctx context.Context, d time.Duration) {
	end := time.After(d)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		s.mu.Lock()
		n := len(s.executors) + len(s.drivers)
		// Under s.mu: a runner leaves its map and queues its report in
		// one step (finishLocked), so none is between the two.
		unreported := s.reports.pending()
		s.mu.Unlock()
		if n == 0 && unreported == 0 {
			s.log.Info().Msg("drained: nothing runs here any more, every report acknowledged")
			return
		}
		select {
		case <-ctx.Done():
			s.log.Warn().Int("running", n).Int("unreported", unreported).Msg("drain cut short; leaving now")
			return
		case <-end:
			s.log.Warn().Int("running", n).Int("unreported", unreported).Msg("drain grace over; leaving now")
			return
		case <-t.C:
		}
	}
}

// ---- registration -------------------------------------------------------

// triggerRegister asks for a (re-)registration; it never blocks, and a
// request made while one is pending is folded into it.
// reasonReconnected is the registration reason after a NATS reconnect.
const reasonReconnected = "reconnected to NATS"

func (s *Service) triggerRegister(reason string) {
	select {
	case s.reregister <- reason:
	default:
	}
}

func (s *Service) registerLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case reason := <-s.reregister:
			s.registerUntilAccepted(ctx, reason)
		}
	}
}

// registerUntilAccepted retries with backoff and jitter until the cluster
// accepts the registration. A Duplicate answer is an acceptance; no answer
// is ever a reason to give up.
func (s *Service) registerUntilAccepted(ctx context.Context, reason string) {
	log := s.log.With().Str("reason", reason).Logger()
	for attempt := 0; ; attempt++ {
		req := s.registration()
		cctx, cancel := context.WithTimeout(ctx, s.cfg.RegisterTimeout)
		var reply schemas.WorkerRegistered
		err := bus.Call(cctx, s.nc, bus.WorkerRegisterSubject(s.wid), req, &reply)
		cancel()
		if err == nil {
			s.accepted(log, &reply, attempt+1)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if be := (*bus.Error)(nil); errors.As(err, &be) && be.Code == bus.CodeConflict {
			s.replacedBy(be.Description)
			return
		}
		switch {
		case attempt != 0 && attempt%10 != 0:
		case !s.nc.IsConnected():
			// Not connected, a request fails with whatever nats.go says of
			// a server it never met ("headers not supported"): say what is
			// wrong instead.
			log.Warn().Int("attempt", attempt+1).Str("nats", bus.Redact(s.cfg.NATSURL)).
				Msg(fmt.Sprintf("cannot reach the bus at %s; retrying (check --nats or STOKER_NATS_URL)", bus.Redact(s.cfg.NATSURL)))
		default:
			log.Warn().Err(err).Int("attempt", attempt+1).Msg("registration not accepted; retrying")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(svc.Backoff(attempt, registerBackoffBase, registerBackoffMax, rand.Int64N)):
		case r := <-s.reregister:
			// Reconnected to NATS: the bus is back, so try again now instead
			// of sleeping out a long backoff while the worker timeout runs.
			// Other reasons (a "re-register" answer to a heartbeat) keep the
			// backoff: this loop is registering already.
			if r == reasonReconnected {
				log = s.log.With().Str("reason", r).Logger()
				attempt = -1
			}
		}
	}
}

// fromCommander drops a command whose reply subject is not the inbox of a
// role allowed to send commands (Config.CommandReplyPrefixes): permissions
// already keep everyone else from publishing on the agent's command
// subjects, but JetStream delivers onto any subject a consumer names
// (SECURITY-NOTES trap 9), always with a $JS.ACK reply.
func (s *Service) fromCommander(h nats.MsgHandler) nats.MsgHandler {
	prefixes := s.cfg.CommandReplyPrefixes
	if len(prefixes) == 0 {
		return h
	}
	return func(m *nats.Msg) {
		if trustedReply(m.Reply, prefixes) {
			h(m)
			return
		}
		s.untrusted.Add(1)
		s.log.Warn().Str("subject", m.Subject).Str("reply", m.Reply).
			Msg("dropped a command that did not come from a scheduler or recovery inbox")
	}
}

// trustedReply reports whether reply starts with one of prefixes.
func trustedReply(reply string, prefixes []string) bool {
	for _, p := range prefixes {
		if p != "" && strings.HasPrefix(reply, p) {
			return true
		}
	}
	return false
}

// Untrusted counts commands dropped by fromCommander.
func (s *Service) Untrusted() int64 { return s.untrusted.Load() }

// registration is the RegisterWorker message, listing what the agent runs
// so a cluster that lost track of it (bus restart, failover) learns it back.
func (s *Service) registration() *schemas.RegisterWorker {
	execs, drivers := s.runningLists()
	return &schemas.RegisterWorker{
		WorkerID:  s.wid,
		Instance:  s.instance,
		Host:      s.cfg.Host,
		Cores:     s.cfg.Cores,
		MemoryMB:  s.cfg.MemoryMB,
		WorkDir:   s.cfg.WorkDir,
		PID:       s.cfg.PID,
		Since:     s.since,
		Resources: s.cfg.Resources,
		Labels:    s.cfg.Labels,
		Executors: execs,
		Drivers:   drivers,
	}
}

// accepted applies a registration reply.
func (s *Service) accepted(log zerolog.Logger, reply *schemas.WorkerRegistered, attempts int) {
	if ms := reply.HeartbeatIntervalMS; ms > 0 {
		d := max(time.Duration(ms)*time.Millisecond, minHeartbeatInterval)
		if s.hbInterval.Swap(int64(d)) != int64(d) {
			select {
			case s.hbReset <- struct{}{}:
			default:
			}
		}
	}
	// An accepted registration proves contact as a heartbeat ack does: an
	// agent cut off with a minority right after registering, before any
	// heartbeat was acknowledged, must still stop its children in time.
	s.ackedAt.Store(time.Now().UnixNano())
	s.mu.Lock()
	if reply.Epoch > s.epoch {
		s.epoch = reply.Epoch
	}
	for _, key := range reply.KillExecutors {
		if r := s.executors[key]; r != nil {
			s.killLocked(r, "the cluster has replaced it")
		}
	}
	for _, id := range reply.KillDrivers {
		if r := s.drivers[id]; r != nil {
			s.killLocked(r, "the cluster has replaced it")
		}
	}
	s.mu.Unlock()
	if reply.Decommissioned {
		log.Info().Msg("the worker is DECOMMISSIONED (drained): it stays out of the cluster until this agent restarts")
	}
	log.Info().Bool("duplicate", reply.Duplicate).Str("replaced", string(reply.Replaced)).
		Uint64("epoch", reply.Epoch).Int("attempts", attempts).
		Int("kill_executors", len(reply.KillExecutors)).Int("kill_drivers", len(reply.KillDrivers)).
		Msg("registered with the cluster")
	s.registeredOnce.Do(func() { close(s.registered) })
}

// ---- heartbeats ---------------------------------------------------------

// heartbeatLoop publishes a heartbeat every interval from the start. It
// also notices reconnections: the bus may have restarted and forgotten the
// worker, so the agent registers again (a Duplicate answer costs nothing).
func (s *Service) heartbeatLoop(ctx context.Context, inbox string) {
	t := time.NewTicker(time.Duration(s.hbInterval.Load()))
	defer t.Stop()
	reconnects := s.nc.Stats().Reconnects
	// The bus reports a closed connection to the heartbeat service, which
	// then waits only a short grace: beat as soon as we are back.
	back := s.nc.StatusChanged(nats.CONNECTED)
	defer s.nc.RemoveStatusListener(back)
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.hbReset:
			t.Reset(time.Duration(s.hbInterval.Load()))
			continue
		case _, ok := <-back:
			if !ok {
				back = nil
				continue
			}
		case <-t.C:
		}
		if rc := s.nc.Stats().Reconnects; rc != reconnects {
			reconnects = rc
			s.log.Info().Msg("reconnected to NATS; registering again")
			s.triggerRegister(reasonReconnected)
		}
		// Heartbeats flow even before a registration is confirmed: if the
		// cluster recorded it but the reply was lost (the bus went down at
		// that moment), they keep the worker ALIVE while the agent retries;
		// if it did not, the answer is "re-register", which is what the
		// agent is doing anyway.
		seq++
		hb := &schemas.Heartbeat{WorkerID: s.wid, Instance: s.instance, Seq: seq, Epoch: s.Epoch()}
		if err := bus.PublishRequest(s.nc, bus.WorkerHeartbeatSubject(s.wid), inbox+"."+strconv.FormatUint(seq, 10), hb); err != nil {
			s.log.Debug().Err(err).Msg("cannot publish heartbeat")
		}
	}
}

// onHeartbeatReply handles answers to heartbeats: a HeartbeatAck proves
// contact with the cluster; a Reregister asks the agent to register again.
func (s *Service) onHeartbeatReply(m *nats.Msg) {
	if len(m.Data) == 0 {
		// A no-responders status: no heartbeat service is running. The
		// registration loop and the reconnect check cover that case.
		return
	}
	var rr schemas.Reregister
	if err := bus.DecodeMsg(m, &rr); err != nil {
		var ack schemas.HeartbeatAck
		if errors.Is(err, bus.ErrWrongType) && bus.DecodeMsg(m, &ack) == nil {
			if ack.WorkerID == s.wid {
				s.ackedAt.Store(time.Now().UnixNano())
			}
			return
		}
		s.log.Warn().Err(err).Msg("bad heartbeat reply")
		return
	}
	if rr.WorkerID != "" && rr.WorkerID != s.wid {
		return
	}
	s.log.Info().Str("reason", rr.Reason).Msg("the cluster asked the worker to register again")
	s.triggerRegister("re-register: " + rr.Reason)
}

// ---- state reports ------------------------------------------------------

// onStateAck kills a process the cluster says it has already replaced.
func (s *Service) onStateAck(sc schemas.StateChange, ack *schemas.StateAck) {
	if ack == nil || !ack.Kill {
		return
	}
	reason := ack.Reason
	if reason == "" {
		reason = "the cluster asked for it in a state acknowledgement"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var r *runner
	if sc.DriverID != "" {
		r = s.drivers[sc.DriverID]
	} else {
		r = s.executors[schemas.ExecutorKey(sc.AppID, sc.ExecutorID)]
	}
	if r != nil {
		s.killLocked(r, reason)
	}
}

// runningLists is what the agent runs, for registration and recovery.
func (s *Service) runningLists() ([]schemas.RunningExecutor, []schemas.RunningDriver) {
	s.mu.Lock()
	defer s.mu.Unlock()
	execs := make([]schemas.RunningExecutor, 0, len(s.executors))
	for _, r := range s.executors {
		execs = append(execs, schemas.RunningExecutor{
			AppID: r.appID, ExecutorID: r.execID, Cores: r.cores, MemoryMB: r.memoryMB,
			State: schemas.ExecutorRunning, PID: r.pid,
		})
	}
	drivers := make([]schemas.RunningDriver, 0, len(s.drivers))
	for _, r := range s.drivers {
		drivers = append(drivers, schemas.RunningDriver{
			DriverID: r.driverID, Cores: r.cores, MemoryMB: r.memoryMB,
			State: schemas.DriverState(r.state), PID: r.pid, Attempt: r.attempt,
		})
	}
	return execs, drivers
}

// retained is a bounded map of finished runners, oldest evicted first.
type retained struct {
	m     map[string]*runner
	order []string
	max   int
}

func newRetained(max int) *retained { return &retained{m: map[string]*runner{}, max: max} }

func (f *retained) get(key string) (*runner, bool) {
	r, ok := f.m[key]
	return r, ok
}

func (f *retained) add(r *runner) {
	if _, ok := f.m[r.key]; !ok {
		f.order = append(f.order, r.key)
	}
	f.m[r.key] = r
	for len(f.order) > f.max {
		delete(f.m, f.order[0])
		f.order = f.order[1:]
	}
}

func (f *retained) remove(key string) {
	if _, ok := f.m[key]; !ok {
		return
	}
	delete(f.m, key)
	for i, k := range f.order {
		if k == key {
			f.order = append(f.order[:i], f.order[i+1:]...)
			break
		}
	}
}
