package agent

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

// simAgent starts an agent whose launcher is l, on a real embedded bus.
func simAgent(t *testing.T, e *env, l *SimLauncher) (*Service, string) {
	t.Helper()
	var dir string
	s := startAgent(t, e.srv.URL(), func(c *Config) { c.Launcher = l; dir = c.WorkDir })
	waitRegistered(t, s)
	return s, dir
}

// TestSim_RunsUntilKilled: a simulated executor reports RUNNING with a pid
// no real process can have, writes nothing to disk, runs until killed and
// is then reported KILLED with the exit code of SIGTERM.
func TestSim_RunsUntilKilled(t *testing.T) {
	e := newEnv(t)
	_, dir := simAgent(t, e, &SimLauncher{})
	app := newAppID()
	if ack := launchExecutor(t, e.nc, app, 0, "never run"); !ack.OK {
		t.Fatalf("launch: %+v", ack)
	}
	key := schemas.ExecutorKey(app, 0)
	sc := e.c.waitReport(key, "RUNNING")
	if sc.PID <= simPIDBase {
		t.Fatalf("simulated pid %d, want > %d", sc.PID, simPIDBase)
	}
	time.Sleep(200 * time.Millisecond)
	if got := e.c.stateList(key); len(got) != 1 {
		t.Fatalf("states before the kill: %v, want only RUNNING", got)
	}
	var ack schemas.Ack
	if err := call(t, e.nc, bus.WorkerCmdKillSubject(testWID), &schemas.Kill{AppID: app, ExecutorID: 0, Reason: "test"}, &ack); err != nil || !ack.OK {
		t.Fatalf("kill: %+v %v", ack, err)
	}
	sc = e.c.waitReport(key, "KILLED")
	if sc.ExitCode == nil || *sc.ExitCode != 143 {
		t.Fatalf("killed exit code %v, want 143", sc.ExitCode)
	}
	if _, err := os.Stat(dir + "/" + app); !os.IsNotExist(err) {
		t.Fatalf("a simulated executor made its work dir (stat: %v)", err)
	}
}

// TestSim_RunTimeExits: with a run time, an executor exits 0 on its own.
func TestSim_RunTimeExits(t *testing.T) {
	e := newEnv(t)
	simAgent(t, e, &SimLauncher{RunTime: 50 * time.Millisecond})
	app := newAppID()
	launchExecutor(t, e.nc, app, 0, "x")
	sc := e.c.waitReport(schemas.ExecutorKey(app, 0), "EXITED")
	if sc.ExitCode == nil || *sc.ExitCode != 0 {
		t.Fatalf("exit code %v, want 0", sc.ExitCode)
	}
	if got := e.c.stateList(schemas.ExecutorKey(app, 0)); len(got) != 2 || got[0] != "RUNNING" {
		t.Fatalf("states %v, want RUNNING then EXITED", got)
	}
}

// TestSim_FailureRate: the configured fraction of executors fail with exit
// code 1, the others keep running; the draw decides which.
func TestSim_FailureRate(t *testing.T) {
	e := newEnv(t)
	n := 0
	// Every other draw is below the rate: executors 0, 2, 4, ... fail.
	l := &SimLauncher{FailRate: 0.5, Rand: func() float64 { n++; return float64(n%2) * 0.9 }}
	simAgent(t, e, l)
	app := newAppID()
	for i := range 6 {
		launchExecutor(t, e.nc, app, i, "x")
	}
	for i := range 6 {
		key := schemas.ExecutorKey(app, i)
		if i%2 == 1 {
			sc := e.c.waitReport(key, "FAILED")
			if sc.ExitCode == nil || *sc.ExitCode != 1 || sc.Message != SimExitMessage {
				t.Fatalf("%s: exit %v message %q", key, sc.ExitCode, sc.Message)
			}
			continue
		}
		e.c.waitReport(key, "RUNNING")
	}
	time.Sleep(100 * time.Millisecond)
	for i := 0; i < 6; i += 2 {
		if got := e.c.stateList(schemas.ExecutorKey(app, i)); len(got) != 1 {
			t.Fatalf("executor %d: states %v, want only RUNNING", i, got)
		}
	}
	// A rate of 1 with a run time: every one fails, after the run time.
	e2 := newEnv(t)
	simAgent(t, e2, &SimLauncher{FailRate: 1, RunTime: 30 * time.Millisecond})
	launchExecutor(t, e2.nc, app, 7, "x")
	e2.c.waitReport(schemas.ExecutorKey(app, 7), "FAILED")
}

// TestFleet_SecureOwnIdentities: a fleet of simulated agents on a secured
// bus, each on its own agent credential, registers and heartbeats as real
// agents do; a silenced agent stops heartbeating and sends no leave.
func TestFleet_SecureOwnIdentities(t *testing.T) {
	srv := bustest.StartSecure(t)
	c := startCluster(t, srv.ConnAs(t, auth.RoleRegistration, "reg-1"))
	hb := srv.ConnAs(t, auth.RoleHeartbeat, "hb-1")
	if _, err := hb.Subscribe(bus.WorkerHeartbeat, func(m *nats.Msg) {
		var h schemas.Heartbeat
		if bus.Decode(m.Data, bus.FormatOf(m.Header), &h) == nil {
			c.set(func(c *cluster) { c.hbs = append(c.hbs, h) })
		}
	}); err != nil {
		t.Fatal(err)
	}
	ids := []string{"sim-1", "sim-2", "sim-3"}
	f, err := StartFleet(context.Background(), FleetConfig{
		IDs: ids,
		Connect: func(_ context.Context, wid string) (*nats.Conn, error) {
			return bus.Connect(srv.URL(), bus.ConnectOptions{Name: wid, CredsData: srv.Creds(t, auth.RoleAgent, wid), CA: srv.CA})
		},
		Agent: Config{NATSURL: srv.URL(), Host: "sim", Cores: 2, MemoryMB: 1024, WorkDir: t.TempDir(),
			HeartbeatInterval: 50 * time.Millisecond, PingWait: 20 * time.Millisecond,
			CommandReplyPrefixes: auth.CommandReplyPrefixes, Launcher: &SimLauncher{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := f.WaitRegistered(ctx); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range c.registrations() {
		seen[r.WorkerID] = true
	}
	if len(seen) != 3 {
		t.Fatalf("registered %v, want the 3 ids", seen)
	}
	f.Silence(1)
	time.Sleep(100 * time.Millisecond)
	before := 0
	for _, h := range c.heartbeats() {
		if h.WorkerID == "sim-2" {
			before++
		}
	}
	bustest.Eventually(t, 10*time.Second, "the others heartbeat on", func() bool {
		n := 0
		for _, h := range c.heartbeats() {
			if h.WorkerID == "sim-1" {
				n++
			}
		}
		return n > before+5
	})
	after := 0
	for _, h := range c.heartbeats() {
		if h.WorkerID == "sim-2" {
			after++
		}
	}
	if after != before {
		t.Fatalf("a silenced agent heartbeat %d times more", after-before)
	}
	if c.set(func(c *cluster) {}); len(c.leaves) != 0 {
		t.Fatalf("a silenced agent sent a leave: %+v", c.leaves)
	}
}
