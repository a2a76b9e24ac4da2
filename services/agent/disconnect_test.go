package agent

import (
	"testing"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

// cutOffAgent starts an agent whose link to the bus goes through a proxy,
// launches an executor and a driver (real processes), and returns their
// pids, the keys and the proxy.
func cutOffAgent(t *testing.T, e *env, stopAfter time.Duration) (p *bustest.Proxy, execKey, driverID string, pids []int) {
	t.Helper()
	e.c.set(func(c *cluster) { c.ackBeats = true }) // a live cluster acknowledges beats
	p = bustest.StartProxy(t, e.srv.Addr().String())
	nc, err := bus.Connect(p.URL(), bus.ConnectOptions{Name: t.Name() + "-agent", Retry: true, ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s := startAgent(t, e.srv.URL(), func(c *Config) {
		c.NC, c.StopAfterDisconnect, c.KillGrace = nc, stopAfter, 200*time.Millisecond
	})
	waitRegistered(t, s)
	app := newAppID()
	if ack := launchExecutor(t, e.nc, app, 0, "sleep 60"); !ack.OK {
		t.Fatalf("launch: %+v", ack)
	}
	driverID = newDriverID()
	if ack := launchDriver(t, e.nc, driverID, true, "sleep 60"); !ack.OK {
		t.Fatalf("launch driver: %+v", ack)
	}
	execKey = schemas.ExecutorKey(app, 0)
	pids = []int{e.c.waitReport(execKey, "RUNNING").PID, e.c.waitReport(driverID, "RUNNING").PID}
	return p, execKey, driverID, pids
}

// TestAgent_StopAfterDisconnect_KillsOnce: an agent cut off from the bus
// (half-open socket) for longer than --stop-after-disconnect kills its
// executor and driver itself (at most once: the supervised driver is not
// relaunched), and reports them KILLED once the link heals.
func TestAgent_StopAfterDisconnect_KillsOnce(t *testing.T) {
	e := newEnv(t)
	const bound = time.Second
	p, execKey, driverID, pids := cutOffAgent(t, e, bound)
	cutAt := time.Now()
	p.Cut()
	bustest.Eventually(t, 15*time.Second, "children killed by the cut-off agent", func() bool {
		return !alive(pids[0]) && !alive(pids[1])
	})
	t.Logf("children gone %s after the cut (bound %s, kill grace 200ms)", time.Since(cutAt).Round(time.Millisecond), bound)
	if since := time.Since(cutAt); since < bound {
		t.Fatalf("children killed %s after the cut, before the bound %s", since, bound)
	}
	p.Heal()
	e.c.waitReport(execKey, string(schemas.ExecutorKilled))
	e.c.waitReport(driverID, string(schemas.DriverKilled))
	time.Sleep(500 * time.Millisecond)
	if got := e.c.stateList(driverID); len(got) != 2 {
		t.Fatalf("driver reports %v: want RUNNING then KILLED, no relaunch", got)
	}
}

// TestAgent_StopAfterDisconnect_OffKeeps: with the default (off) a cut-off
// agent keeps its children (at least once).
func TestAgent_StopAfterDisconnect_OffKeeps(t *testing.T) {
	e := newEnv(t)
	p, execKey, _, pids := cutOffAgent(t, e, 0)
	p.Cut()
	time.Sleep(3 * time.Second)
	if !alive(pids[0]) || !alive(pids[1]) {
		t.Fatalf("children killed while cut off with stop-after-disconnect off")
	}
	p.Heal()
	time.Sleep(300 * time.Millisecond)
	if got := e.c.stateList(execKey); len(got) != 1 {
		t.Fatalf("executor reports %v after the heal, want only RUNNING", got)
	}
}

// TestAgent_StopAfterDisconnect_ClusterLost (issue 16 item 7, a minority
// server): the agent's NATS server still answers (every flush succeeds)
// but no heartbeat service acknowledges its heartbeats any more, as when
// that server is cut off with a minority of the bus: the agent has lost the
// cluster and kills its children itself, once; the KILLED reports go out.
func TestAgent_StopAfterDisconnect_ClusterLost(t *testing.T) {
	e := newEnv(t)
	e.c.set(func(c *cluster) { c.ackBeats = true })
	s := startAgent(t, e.srv.URL(), func(c *Config) {
		c.StopAfterDisconnect, c.KillGrace = time.Second, 200*time.Millisecond
	})
	waitRegistered(t, s)
	app := newAppID()
	if ack := launchExecutor(t, e.nc, app, 0, "sleep 60"); !ack.OK {
		t.Fatalf("launch: %+v", ack)
	}
	driverID := newDriverID()
	if ack := launchDriver(t, e.nc, driverID, true, "sleep 60"); !ack.OK {
		t.Fatalf("launch driver: %+v", ack)
	}
	execKey := schemas.ExecutorKey(app, 0)
	pids := []int{e.c.waitReport(execKey, "RUNNING").PID, e.c.waitReport(driverID, "RUNNING").PID}
	// Acknowledged beats for longer than the bound: nothing is killed.
	time.Sleep(1500 * time.Millisecond)
	if !alive(pids[0]) || !alive(pids[1]) {
		t.Fatalf("children killed while the cluster acknowledged every heartbeat")
	}
	lostAt := time.Now()
	e.c.set(func(c *cluster) { c.ackBeats = false })
	bustest.Eventually(t, 15*time.Second, "children killed by the agent that lost the cluster", func() bool {
		return !alive(pids[0]) && !alive(pids[1])
	})
	t.Logf("children gone %s after the last acknowledgement (bound 1s, kill grace 200ms)", time.Since(lostAt).Round(time.Millisecond))
	e.c.waitReport(execKey, string(schemas.ExecutorKilled))
	e.c.waitReport(driverID, string(schemas.DriverKilled))
	time.Sleep(500 * time.Millisecond)
	if got := e.c.stateList(driverID); len(got) != 2 {
		t.Fatalf("driver reports %v: want RUNNING then KILLED, no relaunch", got)
	}
}

// TestAgent_StopAfterDisconnect_CutBeforeFirstAck: the agent registers and
// launches work, but not one heartbeat is ever acknowledged, as when its
// NATS server is cut off with a minority right after the registration
// (the partition test's minority began 100 ms after a1 registered, and a1
// ran its executor beside the replacement for the whole fault): the
// accepted registration is the last contact, and the children are killed
// once the bound has passed since then.
func TestAgent_StopAfterDisconnect_CutBeforeFirstAck(t *testing.T) {
	e := newEnv(t)
	const bound = time.Second
	s := startAgent(t, e.srv.URL(), func(c *Config) {
		c.StopAfterDisconnect, c.KillGrace = bound, 200*time.Millisecond
	})
	waitRegistered(t, s)
	registered := time.Now()
	app := newAppID()
	if ack := launchExecutor(t, e.nc, app, 0, "sleep 60"); !ack.OK {
		t.Fatalf("launch: %+v", ack)
	}
	execKey := schemas.ExecutorKey(app, 0)
	pid := e.c.waitReport(execKey, "RUNNING").PID
	bustest.Eventually(t, 15*time.Second, "the executor killed by an agent never acknowledged", func() bool {
		return !alive(pid)
	})
	t.Logf("executor gone %s after the registration (bound %s, kill grace 200ms)", time.Since(registered).Round(time.Millisecond), bound)
	e.c.waitReport(execKey, string(schemas.ExecutorKilled))
}
