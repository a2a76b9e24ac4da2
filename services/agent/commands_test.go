package agent

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

func TestService_LaunchExecutor_RunsProcess(t *testing.T) {
	e := newEnv(t)
	var workDir string
	s := startAgent(t, e.srv.URL(), func(c *Config) { workDir = c.WorkDir })
	waitRegistered(t, s)
	app := newAppID()
	var ack schemas.Ack
	err := call(t, e.nc, bus.WorkerCmdLaunchSubject(testWID), &schemas.LaunchExecutor{
		AppID: app, ExecutorID: 7, Cores: 2, MemoryMB: 300, Env: []string{"EXTRA=yes", "STOKER_CORES=99"},
		Command: sh(`echo "app=$STOKER_APP_ID exec=$STOKER_EXECUTOR_ID wid=$STOKER_WORKER_ID cores=$STOKER_CORES mem=$STOKER_MEMORY_MB url=$STOKER_NATS_URL extra=$EXTRA pwd=$(pwd)"; echo oops >&2`),
	}, &ack)
	if err != nil || !ack.OK {
		t.Fatalf("launch: %+v %v", ack, err)
	}
	key := schemas.ExecutorKey(app, 7)
	e.c.waitReport(key, "EXITED")
	if got := e.c.stateList(key); strings.Join(got, ",") != "RUNNING,EXITED" {
		t.Fatalf("reports %v, want RUNNING then EXITED", got)
	}
	dir := filepath.Join(workDir, app, "7")
	out := readFile(t, filepath.Join(dir, "stdout"))
	want := "app=" + app + " exec=7 wid=" + testWID + " cores=2 mem=300 url=" + e.srv.URL() + " extra=yes pwd=" + dir
	if strings.TrimSpace(out) != want {
		t.Fatalf("stdout:\n got %q\nwant %q", out, want)
	}
	if got := readFile(t, filepath.Join(dir, "stderr")); got != "oops\n" {
		t.Fatalf("stderr %q", got)
	}
	if cores, mem := s.Used(); cores != 0 || mem != 0 {
		t.Fatalf("used %d cores %d MB after exit", cores, mem)
	}
}

func TestService_LaunchExecutor_ExitStates(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	tests := []struct {
		name   string
		script string
		state  string
		code   int
	}{
		{"exit 0 is EXITED", "exit 0", "EXITED", 0},
		{"exit 3 is FAILED", "exit 3", "FAILED", 3},
		{"a signal is FAILED", "kill -9 $$", "FAILED", 137},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			app := newAppID()
			launchExecutor(t, e.nc, app, i, tc.script)
			sc := e.c.waitReport(schemas.ExecutorKey(app, i), tc.state)
			if sc.ExitCode == nil || *sc.ExitCode != tc.code {
				t.Fatalf("exit code %v, want %d", sc.ExitCode, tc.code)
			}
		})
	}
}

func TestService_LaunchExecutor_MissingCommandFails(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	app := newAppID()
	var ack schemas.Ack
	err := call(t, e.nc, bus.WorkerCmdLaunchSubject(testWID), &schemas.LaunchExecutor{
		AppID: app, ExecutorID: 0, Cores: 1, MemoryMB: 100, Command: []string{"/nonexistent/stoker-no-such-binary"},
	}, &ack)
	if err != nil {
		t.Fatal(err)
	}
	if ack.OK || !strings.Contains(ack.Message, "no such file") {
		t.Fatalf("ack %+v, want not OK with the start error", ack)
	}
	sc := e.c.waitReport(schemas.ExecutorKey(app, 0), "FAILED")
	if !strings.Contains(sc.Message, "launch failed") {
		t.Fatalf("report message %q", sc.Message)
	}
	s.mu.Lock()
	_, fin := s.finishedExecutors.get(schemas.ExecutorKey(app, 0))
	n := len(s.executors)
	s.mu.Unlock()
	if n != 0 || fin {
		t.Fatalf("a runner was left behind: running %d, finished %v", n, fin)
	}
	// Drivers that cannot start are ERROR.
	d := newDriverID()
	err = call(t, e.nc, bus.WorkerCmdLaunchDriverSubject(testWID), &schemas.LaunchDriver{
		DriverID: d, Cores: 1, MemoryMB: 100, Command: []string{"/nonexistent/stoker-no-such-binary"},
	}, &ack)
	if err != nil || ack.OK {
		t.Fatalf("driver launch: %+v %v", ack, err)
	}
	e.c.waitReport(d, "ERROR")
}

