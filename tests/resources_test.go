package tests

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

// gpuPairs maps each executor holding resources to "worker/address", and
// reports whether two hold the same pair.
func gpuPairs(t *testing.T, a *schemas.AppView) (map[int]string, bool) {
	t.Helper()
	out := map[int]string{}
	seen := map[string]bool{}
	dup := false
	for _, e := range a.Executors {
		if !e.State.Holds() {
			continue
		}
		for _, addr := range e.Resources["gpu"] {
			p := e.WorkerID + "/" + addr
			dup = dup || seen[p]
			seen[p] = true
			out[e.ID] = p
		}
	}
	return out, dup
}

func runningCount(a *schemas.AppView) int {
	n := 0
	for _, e := range a.Executors {
		if e.State == schemas.ExecutorRunning {
			n++
		}
	}
	return n
}

// TestResources_EightGPUs_NinthWaits_KillFreesItsAddress_Failover is issue
// 14's must-show on real agents: two agents with --resource gpu=0,1,2,3,
// an app wanting nine one-GPU executors gets eight distinct (worker,
// address) pairs, each executor sees its own address in
// STOKER_RESOURCE_GPU and CUDA_VISIBLE_DEVICES, the ninth waits; killing
// one frees exactly its address (the ninth gets it); a SIGKILLed
// scheduler's successor keeps every assignment, and hands out a freed
// address again exactly.
func TestResources_EightGPUs_NinthWaits_KillFreesItsAddress_Failover(t *testing.T) {
	c := NewCluster(t, ClusterOptions{WorkerTimeout: 2 * time.Second, HeartbeatInterval: 200 * time.Millisecond})
	h := &haCluster{Cluster: c, schedulers: map[string]*Proc{}, agents: map[string]*Proc{}}
	c.StartService("registration", "--heartbeat-interval", c.hb, "--worker-timeout", c.timeout)
	c.StartService("heartbeat", "--heartbeat-interval", c.hb, "--worker-timeout", c.timeout)
	c.StartService("recovery", "--recovery-timeout", "2s")
	h.startScheduler("s1")
	h.startScheduler("s2")
	for _, id := range []string{"gpu-a", "gpu-b"} {
		h.agents[id] = h.StartAgent(id, 16, "4g", "--resource", "gpu=0,1,2,3", "--no-gpu-detect")
	}
	h.Eventually(30*time.Second, "both gpu agents ALIVE", func() bool {
		for _, id := range []string{"gpu-a", "gpu-b"} {
			if w := h.Worker(id); w == nil || w.State != schemas.WorkerAlive || len(w.Resources["gpu"]) != 4 {
				return false
			}
		}
		return true
	})
	app, err := sdk.RegisterApp(context.Background(), h.NC(), schemas.RegisterApp{
		Name: "gpus", MaxCores: 9,
		Executor: schemas.ExecutorSpec{Cores: 1, MemoryMB: 64, Resources: schemas.Amounts{"gpu": 1},
			Command: []string{"/bin/sh", "-c", `echo "$STOKER_RESOURCE_GPU $CUDA_VISIBLE_DEVICES"; exec sleep 3600`}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Release)

	var view *schemas.AppView
	h.Eventually(60*time.Second, "8 executors RUNNING", func() bool {
		view = h.app(app.ID)
		return view != nil && runningCount(view) == 8
	})
	pairs, dup := gpuPairs(t, view)
	if len(pairs) != 8 || dup {
		t.Fatalf("gpu pairs %v (duplicate %v), want 8 distinct", pairs, dup)
	}
	// Each process sees its own address.
	for _, e := range view.Executors {
		if e.State != schemas.ExecutorRunning {
			continue
		}
		addr := e.Resources["gpu"][0]
		path := filepath.Join(h.Dir, "work", e.WorkerID, app.ID, strconv.Itoa(e.ID), "stdout")
		h.Eventually(10*time.Second, "executor output", func() bool {
			b, _ := os.ReadFile(path)
			return strings.TrimSpace(string(b)) == addr+" "+addr
		})
	}
	// The ninth waits: a few passes later still eight, every gpu taken.
	time.Sleep(2 * time.Second)
	if view = h.app(app.ID); len(view.Executors) != 8 {
		t.Fatalf("%d executor records, want 8 (the ninth waits for a gpu)", len(view.Executors))
	}
	for _, w := range h.workers() {
		if len(w.ResourcesUsed["gpu"]) != 4 {
			t.Fatalf("worker %s: gpus used %v, want all four", w.ID, w.ResourcesUsed)
		}
	}

	// Killing one frees exactly its address: the replacement gets it.
	killOne := func(round string) {
		t.Helper()
		view := h.app(app.ID)
		before, _ := gpuPairs(t, view)
		var victim schemas.ExecutorView
		for _, e := range view.Executors {
			if e.State == schemas.ExecutorRunning && e.PID > 0 {
				victim = e
				break
			}
		}
		freed := before[victim.ID]
		if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
			t.Fatalf("%s: kill executor %d (pid %d): %v", round, victim.ID, victim.PID, err)
		}
		var after map[int]string
		h.Eventually(60*time.Second, round+": a replacement RUNNING", func() bool {
			v := h.app(app.ID)
			var d bool
			after, d = gpuPairs(t, v)
			if d {
				t.Fatalf("%s: two executors hold one gpu: %v", round, after)
			}
			return runningCount(v) == 8 && len(after) == 8 && after[victim.ID] == ""
		})
		var got []string
		for id, p := range after {
			if before[id] != p {
				got = append(got, p)
			}
		}
		if !slices.Equal(got, []string{freed}) {
			t.Fatalf("%s: killed executor %d held %s; new assignments %v, want exactly [%s]", round, victim.ID, freed, got, freed)
		}
	}
	killOne("before failover")

	// Failover: the new leader keeps every assignment and plans nothing new.
	before, _ := gpuPairs(t, h.app(app.ID))
	leader := h.status().Leader
	h.schedulers[leader.ID].Signal(syscall.SIGKILL)
	_ = h.schedulers[leader.ID].Wait(5 * time.Second)
	h.waitNewLeader(leader.Epoch, 60*time.Second)
	time.Sleep(2 * time.Second)
	view = h.app(app.ID)
	after, dup := gpuPairs(t, view)
	if dup || !mapsEqual(before, after) || runningCount(view) != 8 {
		t.Fatalf("after failover: pairs %v (dup %v, %d running), before %v", after, dup, runningCount(view), before)
	}
	killOne("after failover")
}

func mapsEqual(a, b map[int]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
