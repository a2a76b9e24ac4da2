package bench

import (
	"testing"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// TestTracker_Shortfall: a failed placement check names the records by
// state and the apps short of their count, not just "lost".
func TestTracker_Shortfall(t *testing.T) {
	tr := &tracker{state: map[string]tracked{}, running: map[string]int{}, created: map[string]int{},
		onWorker: map[string]int{}, seenAt: map[string]time.Time{}, runningAt: map[string]time.Time{}}
	put := func(app string, id int, st schemas.ExecutorState) {
		// A whole record, as the watch brings it.
		data, err := bus.EncodeRecord(&schemas.Executor{AppID: app, ID: id, WorkerID: "w1", State: st, Cores: 1,
			CreatedAt: time.Now(), UpdatedAt: time.Now(), Message: "m"})
		if err != nil {
			t.Fatal(err)
		}
		x, err := decodeTracked(data)
		if err != nil {
			t.Fatal(err)
		}
		tr.update(x)
	}
	put("app-a", 0, schemas.ExecutorRunning)
	put("app-a", 1, schemas.ExecutorRunning)
	put("app-b", 0, schemas.ExecutorLaunching)
	put("app-b", 1, schemas.ExecutorLaunching)
	put("app-b", 1, schemas.ExecutorRunning)
	put("app-b", 2, schemas.ExecutorFailed)
	got := tr.shortfall(map[string]int{"app-a": 2, "app-b": 3, "app-c": 1})
	want := "records by state: FAILED 1 LAUNCHING 1 RUNNING 3; app app-b: 1 of 3 RUNNING, 3 records created; app app-c: 0 of 1 RUNNING, 0 records created"
	if got != want {
		t.Fatalf("shortfall:\n got %s\nwant %s", got, want)
	}
}