func TestService_Kill_TermThenKilled(t *testing.T) {
	e := newEnv(t)
	var workDir string
	s := startAgent(t, e.srv.URL(), func(c *Config) { workDir = c.WorkDir })
	waitRegistered(t, s)
	app := newAppID()
	launchExecutor(t, e.nc, app, 0, `trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.05; done`)
	key := schemas.ExecutorKey(app, 0)
	pid := e.c.waitReport(key, "RUNNING").PID
	stdout := filepath.Join(workDir, app, "0", "stdout")
	waitFileContains(t, stdout, "ready")

	var ack schemas.Ack
	if err := call(t, e.nc, bus.WorkerCmdKillSubject(testWID), &schemas.Kill{AppID: app, ExecutorID: 0, Reason: "test"}, &ack); err != nil || !ack.OK {
		t.Fatalf("kill: %+v %v", ack, err)
	}
	sc := e.c.waitReport(key, "KILLED")
	if !strings.Contains(sc.Message, "test") {
		t.Fatalf("killed report message %q", sc.Message)
	}
	if !strings.Contains(readFile(t, stdout), "got-term") {
		t.Fatal("the child never saw SIGTERM")
	}
	if alive(pid) {
		t.Fatalf("pid %d still exists", pid)
	}
	// A second kill of the same executor is answered, not an error.
	if err := call(t, e.nc, bus.WorkerCmdKillSubject(testWID), &schemas.Kill{AppID: app, ExecutorID: 0}, &ack); err != nil || !ack.OK {
		t.Fatalf("kill of an ended executor: %+v %v", ack, err)
	}
}

func TestService_Kill_SigkillAfterGrace(t *testing.T) {
	e := newEnv(t)
	var workDir string
	s := startAgent(t, e.srv.URL(), func(c *Config) { workDir = c.WorkDir; c.KillGrace = time.Second })
	waitRegistered(t, s)
	d := newDriverID()
	launchDriver(t, e.nc, d, true, `trap '' TERM; echo ready; while :; do sleep 0.05; done`)
	pid := e.c.waitReport(d, "RUNNING").PID
	waitFileContains(t, filepath.Join(workDir, d, "stdout"), "ready")

	var ack schemas.Ack
	if err := call(t, e.nc, bus.WorkerCmdKillSubject(testWID), &schemas.Kill{DriverID: d}, &ack); err != nil || !ack.OK {
		t.Fatalf("kill: %+v %v", ack, err)
	}
	if !alive(pid) {
		t.Fatal("a child ignoring SIGTERM died before the grace period")
	}
	sc := e.c.waitReport(d, "KILLED")
	if sc.ExitCode == nil || *sc.ExitCode != 137 {
		t.Fatalf("exit code %v, want 137 (SIGKILL)", sc.ExitCode)
	}
	if alive(pid) {
		t.Fatalf("pid %d still exists", pid)
	}
	// Killed on request: a supervised driver is not relaunched.
	if got := e.c.stateList(d); strings.Join(got, ",") != "RUNNING,KILLED" {
		t.Fatalf("reports %v", got)
	}
}

func TestService_Kill_UnknownIsRefused(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	tests := []struct {
		name string
		kill schemas.Kill
	}{
		{"executor", schemas.Kill{AppID: newAppID(), ExecutorID: 4}},
		{"driver", schemas.Kill{DriverID: newDriverID()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ack schemas.Ack
			if err := call(t, e.nc, bus.WorkerCmdKillSubject(testWID), &tc.kill, &ack); err != nil {
				t.Fatal(err)
			}
			if ack.OK || !strings.Contains(ack.Message, "unknown") {
				t.Fatalf("ack %+v", ack)
			}
		})
	}
}

func TestService_LaunchExecutor_Idempotent(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	app := newAppID()
	key := schemas.ExecutorKey(app, 2)
	first := launchExecutor(t, e.nc, app, 2, "sleep 30")
	second := launchExecutor(t, e.nc, app, 2, "sleep 30")
	if !first.OK || !second.OK || !strings.Contains(second.Message, "already running") {
		t.Fatalf("acks %+v %+v", first, second)
	}
	pid := e.c.waitReport(key, "RUNNING").PID
	if execs, _ := s.runningLists(); len(execs) != 1 || execs[0].PID != pid {
		t.Fatalf("want one process %d, running %+v", pid, execs)
	}
	var ack schemas.Ack
	if err := call(t, e.nc, bus.WorkerCmdKillSubject(testWID), &schemas.Kill{AppID: app, ExecutorID: 2}, &ack); err != nil {
		t.Fatal(err)
	}
	e.c.waitReport(key, "KILLED")
	third := launchExecutor(t, e.nc, app, 2, "sleep 30")
	if !third.OK || !strings.Contains(third.Message, "already ended") {
		t.Fatalf("launch after the end: %+v", third)
	}
	if got := e.c.stateList(key); strings.Join(got, ",") != "RUNNING,KILLED" {
		t.Fatalf("reports %v", got)
	}
}

