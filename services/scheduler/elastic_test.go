package scheduler

import (
	"slices"
	"testing"

	"github.com/stoker/stoker/schemas"
)

// holding lists the ids of an app's executors that hold resources and are
// not being killed.
func (h *Harness) holding(app string) []int {
	var ids []int
	for _, e := range h.Snap.Executors {
		if e.AppID == app && e.State.Holds() {
			if _, killing := h.Snap.Killing[KillTarget(schemas.Kill{AppID: app, ExecutorID: e.ID})]; !killing {
				ids = append(ids, e.ID)
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// settle marks killed executors KILLED and runs passes until stable.
func (h *Harness) settle() {
	h.t.Helper()
	for i := 0; i < 5; i++ {
		for k := range h.Snap.Killing {
			for key, e := range h.Snap.Executors {
				if "executor/"+key == k && e.State.Holds() {
					c := *e
					c.State = schemas.ExecutorKilled
					h.Snap.Executors[key] = &c
				}
			}
		}
		if p := h.Schedule(); p.Empty() {
			return
		}
	}
}

func TestSchedule_Elastic_TwoSixOne(t *testing.T) {
	h := NewHarness(t)
	h.Workers(4, 4, 64<<10)
	a := h.App("app-1", 1, 512, 8)
	two := 2
	a.RequestedExecutors = &two
	h.settle()
	if got := h.holding("app-1"); len(got) != 2 {
		t.Fatalf("asked 2: holding %v", got)
	}
	for _, tc := range []struct{ want, got int }{{6, 6}, {1, 1}, {20, 8}, {0, 0}} {
		n := tc.want
		c := *h.Snap.Apps["app-1"]
		c.RequestedExecutors = &n
		h.Snap.Apps["app-1"] = &c
		h.settle()
		if got := h.holding("app-1"); len(got) != tc.got {
			t.Fatalf("asked %d: holding %v, want %d (core cap 8)", tc.want, got, tc.got)
		}
	}
}

func TestSchedule_Elastic_KillChosenAndNewestFirst(t *testing.T) {
	h := NewHarness(t)
	h.Workers(2, 8, 64<<10)
	a := h.App("app-1", 1, 512, 0)
	a.State, a.NextExecutorID = schemas.AppRunning, 5
	for i := 0; i < 5; i++ {
		h.Executor("app-1", i, "w00", 1, 512, schemas.ExecutorRunning)
	}
	three := 3
	a.RequestedExecutors = &three
	a.KillExecutors = []int{1}
	p := h.Schedule()
	var killed []int
	for _, k := range p.Kills {
		killed = append(killed, k.Kill.ExecutorID)
	}
	slices.Sort(killed)
	// 1 by name; of 0,2,3,4 the newest (4) goes to get down to 3.
	if !slices.Equal(killed, []int{1, 4}) || len(p.LaunchExecutors) != 0 {
		t.Fatalf("kills %v launches %d, want [1 4] and none", killed, len(p.LaunchExecutors))
	}
	// The next pass (kills not yet acted on) neither kills more nor replaces.
	if p := Schedule(h.Snap, h.Opts); !p.Empty() {
		t.Fatalf("second pass: %+v", p)
	}
}
