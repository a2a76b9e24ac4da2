package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

// drainApp registers an app of n one-core executors running sleep, capped
// at n cores, and waits until n are RUNNING.
func drainApp(t *testing.T, c *Cluster, n int) *sdk.App {
	t.Helper()
	app, err := sdk.RegisterApp(context.Background(), c.NC(), schemas.RegisterApp{
		Name: "drained", MaxCores: n,
		Executor: schemas.ExecutorSpec{Command: []string{"sleep", "3600"}, Cores: 1, MemoryMB: 64},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Release)
	c.Eventually(60*time.Second, fmt.Sprintf("%d executors RUNNING", n), func() bool {
		return len(executorsOn(c, app.ID, schemas.ExecutorRunning)) == n
	})
	return app
}

// executorsOn maps the app's executors in state st to their workers.
func executorsOn(c *Cluster, appID string, st schemas.ExecutorState) map[string]string {
	out := map[string]string{}
	if a := c.app(appID); a != nil {
		for _, e := range a.Executors {
			if e.State == st {
				out[schemas.ExecutorKey(appID, e.ID)] = e.WorkerID
			}
		}
	}
	return out
}

// sampler counts, every 100 ms until stopped, the app's RUNNING executors
// in KV and keeps the lowest count seen. It reads through a store bound on
// the test's goroutine and never fails the test itself.
type sampler struct {
	lowest int
	reads  int
	stop   chan struct{}
	done   sync.WaitGroup
}

func sampleRunning(c *Cluster, appID string) *sampler {
	st := c.Store()
	s := &sampler{lowest: 1 << 30, stop: make(chan struct{})}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			es, err := bus.List[schemas.Executor](ctx, st.Executors)
			cancel()
			if err == nil {
				n := 0
				for _, e := range es {
					if e.Value.AppID == appID && e.Value.State == schemas.ExecutorRunning {
						n++
					}
				}
				s.lowest, s.reads = min(s.lowest, n), s.reads+1
			}
			select {
			case <-s.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	c.t.Cleanup(s.end)
	return s
}

func (s *sampler) end() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.done.Wait()
}

// events reads the stoker-events stream in order (stoker events --json).
func events(t *testing.T, c *Cluster) []schemas.Event {
	t.Helper()
	out, errOut, err := c.CLI("events", "--last", "5000", "--json")
	if err != nil {
		t.Fatalf("stoker events: %v\n%s", err, errOut)
	}
	var evs []schemas.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev schemas.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("event %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// checkReplacedFirst checks, in the events stream, that every executor of
// app killed on the drained worker was killed only after a replacement on
// another worker had become RUNNING, one replacement per kill: the k-th
// kill comes after base+k executors became RUNNING elsewhere, base being
// those that ran elsewhere before the drain.
func checkReplacedFirst(t *testing.T, c *Cluster, appID, drained string, base int, killed []string) {
	t.Helper()
	evs := events(t, c)
	placedOn := map[string]string{} // executor key → worker, from "placed on W"
	runningElsewhere := map[string]bool{}
	kills := 0
	for _, ev := range evs {
		switch {
		case ev.Kind == "executor" && strings.HasPrefix(ev.ID, appID+".") && strings.HasPrefix(ev.Message, "placed on "):
			placedOn[ev.ID] = strings.TrimPrefix(ev.Message, "placed on ")
		case ev.Kind == "executor" && strings.HasPrefix(ev.ID, appID+".") && ev.State == string(schemas.ExecutorRunning) &&
			placedOn[ev.ID] != "" && placedOn[ev.ID] != drained:
			runningElsewhere[ev.ID] = true
		case ev.Kind == "worker" && ev.ID == drained && ev.State == schemas.PhaseDecommissioning &&
			strings.HasPrefix(ev.Message, "killing executor "+appID+"."):
			kills++
			if !strings.Contains(ev.Message, "replaced") || len(runningElsewhere) < base+kills {
				t.Fatalf("kill %d on %s (%q) came when %d executors had become RUNNING on other workers, want %d",
					kills, drained, ev.Message, len(runningElsewhere), base+kills)
			}
		}
	}
	if kills < len(killed) {
		t.Fatalf("%d drain kills in the events stream, want %d (%v)", kills, len(killed), killed)
	}
}

func waitWorker(c *Cluster, id string, st schemas.WorkerState) {
	c.t.Helper()
	c.Eventually(90*time.Second, "worker "+id+" "+string(st), func() bool {
		w := c.Worker(id)
		return w != nil && w.State == st
	})
}

// TestDrain_ReplacesElsewhereFirst_SurvivesSchedulerKill is issue 14's drain
// must-show on real agents and processes: with an app of 4 executors, 2 on
// worker a, `stoker drain a` makes a DECOMMISSIONING; with no room
// elsewhere nothing is killed; the scheduler is SIGKILLed mid-drain and a
// new one started; a new worker brings room, the new scheduler (which knows
// the drain only from KV) places the replacements there and kills a's
// copies only once they are RUNNING (checked in the events stream); the
// app never has fewer than 3 executors RUNNING; a ends DECOMMISSIONED, and
// its agent, still running, does not come back ALIVE.
func TestDrain_ReplacesElsewhereFirst_SurvivesSchedulerKill(t *testing.T) {
	c := NewCluster(t, ClusterOptions{})
	c.StartServices()
	c.StartAgent("a", 2, "1g")
	c.StartAgent("b", 2, "1g")
	waitWorker(c, "a", schemas.WorkerAlive)
	waitWorker(c, "b", schemas.WorkerAlive)
	app := drainApp(t, c, 4)
	onA := []string{}
	for key, wid := range executorsOn(c, app.ID, schemas.ExecutorRunning) {
		if wid == "a" {
			onA = append(onA, key)
		}
	}
	if len(onA) != 2 {
		t.Fatalf("executors on a: %v, want 2", onA)
	}
	s := sampleRunning(c, app.ID)

	out, errOut, err := c.CLI("drain", "a", "--deadline", "10m")
	if err != nil || !strings.Contains(out, "draining") {
		t.Fatalf("stoker drain a: %v\n%s%s", err, out, errOut)
	}
	table, _, _ := c.CLI("workers")
	if !strings.Contains(table, schemas.PhaseDecommissioning) {
		t.Fatalf("stoker workers does not show a DECOMMISSIONING:\n%s", table)
	}
	time.Sleep(2 * time.Second) // passes run: no room elsewhere, so nothing may be killed
	if got := executorsOn(c, app.ID, schemas.ExecutorRunning); len(got) != 4 {
		t.Fatalf("with no room elsewhere the drain changed the app: %v", got)
	}

	sched := c.procByName("scheduler")
	sched.Signal(syscall.SIGKILL)
	if err := sched.Wait(10 * time.Second); err == nil {
		t.Log("scheduler exited")
	}
	c.StartService("scheduler")
	c.StartAgent("c", 2, "1g")

	waitWorker(c, "a", schemas.WorkerDecommissioned)
	s.end()
	final := executorsOn(c, app.ID, schemas.ExecutorRunning)
	if len(final) != 4 {
		t.Fatalf("after the drain: RUNNING %v, want 4", final)
	}
	for key, wid := range final {
		if wid == "a" {
			t.Fatalf("executor %s still RUNNING on the drained worker", key)
		}
	}
	for _, key := range onA {
		ex := executorsOn(c, app.ID, schemas.ExecutorKilled)
		if ex[key] != "a" {
			t.Fatalf("a's executor %s not KILLED on a: killed %v", key, ex)
		}
	}
	if s.reads == 0 || s.lowest < 3 {
		t.Fatalf("the app had as few as %d executors RUNNING during the drain (%d reads), want at least 3", s.lowest, s.reads)
	}
	checkReplacedFirst(t, c, app.ID, "a", 2, onA)

	// The agent still runs and beats; its worker stays DECOMMISSIONED.
	time.Sleep(2 * time.Second)
	if w := c.Worker("a"); w == nil || w.State != schemas.WorkerDecommissioned {
		t.Fatalf("drained worker a came back: %+v", w)
	}
	if p := c.procByName("agent-a"); p.Exited() {
		t.Fatalf("agent a exited after a stoker drain")
	}
}

// TestDrain_AgentSIGTERM_SelfDrains: an agent started with --drain-grace
// drains its worker on SIGTERM (the replacement RUNNING on another worker
// before its executor is killed), then leaves and exits 0.
func TestDrain_AgentSIGTERM_SelfDrains(t *testing.T) {
	c := NewCluster(t, ClusterOptions{})
	c.StartServices()
	a := c.StartAgent("a", 2, "1g", "--drain-grace", "5m")
	c.StartAgent("b", 2, "1g")
	waitWorker(c, "a", schemas.WorkerAlive)
	waitWorker(c, "b", schemas.WorkerAlive)
	app := drainApp(t, c, 4)
	var onA []string
	for key, wid := range executorsOn(c, app.ID, schemas.ExecutorRunning) {
		if wid == "a" {
			onA = append(onA, key)
		}
	}
	c.StartAgent("c", 2, "1g")
	waitWorker(c, "c", schemas.WorkerAlive)
	s := sampleRunning(c, app.ID)
	a.Signal(syscall.SIGTERM)
	if err := a.Wait(5 * time.Minute); err != nil {
		t.Fatalf("agent a after SIGTERM: %v", err)
	}
	waitWorker(c, "a", schemas.WorkerDecommissioned)
	s.end()
	c.Eventually(30*time.Second, "4 executors RUNNING off a", func() bool {
		got := executorsOn(c, app.ID, schemas.ExecutorRunning)
		for _, wid := range got {
			if wid == "a" {
				return false
			}
		}
		return len(got) == 4
	})
	if s.reads == 0 || s.lowest < 3 {
		t.Fatalf("the app had as few as %d executors RUNNING during the self-drain, want at least 3", s.lowest)
	}
	checkReplacedFirst(t, c, app.ID, "a", 4-len(onA), onA)
	w := c.Worker("a")
	if w.Drain == nil || w.Drain.By != "agent" {
		t.Fatalf("worker a's drain = %+v, want by the agent", w.Drain)
	}
}

// TestDrain_DeadlineKillsWhatIsLeft: with room elsewhere for one of two
// executors, the drain replaces one and kills the other at the deadline.
func TestDrain_DeadlineKillsWhatIsLeft(t *testing.T) {
	c := NewCluster(t, ClusterOptions{})
	c.StartServices()
	c.StartAgent("a", 2, "1g")
	waitWorker(c, "a", schemas.WorkerAlive)
	app := drainApp(t, c, 2)
	c.StartAgent("b", 1, "1g")
	waitWorker(c, "b", schemas.WorkerAlive)
	out, errOut, err := c.CLI("drain", "a", "--deadline", "20s", "--wait")
	if err != nil || !strings.Contains(out, "DECOMMISSIONED") {
		t.Fatalf("stoker drain a --wait: %v\n%s%s", err, out, errOut)
	}
	running := executorsOn(c, app.ID, schemas.ExecutorRunning)
	if len(running) != 1 {
		t.Fatalf("RUNNING after the drain: %v, want the one replacement on b", running)
	}
	for _, wid := range running {
		if wid != "b" {
			t.Fatalf("RUNNING after the drain: %v, want it on b", running)
		}
	}
	byDeadline, replaced := 0, 0
	for _, ev := range events(t, c) {
		if ev.Kind == "worker" && ev.ID == "a" && strings.HasPrefix(ev.Message, "killing executor ") {
			switch {
			case strings.Contains(ev.Message, "deadline"):
				byDeadline++
			case strings.Contains(ev.Message, "replaced"):
				replaced++
			}
		}
	}
	if byDeadline != 1 || replaced != 1 {
		t.Fatalf("drain kills: %d replaced, %d at the deadline; want 1 and 1", replaced, byDeadline)
	}
}