func TestService_Commands_EpochFencing(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	app := newAppID()
	var rep schemas.WorkerReport
	if err := call(t, e.nc, bus.WorkerCmdMasterSubject(testWID), &schemas.MasterChanged{Epoch: 5, Leader: "s1"}, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.WorkerID != testWID || rep.Instance != s.Instance() || rep.Epoch != 5 {
		t.Fatalf("report %+v", rep)
	}
	tests := []struct {
		name    string
		subject string
		req     any
		wantErr bool
	}{
		{"older launch", bus.WorkerCmdLaunchSubject(testWID), &schemas.LaunchExecutor{Epoch: 4, AppID: app, ExecutorID: 0, Command: sh("sleep 30"), Cores: 1, MemoryMB: 1}, true},
		{"older driver launch", bus.WorkerCmdLaunchDriverSubject(testWID), &schemas.LaunchDriver{Epoch: 4, DriverID: newDriverID(), Command: sh("sleep 30"), Cores: 1, MemoryMB: 1}, true},
		{"older kill", bus.WorkerCmdKillSubject(testWID), &schemas.Kill{Epoch: 1, AppID: app}, true},
		{"older master", bus.WorkerCmdMasterSubject(testWID), &schemas.MasterChanged{Epoch: 4}, true},
		{"equal launch", bus.WorkerCmdLaunchSubject(testWID), &schemas.LaunchExecutor{Epoch: 5, AppID: app, ExecutorID: 1, Command: sh("sleep 30"), Cores: 1, MemoryMB: 1}, false},
		// Only master-changed (and the registration reply) raise the epoch:
		// a launch or kill from an unannounced epoch is refused, and does
		// not lock the real scheduler out (epoch poisoning).
		{"unannounced epoch launch", bus.WorkerCmdLaunchSubject(testWID), &schemas.LaunchExecutor{Epoch: 999999, AppID: app, ExecutorID: 2, Command: sh("sleep 30"), Cores: 1, MemoryMB: 1}, true},
		{"unannounced epoch kill", bus.WorkerCmdKillSubject(testWID), &schemas.Kill{Epoch: 999999, AppID: app, ExecutorID: 1}, true},
		{"equal launch after the poisoning attempt", bus.WorkerCmdLaunchSubject(testWID), &schemas.LaunchExecutor{Epoch: 5, AppID: app, ExecutorID: 3, Command: sh("sleep 30"), Cores: 1, MemoryMB: 1}, false},
		{"newer master", bus.WorkerCmdMasterSubject(testWID), &schemas.MasterChanged{Epoch: 7, Leader: "s2"}, false},
		{"newer launch once announced", bus.WorkerCmdLaunchSubject(testWID), &schemas.LaunchExecutor{Epoch: 7, AppID: app, ExecutorID: 4, Command: sh("sleep 30"), Cores: 1, MemoryMB: 1}, false},
		{"older than the newest now", bus.WorkerCmdLaunchSubject(testWID), &schemas.LaunchExecutor{Epoch: 6, AppID: app, ExecutorID: 5, Command: sh("sleep 30"), Cores: 1, MemoryMB: 1}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := call(t, e.nc, tc.subject, tc.req, nil)
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("want accepted, got %v", err)
				}
				return
			}
			var be *bus.Error
			if strings.HasPrefix(tc.name, "unannounced") {
				if !errors.As(err, &be) || be.Code != bus.CodeUnavailable || !strings.Contains(be.Description, "unknown epoch") {
					t.Fatalf("want a 503 unknown epoch error, got %v", err)
				}
				return
			}
			if !errors.As(err, &be) || be.Code != bus.CodeConflict || !strings.Contains(be.Description, "invalid master") {
				t.Fatalf("want a 409 invalid master error, got %v", err)
			}
		})
	}
	if s.Epoch() != 7 {
		t.Fatalf("highest epoch %d, want 7", s.Epoch())
	}
	for _, id := range []int{0, 2} {
		if len(e.c.reports(schemas.ExecutorKey(app, id))) != 0 {
			t.Fatalf("refused launch %d started a process", id)
		}
	}
}

