package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

// The scheduler's mirror skips poisoned records and never acts on them: a
// worker with negative cores gets no executor, a value that is not a
// record in stoker-apps does not stop scheduling, and an executor
// RUNNING on a worker that has no record is neither LOST nor killed.
func TestService_Poisoned_NeverActedUpon(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	good, bad := c.agent("w1"), c.agent("w-neg")
	c.worker("w1", 4)
	raw := map[string]map[string]string{
		bus.BucketWorkers:   {"w-neg": `{"id":"w-neg","state":"ALIVE","cores":-5,"memory_mb":8192}`},
		bus.BucketApps:      {"app-junk": "not a record"},
		bus.BucketExecutors: {"app-2.0": `{"app_id":"app-2","id":0,"worker_id":"w-ghost","state":"RUNNING","cores":1,"memory_mb":64}`},
	}
	for name, kvs := range raw {
		b, _ := bus.FindBucket(name)
		for k, v := range kvs {
			if _, err := b.In(c.st).Put(ctx, k, []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.app("app-1", schemas.AppWaiting, 4)
	s := c.scheduler("s1", nil)
	bustest.Eventually(t, 10*time.Second, "app-1 gets 4 executors", func() bool {
		l, _, _ := good.snapshot()
		return len(l) == 4
	})
	// Two more planner passes over the same view change nothing.
	passes := func() uint64 { s.view.mu.Lock(); defer s.view.mu.Unlock(); return s.planner.passes }
	p0 := passes()
	bustest.Eventually(t, 10*time.Second, "two more planner passes", func() bool { return passes() >= p0+2 })
	if l, d, k := bad.snapshot(); len(l)+len(d)+len(k) != 0 {
		t.Fatalf("the negative-cores worker got commands: %v %v %v", l, d, k)
	}
	x, _, err := bus.Get[schemas.Executor](ctx, c.st.Executors, "app-2.0")
	if err != nil || x.State != schemas.ExecutorRunning {
		t.Fatalf("executor on a worker with no record = %+v (%v), want untouched RUNNING", x, err)
	}
	if n := s.view.poison.Reported(); n != 3 {
		t.Fatalf("reported %d poisoned records, want 3 (once each)", n)
	}
}
