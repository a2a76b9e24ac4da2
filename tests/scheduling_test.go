package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

// fullCluster starts every service and the given agents (id → cores, 2g each).
func fullCluster(t testing.TB, schedulerArgs []string, agents map[string]int) *Cluster {
	t.Helper()
	c := NewCluster(t, ClusterOptions{})
	c.StartServices(schedulerArgs...)
	for id, cores := range agents {
		c.StartAgent(id, cores, "2g")
	}
	c.Eventually(30*time.Second, "agents ALIVE and cluster ALIVE", func() bool {
		for id := range agents {
			if w := c.Worker(id); w == nil || w.State != schemas.WorkerAlive {
				return false
			}
		}
		var st schemas.Status
		out, _, err := c.CLI("status", "--json")
		return err == nil && jsonInto(out, &st) == nil && st.State == schemas.ClusterAlive
	})
	return c
}

func (c *Cluster) apps() []schemas.AppView {
	c.t.Helper()
	var apps []schemas.AppView
	c.CLIJSON(&apps, "apps")
	return apps
}

func (c *Cluster) app(id string) *schemas.AppView {
	for _, a := range c.apps() {
		if a.ID == id {
			return &a
		}
	}
	return nil
}

func (c *Cluster) drivers() []schemas.Driver {
	c.t.Helper()
	var ds []schemas.Driver
	c.CLIJSON(&ds, "drivers")
	return ds
}

func (c *Cluster) driver(id string) *schemas.Driver {
	for _, d := range c.drivers() {
		if d.ID == id {
			return &d
		}
	}
	return nil
}

func (c *Cluster) workers() []schemas.WorkerView {
	c.t.Helper()
	var ws []schemas.WorkerView
	c.CLIJSON(&ws, "workers")
	return ws
}

// registerApp registers a client-mode app through the SDK, as `stoker run`
// does: it heartbeats and answers recovery's master-changed until the test ends.
func (c *Cluster) registerApp(name string, cores int, maxCores int, argv ...string) string {
	c.t.Helper()
	app, err := sdk.RegisterApp(context.Background(), c.NC(), schemas.RegisterApp{
		Name: name, MaxCores: maxCores,
		Executor: schemas.ExecutorSpec{Command: argv, Cores: cores, MemoryMB: 64},
	})
	if err != nil {
		c.t.Fatalf("register app: %v", err)
	}
	c.t.Cleanup(app.Release)
	return app.ID
}

func runningPerWorker(a *schemas.AppView) []int {
	per := map[string]int{}
	for _, e := range a.Executors {
		if e.State == schemas.ExecutorRunning {
			per[e.WorkerID]++
		}
	}
	var out []int
	for _, n := range per {
		out = append(out, n)
	}
	sort.Ints(out)
	return out
}

func TestScheduling_SpreadOutAndConsolidated(t *testing.T) {
	for _, tc := range []struct {
		name   string
		spread bool
		want   []int
	}{
		{"spread out", true, []int{2, 2}},
		{"consolidated", false, []int{4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fullCluster(t, []string{fmt.Sprintf("--spread-out=%v", tc.spread)}, map[string]int{"a": 4, "b": 4})
			id := c.registerApp("spread", 1, 4, "sleep", "300")
			var got []int
			c.Eventually(30*time.Second, "4 executors RUNNING", func() bool {
				a := c.app(id)
				if a == nil {
					return false
				}
				got = runningPerWorker(a)
				n := 0
				for _, x := range got {
					n += x
				}
				return n == 4
			})
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("executors per worker %v, want %v", got, tc.want)
			}
			// Kill the app: no process left, usage back to 0.
			var pids []int
			for _, e := range c.app(id).Executors {
				pids = append(pids, e.PID)
			}
			if _, errOut, err := c.CLI("kill", id); err != nil {
				t.Fatalf("stoker kill: %v %s", err, errOut)
			}
			c.Eventually(30*time.Second, "usage back to zero", func() bool {
				for _, w := range c.workers() {
					if w.CoresUsed != 0 || w.MemoryUsedMB != 0 {
						return false
					}
				}
				return true
			})
			c.Eventually(10*time.Second, "executor processes gone", func() bool {
				for _, pid := range pids {
					if pid > 0 && syscall.Kill(pid, 0) == nil {
						return false
					}
				}
				return true
			})
			if a := c.app(id); a.State != schemas.AppKilled {
				t.Fatalf("app state %s, want KILLED", a.State)
			}
		})
	}
}