func TestService_LaunchDriver_Outcomes(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	tests := []struct {
		name      string
		supervise bool
		script    string
		final     string
		code      int
	}{
		{"exit 0 is FINISHED", false, "exit 0", "FINISHED", 0},
		{"exit 3 unsupervised is FAILED", false, "exit 3", "FAILED", 3},
		{"exit 0 supervised is FINISHED", true, "exit 0", "FINISHED", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newDriverID()
			launchDriver(t, e.nc, d, tc.supervise, tc.script)
			sc := e.c.waitReport(d, tc.final)
			if sc.ExitCode == nil || *sc.ExitCode != tc.code {
				t.Fatalf("exit code %v, want %d", sc.ExitCode, tc.code)
			}
			if got := e.c.stateList(d); strings.Join(got, ",") != "RUNNING,"+tc.final {
				t.Fatalf("reports %v", got)
			}
		})
	}
}

func TestService_LaunchDriver_SupervisedRelaunches(t *testing.T) {
	e := newEnv(t)
	var workDir string
	s := startAgent(t, e.srv.URL(), func(c *Config) { workDir = c.WorkDir })
	waitRegistered(t, s)
	d := newDriverID()
	launchDriver(t, e.nc, d, true, `echo "run $STOKER_DRIVER_ID"; exit 3`)
	bustest.Eventually(t, 20*time.Second, "three relaunches", func() bool {
		n := 0
		for _, sc := range e.c.reports(d) {
			if sc.State == "RELAUNCHING" {
				n++
			}
		}
		return n >= 3
	})
	var ack schemas.Ack
	if err := call(t, e.nc, bus.WorkerCmdKillSubject(testWID), &schemas.Kill{DriverID: d}, &ack); err != nil || !ack.OK {
		t.Fatalf("kill: %+v %v", ack, err)
	}
	e.c.waitReport(d, "KILLED")

	reports := e.c.reports(d)
	if reports[0].State != "RUNNING" || reports[0].Attempt != 1 {
		t.Fatalf("first report %+v", reports[0])
	}
	last := 1
	for i, sc := range reports[:len(reports)-1] {
		if sc.State != "RELAUNCHING" {
			continue
		}
		if sc.Attempt != last+1 || sc.ExitCode == nil || *sc.ExitCode != 3 {
			t.Fatalf("report %d: %+v, want attempt %d with exit code 3", i, sc, last+1)
		}
		last = sc.Attempt
		if next := reports[i+1]; next.State != "RUNNING" && next.State != "KILLED" {
			t.Fatalf("after RELAUNCHING came %s", next.State)
		}
	}
	// Every attempt appended to the same stdout.
	out := readFile(t, filepath.Join(workDir, d, "stdout"))
	if n := strings.Count(out, "run "+d); n < 3 {
		t.Fatalf("stdout has %d runs:\n%s", n, out)
	}
}

func TestService_StateAck_KillRequest(t *testing.T) {
	e := newEnv(t)
	app := newAppID()
	doomed := schemas.ExecutorKey(app, 1)
	e.c.set(func(c *cluster) {
		c.stateAck = func(sc *schemas.StateChange) *schemas.StateAck {
			if reportID(*sc) == doomed && sc.State == "RUNNING" {
				return &schemas.StateAck{Kill: true, Reason: "replaced"}
			}
			return &schemas.StateAck{}
		}
	})
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	launchExecutor(t, e.nc, app, 0, "sleep 30")
	launchExecutor(t, e.nc, app, 1, "sleep 30")
	pid := e.c.waitReport(doomed, "RUNNING").PID
	e.c.waitReport(doomed, "KILLED")
	if alive(pid) {
		t.Fatalf("pid %d still exists", pid)
	}
	if got := e.c.stateList(schemas.ExecutorKey(app, 0)); strings.Join(got, ",") != "RUNNING" {
		t.Fatalf("the other executor: %v", got)
	}
}

func TestService_StateReports_RetriedInOrderUntilAcked(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	// The registration service is unavailable for a while.
	e.c.set(func(c *cluster) { c.refuseStates = true })
	app := newAppID()
	key := schemas.ExecutorKey(app, 0)
	launchExecutor(t, e.nc, app, 0, "exit 0")
	bustest.Eventually(t, 15*time.Second, "refused report attempts", func() bool {
		e.c.mu.Lock()
		defer e.c.mu.Unlock()
		return e.c.refused >= 3
	})
	bustest.Eventually(t, 15*time.Second, "RUNNING and EXITED pending", func() bool { return s.reports.pending() == 2 })
	e.c.set(func(c *cluster) { c.refuseStates = false })
	e.c.waitReport(key, "EXITED")
	if got := e.c.stateList(key); strings.Join(got, ",") != "RUNNING,EXITED" {
		t.Fatalf("reports %v, want RUNNING then EXITED", got)
	}
}

