package tests

import (
	"context"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

// TestElastic_TwoSixOne is issue 14's elastic must-show on real agents: an
// app that asks for 2, then 6, then 1 executors has those counts RUNNING
// (and no more holding resources); the time each change took is logged.
func TestElastic_TwoSixOne(t *testing.T) {
	c := NewCluster(t, ClusterOptions{WorkerTimeout: 2 * time.Second, HeartbeatInterval: 200 * time.Millisecond, Insecure: true})
	c.StartServices()
	c.StartAgent("a", 4, "2g")
	c.StartAgent("b", 4, "2g")
	c.Eventually(30*time.Second, "agents ALIVE", func() bool {
		for _, id := range []string{"a", "b"} {
			if w := c.Worker(id); w == nil || w.State != schemas.WorkerAlive {
				return false
			}
		}
		return true
	})
	app, err := sdk.RegisterApp(context.Background(), c.NC(), schemas.RegisterApp{
		Name: "elastic", MaxCores: 8, InitialExecutors: 2,
		Executor: schemas.ExecutorSpec{Command: []string{"sleep", "3600"}, Cores: 1, MemoryMB: 64},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Release)
	counts := func() (running, holding int) {
		a := c.app(app.ID)
		if a == nil {
			return -1, -1
		}
		for _, e := range a.Executors {
			if e.State == schemas.ExecutorRunning {
				running++
			}
			if e.State.Holds() {
				holding++
			}
		}
		return running, holding
	}
	for i, want := range []int{2, 6, 1} {
		start := time.Now()
		if i > 0 {
			if err := app.RequestTotalExecutors(context.Background(), want); err != nil {
				t.Fatal(err)
			}
		}
		c.Eventually(60*time.Second, "executors RUNNING as requested", func() bool {
			r, h := counts()
			return r == want && h == want
		})
		t.Logf("asked for %d executors: %d RUNNING after %s", want, want, time.Since(start).Round(time.Millisecond))
		// And it stays there.
		time.Sleep(1500 * time.Millisecond)
		if r, h := counts(); r != want || h != want {
			t.Fatalf("asked for %d: %d RUNNING, %d holding a little later", want, r, h)
		}
	}
}

// TestElastic_PiGrowsAndShrinksWithBacklog: examples/pi with
// --dynamic-allocation, submitted as a driver, runs two waves of slices:
// the executors RUNNING grow past the one it starts with while a wave's
// backlog lasts, fall back to --min-executors between the waves (idle
// executors released through the SDK, the app still running), grow again
// for the second wave, and pi prints its estimate. The counts are replayed
// from the executors' events in the cluster's history (no timing assert).
func TestElastic_PiGrowsAndShrinksWithBacklog(t *testing.T) {
	c := fullCluster(t, nil, map[string]int{"a": 2, "b": 2})
	since := time.Now()
	out, errOut, err := c.CLI("submit", "--name", "pi-elastic", "--wait", "--", piBin,
		"--dynamic-allocation", "--min-executors", "1", "--max-executors", "3", "--executor-idle-timeout", "500ms",
		"--slices", "12", "--samples-per-slice", "20000000", "--waves", "2", "--wave-pause", "2m")
	if err != nil {
		t.Fatalf("stoker submit --wait: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	driverID := strings.Fields(out)[0]
	logs, errOut, err := c.CLI("logs", driverID)
	if err != nil || !strings.Contains(logs, "Pi is roughly 3.1") {
		t.Fatalf("stoker logs %s: %v %s\n%s", driverID, err, errOut, logs)
	}
	if stderrLog, _, err := c.CLI("logs", "--stderr", driverID); err == nil {
		t.Logf("driver's stderr:\n%s", stderrLog)
	}
	var appID string
	for _, a := range c.apps() {
		if a.DriverID == driverID {
			appID = a.ID
		}
	}
	if appID == "" {
		t.Fatalf("no app of driver %s", driverID)
	}

	// Replay the executors' states in the order they happened.
	var evs []bus.StoredEvent
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = bus.ReadEvents(ctx, c.NC(), bus.EventQuery{Since: time.Since(since) + time.Minute, Kind: "executor"}, func(e bus.StoredEvent) error {
		if strings.HasPrefix(e.ID, appID+".") {
			evs = append(evs, e)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].At.Before(evs[j].At) })
	running := map[string]bool{}
	var counts []int // the RUNNING count after each change
	for _, e := range evs {
		was := running[e.ID]
		switch schemas.ExecutorState(e.State) {
		case schemas.ExecutorRunning:
			running[e.ID] = true
		case schemas.ExecutorLaunching:
		default:
			delete(running, e.ID)
		}
		if was != running[e.ID] {
			counts = append(counts, len(running))
		}
	}
	t.Logf("executors RUNNING, change by change: %v", counts)
	// Grow (>= 2), shrink back to the minimum (1, the app still running:
	// the app's end would take it to 0), grow again (>= 2).
	phase, peaks := 0, 0
	for _, n := range counts {
		switch {
		case phase == 0 && n >= 2:
			phase, peaks = 1, 1
		case phase == 1 && n == 1:
			phase = 2
		case phase == 2 && n >= 2:
			phase, peaks = 3, 2
		}
	}
	if peaks < 2 {
		t.Fatalf("executors RUNNING went %v: want a rise past 1, a fall to 1, a second rise (phase %d)", counts, phase)
	}
	if max := slices.Max(counts); max > 3 {
		t.Fatalf("%d executors RUNNING at once, above --max-executors 3", max)
	}
}