func TestSubmit_PiFinishesWithEstimate(t *testing.T) {
	c := fullCluster(t, nil, map[string]int{"a": 2, "b": 2})
	out, errOut, err := c.CLI("submit", "--name", "pi", "--wait", "--", piBin, "--slices", "4", "--samples-per-slice", "20000")
	if err != nil {
		t.Fatalf("stoker submit --wait: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	id := strings.Fields(out)[0]
	if !strings.HasPrefix(id, schemas.DriverIDPrefix) {
		t.Fatalf("first word of submit output %q is not a driver id", out)
	}
	logs, errOut, err := c.CLI("logs", id)
	if err != nil || !strings.Contains(logs, "Pi is roughly 3.1") {
		t.Fatalf("stoker logs %s: %v %s\n%s", id, err, errOut, logs)
	}
}

func TestApp_MissingExecutorCommandFails(t *testing.T) {
	c := fullCluster(t, []string{"--max-executor-retries", "3"}, map[string]int{"a": 2})
	id := c.registerApp("broken", 1, 1, "/nonexistent/stoker-test-binary")
	c.Eventually(60*time.Second, "app FAILED after the retries", func() bool {
		a := c.app(id)
		return a != nil && a.State == schemas.AppFailed
	})
	if a := c.app(id); a.ConsecutiveFailures < 3 {
		t.Fatalf("consecutive failures %d, want >= 3", a.ConsecutiveFailures)
	}
}

func TestDriver_SupervisedRelaunched(t *testing.T) {
	c := fullCluster(t, nil, map[string]int{"a": 2})
	marker := filepath.Join(c.Dir, "runs")
	script := fmt.Sprintf("echo run >> %s; n=$(wc -l < %s); if [ $n -lt 3 ]; then exit 3; fi; exit 0", marker, marker)
	out, errOut, err := c.CLI("submit", "--supervise", "--", "/bin/sh", "-c", script)
	if err != nil {
		t.Fatalf("submit: %v %s", err, errOut)
	}
	id := strings.Fields(out)[0]
	c.Eventually(60*time.Second, "supervised driver FINISHED after relaunches", func() bool {
		d := c.driver(id)
		return d != nil && d.State == schemas.DriverFinished
	})
	d := c.driver(id)
	if d.Attempts < 3 {
		t.Fatalf("attempts %d, want >= 3 (exited 3 twice, then 0)", d.Attempts)
	}
	b, _ := os.ReadFile(marker)
	if n := strings.Count(string(b), "run"); n != 3 {
		t.Fatalf("driver ran %d times, want 3", n)
	}
}

func TestDriver_UnsupervisedFails(t *testing.T) {
	c := fullCluster(t, nil, map[string]int{"a": 2})
	out, _, err := c.CLI("submit", "--wait", "--", "/bin/sh", "-c", "exit 3")
	if err == nil {
		t.Fatalf("submit --wait of a driver exiting 3 succeeded: %s", out)
	}
	id := strings.Fields(out)[0]
	if d := c.driver(id); d == nil || d.State != schemas.DriverFailed {
		t.Fatalf("driver %+v, want FAILED", d)
	}
}

func TestSubmit_InvalidInputRejected(t *testing.T) {
	c := fullCluster(t, nil, map[string]int{"a": 2})
	for _, args := range [][]string{
		{"submit", "--driver-cores", "0", "--", "true"},
		{"submit", "--driver-cores", "-1", "--", "true"},
		{"submit", "--driver-memory", "0", "--", "true"},
		{"submit", "--driver-memory", "lots", "--", "true"},
		{"submit", "--"},
		{"run", "--executor-cores", "0", "--", "true"},
		{"run", "--executor-memory", "12x", "--", "true"},
	} {
		out, errOut, err := c.CLI(args...)
		if err == nil {
			t.Errorf("stoker %v: accepted, want an error (stdout %q)", args, out)
			continue
		}
		if strings.TrimSpace(errOut) == "" {
			t.Errorf("stoker %v: failed with no message", args)
		}
	}
	if ds := c.drivers(); len(ds) != 0 {
		t.Fatalf("invalid submissions created drivers: %+v", ds)
	}
	// Too big for any worker today: accepted with a warning, and it waits.
	out, errOut, err := c.CLI("submit", "--driver-cores", "64", "--", "true")
	if err != nil || !strings.Contains(strings.ToLower(errOut), "warn") {
		t.Fatalf("oversized submission: err %v, stderr %q (want accepted with a warning)", err, errOut)
	}
	id := strings.Fields(out)[0]
	time.Sleep(time.Second)
	if d := c.driver(id); d == nil || d.State != schemas.DriverSubmitted {
		t.Fatalf("oversized driver %+v, want SUBMITTED (waiting)", d)
	}
}

func TestAgent_RefusesOldEpoch(t *testing.T) {
	c := fullCluster(t, []string{"--id", "s1"}, map[string]int{"a": 2})
	// A second scheduler takes over from a killed first: epoch E1 < E2.
	var st schemas.Status
	c.CLIJSON(&st, "status")
	old := st.Leader.Epoch
	c.StartService("scheduler", "--id", "s2")
	first := c.findProc("scheduler")
	c.mu.Lock()
	for _, p := range c.procs {
		if p.Name == "scheduler" && !p.Exited() {
			first = p
			break
		}
	}
	c.mu.Unlock()
	first.Signal(syscall.SIGKILL)
	c.Eventually(30*time.Second, "a newer epoch ALIVE", func() bool {
		out, _, err := c.CLI("status", "--json")
		return err == nil && jsonInto(out, &st) == nil && st.Leader != nil && st.Leader.Epoch > old && st.State == schemas.ClusterAlive
	})
	// The agent has seen the new epoch (recovery's master-changed); a
	// launch from the old master (a scheduler credential) is refused.
	err := bus.Call(context.Background(), c.ConnAs(auth.RoleScheduler, "s1"), bus.WorkerCmdLaunchSubject("a"), &schemas.LaunchExecutor{
		Epoch: old, AppID: "app-20260101000000-abcdef", ExecutorID: 0,
		Command: []string{"sleep", "100"}, Cores: 1, MemoryMB: 64,
	}, nil)
	var e *bus.Error
	if err == nil || !asBusError(err, &e) || e.Code != bus.CodeConflict {
		t.Fatalf("launch with the old epoch %d (current %d): %v, want a 409 refusal", old, st.Leader.Epoch, err)
	}
}

// TestRun_CommandExitsEndsRun: `stoker run` runs CMD once per executor; when
// every copy exits 0 the app is FINISHED and the command exits 0, without
// the cluster relaunching finished executors.
func TestRun_CommandExitsEndsRun(t *testing.T) {
	c := fullCluster(t, nil, map[string]int{"a": 2, "b": 2})
	marker := filepath.Join(c.Dir, "ran")
	out, errOut, err := c.CLI("run", "--executors", "3", "--", "/bin/sh", "-c", "echo $STOKER_EXECUTOR_ID >> "+marker)
	if err != nil {
		t.Fatalf("stoker run: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	id := strings.Fields(out)[0]
	a := c.app(id)
	if a == nil || a.State != schemas.AppFinished {
		t.Fatalf("app after run: %+v, want FINISHED", a)
	}
	if len(a.Executors) != 3 {
		t.Fatalf("%d executors launched, want exactly 3 (no relaunch of finished ones): %+v", len(a.Executors), a.Executors)
	}
	b, _ := os.ReadFile(marker)
	if n := strings.Count(string(b), "\n"); n != 3 {
		t.Fatalf("the command ran %d times, want 3", n)
	}
}

// TestRun_LaunchErrorShown (issue 9 item 3): an executor that could not be
// started keeps its launch error in its record, and `stoker run`, `apps
// --json` and `logs` show it.
func TestRun_LaunchErrorShown(t *testing.T) {
	c := fullCluster(t, []string{"--max-executor-retries", "2"}, map[string]int{"a": 2})
	out, errOut, err := c.CLI("run", "--", "/nonexistent/stoker-test-binary")
	if err == nil {
		t.Fatalf("stoker run of a missing binary succeeded:\n%s\n%s", out, errOut)
	}
	if !strings.Contains(out, "launch failed: ") || !strings.Contains(out, "/nonexistent/stoker-test-binary") {
		t.Fatalf("stoker run does not show the launch error:\nstdout: %s\nstderr: %s", out, errOut)
	}
	id := strings.Fields(out)[0]
	a := c.app(id)
	if a == nil || len(a.Executors) == 0 || !strings.Contains(a.Executors[0].Error, "/nonexistent/stoker-test-binary") {
		t.Fatalf("apps --json: executors %+v, want the launch error in error", a)
	}
	out, errOut, err = c.CLI("logs", schemas.ExecutorKey(id, 0))
	if err == nil || !strings.Contains(out+errOut, "its launch failed") || strings.Contains(out+errOut, "no responders") {
		t.Fatalf("stoker logs of an executor that never started: %v\n%s%s", err, out, errOut)
	}
}