// A registration slower to answer than the agent's first wait still gets
// the report taken: each attempt in a row without an answer waits longer,
// so a retry outlasts the backlog instead of expiring in it every time
// (with a fixed 2 s wait and 2.5 s per answer no attempt was ever
// answered).
func TestService_StateReports_SlowRegistration_RetryWaitsLonger(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	e.c.set(func(c *cluster) { c.stateDelay = reportTimeout + reportTimeout/4 })
	app := newAppID()
	key := schemas.ExecutorKey(app, 0)
	launchExecutor(t, e.nc, app, 0, "sleep 30")
	bustest.Eventually(t, 30*time.Second, "RUNNING acknowledged", func() bool { return s.reports.pending() == 0 })
	e.c.set(func(c *cluster) { c.stateDelay = 0 })
	if r := s.ReportRetries(); r == 0 || r > 2 {
		t.Fatalf("%d retries, want 1 or 2 (the first attempt's wait is shorter than the answer)", r)
	}
	if got := e.c.stateList(key); len(got) == 0 || got[0] != "RUNNING" {
		t.Fatalf("reports %v, want RUNNING", got)
	}
}

// Reports queued while registration is away go together once it is
// back: every one delivered, each process's in order, in fewer requests
// than reports.
func TestService_StateReports_Batched(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	e.c.set(func(c *cluster) { c.refuseStates = true })
	app := newAppID()
	const n = 20
	for i := range n {
		launchExecutor(t, e.nc, app, i, "exit 0")
	}
	bustest.Eventually(t, 15*time.Second, "every RUNNING and EXITED pending", func() bool { return s.reports.pending() == 2*n })
	e.c.set(func(c *cluster) { c.refuseStates = false; c.batches = 0 })
	for i := range n {
		key := schemas.ExecutorKey(app, i)
		e.c.waitReport(key, "EXITED")
		if got := e.c.stateList(key); strings.Join(got, ",") != "RUNNING,EXITED" {
			t.Fatalf("%s: reports %v, want RUNNING then EXITED", key, got)
		}
	}
	e.c.mu.Lock()
	defer e.c.mu.Unlock()
	if e.c.batches == 0 || e.c.batches >= 2*n {
		t.Fatalf("%d batch requests for %d reports, want them together", e.c.batches, 2*n)
	}
	if r := s.ReportRetries(); r == 0 {
		t.Fatalf("no retries counted while registration refused reports")
	}
}

// A registration that does not serve .states (one from before batches)
// gets the reports one at a time, in order.
func TestService_StateReports_WithoutBatches(t *testing.T) {
	e := newEnv(t)
	if err := e.c.batchSub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	e.c.set(func(c *cluster) { c.refuseStates = true })
	app := newAppID()
	for i := range 5 {
		launchExecutor(t, e.nc, app, i, "exit 0")
	}
	bustest.Eventually(t, 15*time.Second, "every report pending", func() bool { return s.reports.pending() == 10 })
	e.c.set(func(c *cluster) { c.refuseStates = false })
	for i := range 5 {
		key := schemas.ExecutorKey(app, i)
		e.c.waitReport(key, "EXITED")
		if got := e.c.stateList(key); strings.Join(got, ",") != "RUNNING,EXITED" {
			t.Fatalf("%s: reports %v, want RUNNING then EXITED", key, got)
		}
	}
}

func TestService_Master_ReportsRunning(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	app, d := newAppID(), newDriverID()
	launchExecutor(t, e.nc, app, 3, "sleep 30")
	launchDriver(t, e.nc, d, false, "sleep 30")
	epid := e.c.waitReport(schemas.ExecutorKey(app, 3), "RUNNING").PID
	dpid := e.c.waitReport(d, "RUNNING").PID
	var rep schemas.WorkerReport
	if err := call(t, e.nc, bus.WorkerCmdMasterSubject(testWID), &schemas.MasterChanged{Epoch: 3, Leader: "s2"}, &rep); err != nil {
		t.Fatal(err)
	}
	wantExec := schemas.RunningExecutor{AppID: app, ExecutorID: 3, Cores: 1, MemoryMB: 256, State: schemas.ExecutorRunning, PID: epid}
	wantDriver := schemas.RunningDriver{DriverID: d, Cores: 1, MemoryMB: 256, State: schemas.DriverRunning, PID: dpid, Attempt: 1}
	if rep.Epoch != 3 || len(rep.Executors) != 1 || rep.Executors[0] != wantExec || len(rep.Drivers) != 1 || rep.Drivers[0] != wantDriver {
		t.Fatalf("report %+v", rep)
	}
	if cores, mem := s.Used(); cores != 2 || mem != 512 {
		t.Fatalf("used %d cores %d MB", cores, mem)
	}
}

