package scheduler

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stoker/stoker/schemas"
)

// Every created launch is in exactly one batch, of one worker, at most
// size long, in its order within the worker; workers take turns.
func TestLaunchBatches(t *testing.T) {
	var ls []ExecutorLaunch
	created := []bool{}
	// w1: 5 launches, w2: 2, w3: 1 not created.
	for i, wid := range []string{"w1", "w2", "w1", "w1", "w3", "w1", "w2", "w1"} {
		ls = append(ls, ExecutorLaunch{Executor: schemas.Executor{AppID: "app", ID: i, WorkerID: wid}})
		created = append(created, wid != "w3")
	}
	got := launchBatches(ls, created, 2)
	want := [][]int{{0, 2}, {1, 6}, {3, 5}, {7}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("batches %v, want %v", got, want)
	}
	seen := map[int]bool{}
	for _, b := range got {
		if len(b) == 0 || len(b) > 2 {
			t.Errorf("batch %v: size %d", b, len(b))
		}
		for _, j := range b {
			if ls[j].Executor.WorkerID != ls[b[0]].Executor.WorkerID {
				t.Errorf("batch %v mixes workers", b)
			}
			if seen[j] {
				t.Errorf("launch %d in two batches", j)
			}
			seen[j] = true
		}
		if !slices.IsSorted(b) {
			t.Errorf("batch %v out of order", b)
		}
	}
	if len(seen) != 7 {
		t.Errorf("%d launches batched, want the 7 created", len(seen))
	}
	if b := launchBatches(ls, make([]bool, len(ls)), 2); len(b) != 0 {
		t.Errorf("nothing created: batches %v", b)
	}
}

func TestDebounceWait(t *testing.T) {
	const d = 5 * time.Millisecond
	for _, tc := range []struct {
		name      string
		busy      bool
		sinceLast time.Duration
		want      time.Duration
	}{
		{"after an applied plan: the whole debounce", true, time.Hour, d},
		{"after an applied plan, at once", true, 0, d},
		{"idle, the last pass long ago: at once", false, time.Hour, d - time.Hour},
		{"idle, the last pass 2ms ago: the rest of the debounce", false, 2 * time.Millisecond, 3 * time.Millisecond},
		{"first pass", false, time.Since(time.Time{}), d - time.Since(time.Time{})},
	} {
		got := debounceWait(tc.busy, tc.sinceLast, d)
		if (got > 0) != (tc.want > 0) || (tc.want > 0 && got != tc.want) {
			t.Errorf("%s: wait %s, want %s", tc.name, got, tc.want)
		}
	}
}