func TestService_Stop_KillsEveryChild(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), func(c *Config) { c.KillGrace = time.Second })
	waitRegistered(t, s)
	app, d := newAppID(), newDriverID()
	launchExecutor(t, e.nc, app, 0, "sleep 30")
	launchExecutor(t, e.nc, app, 1, "trap '' TERM; while :; do sleep 0.05; done")
	launchDriver(t, e.nc, d, true, "sleep 30")
	pids := []int{
		e.c.waitReport(schemas.ExecutorKey(app, 0), "RUNNING").PID,
		e.c.waitReport(schemas.ExecutorKey(app, 1), "RUNNING").PID,
		e.c.waitReport(d, "RUNNING").PID,
	}
	s.Stop()
	s.Stop()
	for _, pid := range pids {
		if alive(pid) {
			t.Fatalf("pid %d survived Stop", pid)
		}
	}
	// The shutdown path is not the kill path: nothing was reported KILLED,
	// and a stopped agent refuses work.
	for _, id := range []string{schemas.ExecutorKey(app, 0), schemas.ExecutorKey(app, 1), d} {
		if got := e.c.stateList(id); strings.Join(got, ",") != "RUNNING" {
			t.Fatalf("%s reports %v", id, got)
		}
	}
	if s.subs != nil {
		t.Fatal("subscriptions left after Stop")
	}
}

func TestService_Logs_Tail(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	app, d := newAppID(), newDriverID()
	launchExecutor(t, e.nc, app, 0, `printf 'line1\nline2\nline3\n'; echo err-line >&2`)
	key := schemas.ExecutorKey(app, 0)
	e.c.waitReport(key, "EXITED")
	launchDriver(t, e.nc, d, false, `echo driver-out; sleep 30`)
	e.c.waitReport(d, "RUNNING")

	tests := []struct {
		name      string
		req       schemas.LogsRequest
		want      string
		truncated bool
		code      int
	}{
		{"finished executor stdout", schemas.LogsRequest{ID: key}, "line1\nline2\nline3\n", false, 0},
		{"tail", schemas.LogsRequest{ID: key, MaxBytes: 6}, "line3\n", true, 0},
		{"stderr", schemas.LogsRequest{ID: key, Stderr: true}, "err-line\n", false, 0},
		{"running driver", schemas.LogsRequest{ID: d}, "driver-out\n", false, 0},
		{"unknown executor", schemas.LogsRequest{ID: schemas.ExecutorKey(app, 9)}, "", false, bus.CodeNotFound},
		{"unknown driver", schemas.LogsRequest{ID: newDriverID()}, "", false, bus.CodeNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rep schemas.LogsReply
			var err error
			bustest.Eventually(t, 10*time.Second, "log content", func() bool {
				rep = schemas.LogsReply{}
				err = call(t, e.nc, bus.WorkerLogsSubject(testWID), &tc.req, &rep)
				return err != nil || string(rep.Data) == tc.want
			})
			if tc.code != 0 {
				var be *bus.Error
				if !errors.As(err, &be) || be.Code != tc.code {
					t.Fatalf("want code %d, got %v", tc.code, err)
				}
				return
			}
			if err != nil || string(rep.Data) != tc.want || rep.Truncated != tc.truncated || rep.ID != tc.req.ID {
				t.Fatalf("reply %+v (%q) %v", rep, rep.Data, err)
			}
		})
	}
}

// Logs are read from the work dir, not only from memory: a driver's and an
// executor's output stay readable after the agent restarts (issue 9 item 3).
func TestService_Logs_SurviveAgentRestart(t *testing.T) {
	e := newEnv(t)
	work := t.TempDir()
	first := startAgent(t, e.srv.URL(), func(c *Config) { c.WorkDir = work })
	waitRegistered(t, first)
	app, d := newAppID(), newDriverID()
	launchExecutor(t, e.nc, app, 0, `echo exec-out`)
	launchDriver(t, e.nc, d, false, `echo driver-out`)
	e.c.waitReport(schemas.ExecutorKey(app, 0), "EXITED")
	e.c.waitReport(d, "FINISHED")
	first.Stop()

	second := startAgent(t, e.srv.URL(), func(c *Config) { c.WorkDir = work })
	waitRegistered(t, second)
	for id, want := range map[string]string{schemas.ExecutorKey(app, 0): "exec-out\n", d: "driver-out\n"} {
		var rep schemas.LogsReply
		if err := call(t, e.nc, bus.WorkerLogsSubject(testWID), &schemas.LogsRequest{ID: id}, &rep); err != nil || string(rep.Data) != want {
			t.Fatalf("logs of %s after the restart: %q %v, want %q", id, rep.Data, err, want)
		}
	}
	var be *bus.Error
	err := call(t, e.nc, bus.WorkerLogsSubject(testWID), &schemas.LogsRequest{ID: "../../etc"}, &schemas.LogsReply{})
	if !errors.As(err, &be) || (be.Code != bus.CodeNotFound && be.Code != bus.CodeBadRequest) {
		t.Fatalf("a path as id: %v, want refused", err)
	}
}

// TestService_Commands_StaleRefused: a launch or kill delivered after its
// sender's authority ended (ValidUntil plus the skew allowance) is refused,
// whatever its epoch: bytes a partitioned link held back.
func TestService_Commands_StaleRefused(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), func(c *Config) { c.CommandSkew = 100 * time.Millisecond })
	waitRegistered(t, s)
	app := newAppID()
	if ack := launchExecutor(t, e.nc, app, 0, "sleep 30"); !ack.OK {
		t.Fatalf("launch: %+v", ack)
	}
	past := time.Now().Add(-time.Second)
	for name, tc := range map[string]struct {
		subject string
		req     any
	}{
		"kill":          {bus.WorkerCmdKillSubject(testWID), &schemas.Kill{AppID: app, ExecutorID: 0, ValidUntil: past}},
		"launch":        {bus.WorkerCmdLaunchSubject(testWID), &schemas.LaunchExecutor{AppID: app, ExecutorID: 1, Command: sh("sleep 30"), Cores: 1, MemoryMB: 1, ValidUntil: past}},
		"launch driver": {bus.WorkerCmdLaunchDriverSubject(testWID), &schemas.LaunchDriver{DriverID: newDriverID(), Command: sh("sleep 30"), Cores: 1, MemoryMB: 1, ValidUntil: past}},
	} {
		err := call(t, e.nc, tc.subject, tc.req, nil)
		var be *bus.Error
		if !errors.As(err, &be) || be.Code != bus.CodeConflict || !strings.Contains(be.Description, "stale command") {
			t.Fatalf("%s: want a 409 stale command error, got %v", name, err)
		}
	}
	// Within the allowance it is obeyed.
	var ack schemas.Ack
	if err := call(t, e.nc, bus.WorkerCmdKillSubject(testWID), &schemas.Kill{AppID: app, ExecutorID: 0, ValidUntil: time.Now().Add(time.Second)}, &ack); err != nil || !ack.OK {
		t.Fatalf("fresh kill: %v %+v", err, ack)
	}
	e.c.waitReport(schemas.ExecutorKey(app, 0), string(schemas.ExecutorKilled))
}

// agentAtEpoch starts a registered agent that a master of epoch leads.
func agentAtEpoch(t *testing.T, e *env, epoch uint64) *Service {
	t.Helper()
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	if err := call(t, e.nc, bus.WorkerCmdMasterSubject(testWID), &schemas.MasterChanged{Epoch: epoch, Leader: "s1"}, &schemas.WorkerReport{}); err != nil {
		t.Fatal(err)
	}
	return s
}

// A batch of launches is carried out launch by launch, each with its own
// fences and idempotence: the refused one (an older epoch) is answered in
// its place, the others run, and the same batch again starts nothing new.
func TestService_LaunchExecutors_EachOnItsOwn(t *testing.T) {
	e := newEnv(t)
	s := agentAtEpoch(t, e, 5)
	app := newAppID()
	batch := &schemas.LaunchExecutors{Launches: []schemas.LaunchExecutor{
		{Epoch: 5, AppID: app, ExecutorID: 0, Command: sh("sleep 30"), Cores: 1, MemoryMB: 1},
		{Epoch: 4, AppID: app, ExecutorID: 1, Command: sh("sleep 30"), Cores: 1, MemoryMB: 1},
		{Epoch: 5, AppID: app, ExecutorID: 2, Command: sh("sleep 30"), Cores: 1, MemoryMB: 1},
	}}
	var acks schemas.LaunchAcks
	if err := call(t, e.nc, bus.WorkerCmdLaunchExecutorsSubject(testWID), batch, &acks); err != nil {
		t.Fatal(err)
	}
	if len(acks.Acks) != 3 || !acks.Acks[0].OK || acks.Acks[1].OK || !acks.Acks[2].OK ||
		!strings.Contains(acks.Acks[1].Message, "invalid master") || acks.Acks[1].Code != bus.CodeConflict || acks.Acks[0].Code != 0 {
		t.Fatalf("acks %+v, want OK, refused as an invalid master (409, as alone), OK", acks.Acks)
	}
	e.c.waitReport(schemas.ExecutorKey(app, 0), "RUNNING")
	e.c.waitReport(schemas.ExecutorKey(app, 2), "RUNNING")
	keys := s.ExecutorKeys()
	slices.Sort(keys)
	if got := strings.Join(keys, ","); got != schemas.ExecutorKey(app, 0)+","+schemas.ExecutorKey(app, 2) {
		t.Fatalf("running %s, want executors 0 and 2", got)
	}
	acks = schemas.LaunchAcks{}
	if err := call(t, e.nc, bus.WorkerCmdLaunchExecutorsSubject(testWID), batch, &acks); err != nil {
		t.Fatal(err)
	}
	if len(acks.Acks) != 3 || !acks.Acks[0].OK || !strings.Contains(acks.Acks[0].Message, "already running") {
		t.Fatalf("the batch again: %+v, want executor 0 already running", acks.Acks)
	}
	if n := len(s.ExecutorKeys()); n != 2 {
		t.Fatalf("%d executors after the batch came twice, want 2", n)
	}
	// An empty or oversized batch is refused whole.
	err := call(t, e.nc, bus.WorkerCmdLaunchExecutorsSubject(testWID), &schemas.LaunchExecutors{}, nil)
	var be *bus.Error
	if !errors.As(err, &be) || be.Code != bus.CodeBadRequest {
		t.Fatalf("empty batch: %v, want a 400", err)
	}
}

// A batch of kills is carried out kill by kill, each with its own fences:
// the stale one and the unknown one are answered in their place, the
// others killed and reported KILLED.
func TestService_KillExecutors_EachOnItsOwn(t *testing.T) {
	e := newEnv(t)
	s := agentAtEpoch(t, e, 5)
	app := newAppID()
	launch := &schemas.LaunchExecutors{}
	for i := range 3 {
		launch.Launches = append(launch.Launches, schemas.LaunchExecutor{Epoch: 5, AppID: app, ExecutorID: i, Command: sh("sleep 30"), Cores: 1, MemoryMB: 1})
	}
	var lacks schemas.LaunchAcks
	if err := call(t, e.nc, bus.WorkerCmdLaunchExecutorsSubject(testWID), launch, &lacks); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		e.c.waitReport(schemas.ExecutorKey(app, i), "RUNNING")
	}
	kills := &schemas.KillExecutors{Kills: []schemas.Kill{
		{Epoch: 5, AppID: app, ExecutorID: 0, Reason: "application ended"},
		{Epoch: 4, AppID: app, ExecutorID: 1, Reason: "from an older leader"},
		{Epoch: 5, AppID: app, ExecutorID: 9, Reason: "never launched"},
		{Epoch: 5, AppID: app, ExecutorID: 2, Reason: "application ended"},
	}}
	var acks schemas.KillAcks
	if err := call(t, e.nc, bus.WorkerCmdKillExecutorsSubject(testWID), kills, &acks); err != nil {
		t.Fatal(err)
	}
	if len(acks.Acks) != 4 || !acks.Acks[0].OK || acks.Acks[1].OK || !strings.Contains(acks.Acks[1].Message, "invalid master") ||
		acks.Acks[2].OK || !strings.Contains(acks.Acks[2].Message, "unknown executor") || !acks.Acks[3].OK {
		t.Fatalf("acks %+v, want OK, refused as an invalid master, refused as unknown, OK", acks.Acks)
	}
	e.c.waitReport(schemas.ExecutorKey(app, 0), string(schemas.ExecutorKilled))
	e.c.waitReport(schemas.ExecutorKey(app, 2), string(schemas.ExecutorKilled))
	if keys := s.ExecutorKeys(); len(keys) != 1 || keys[0] != schemas.ExecutorKey(app, 1) {
		t.Fatalf("running %v, want executor 1 alone (its kill was stale)", keys)
	}
	err := call(t, e.nc, bus.WorkerCmdKillExecutorsSubject(testWID), &schemas.KillExecutors{}, nil)
	var be *bus.Error
	if !errors.As(err, &be) || be.Code != bus.CodeBadRequest {
		t.Fatalf("empty batch: %v, want a 400", err)
	}
}
