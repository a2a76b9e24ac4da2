package schemas

import (
	"errors"
	"strings"
	"testing"
)

func goodWorker() *Worker {
	return &Worker{ID: "w1", Instance: "i", Cores: 4, MemoryMB: 1024, State: WorkerAlive}
}

func goodApp() *App {
	return &App{ID: "app-1", State: AppRunning, Executor: ExecutorSpec{Command: []string{"x"}, Cores: 1, MemoryMB: 64}}
}

func goodExecutor() *Executor {
	return &Executor{AppID: "app-1", ID: 3, WorkerID: "w1", Cores: 1, MemoryMB: 64, State: ExecutorRunning}
}

func goodDriver() *Driver {
	return &Driver{ID: "driver-1", Command: []string{"x"}, Cores: 1, MemoryMB: 64, State: DriverSubmitted}
}

func TestChecker_Check(t *testing.T) {
	tests := []struct {
		name string
		rec  Checker
		key  string
		want string // "" means possible
	}{
		{"worker ok", goodWorker(), "w1", ""},
		{"worker negative cores", func() Checker { w := goodWorker(); w.Cores = -5; return w }(), "w1", "cores must be > 0"},
		{"worker zero memory", func() Checker { w := goodWorker(); w.MemoryMB = 0; return w }(), "w1", "memory must be > 0"},
		{"worker unknown state", func() Checker { w := goodWorker(); w.State = "ZOMBIE"; return w }(), "w1", `state "ZOMBIE"`},
		{"worker key mismatch", goodWorker(), "w2", `key "w2" holds the record of "w1"`},
		{"worker bad id", func() Checker { w := goodWorker(); w.ID = "a.b"; return w }(), "a.b", "must start with"},
		{"app ok", goodApp(), "app-1", ""},
		{"app key mismatch", goodApp(), "app-2", "holds the record"},
		{"app unknown state", func() Checker { a := goodApp(); a.State = ""; return a }(), "app-1", "state"},
		{"app negative failures", func() Checker { a := goodApp(); a.ConsecutiveFailures = -1; return a }(), "app-1", "failures"},
		{"app zero executor cores", func() Checker { a := goodApp(); a.Executor.Cores = 0; return a }(), "app-1", "cores"},
		{"app negative max cores", func() Checker { a := goodApp(); a.MaxCores = -1; return a }(), "app-1", "max cores"},
		{"executor ok", goodExecutor(), "app-1.3", ""},
		{"executor key unparsable", goodExecutor(), "app-1", "not <appid>.<execid>"},
		{"executor key negative", goodExecutor(), "app-1.-3", "non-negative"},
		{"executor key other id", goodExecutor(), "app-1.4", `holds the record of "app-1.3"`},
		{"executor no worker", func() Checker { x := goodExecutor(); x.WorkerID = ""; return x }(), "app-1.3", "worker id is empty"},
		{"executor unknown state", func() Checker { x := goodExecutor(); x.State = "DONE"; return x }(), "app-1.3", "state"},
		{"executor negative memory", func() Checker { x := goodExecutor(); x.MemoryMB = -1; return x }(), "app-1.3", "memory"},
		{"driver ok waiting", goodDriver(), "driver-1", ""},
		{"driver running without worker", func() Checker { d := goodDriver(); d.State = DriverRunning; return d }(), "driver-1", "worker id is empty"},
		{"driver negative attempts", func() Checker { d := goodDriver(); d.Attempts = -1; return d }(), "driver-1", "attempts"},
		{"cluster ok", &Cluster{State: ClusterAlive}, "state", ""},
		{"cluster unknown", &Cluster{State: "PANIC"}, "state", "PANIC"},
		{"lease without holder", &Lease{}, "scheduler", "no holder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.rec.Check(tt.key)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Check(%q) = %v, want nil", tt.key, err)
				}
				return
			}
			if !errors.Is(err, ErrImpossible) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check(%q) = %v, want ErrImpossible with %q", tt.key, err, tt.want)
			}
		})
	}
}

func TestCheckPlaced(t *testing.T) {
	if err := CheckPlaced(true, "w9", false); !errors.Is(err, ErrImpossible) {
		t.Fatalf("holding on an unknown worker: %v", err)
	}
	for _, c := range []struct{ holds, known bool }{{true, true}, {false, false}, {false, true}} {
		if err := CheckPlaced(c.holds, "w1", c.known); err != nil {
			t.Fatalf("holds %v known %v: %v", c.holds, c.known, err)
		}
	}
}

// Failures are counted once per executor and in any order: the count
// after any interleaving and repetition of the same reports is the same.
func TestApp_CountFailure_OncePerExecutorAnyOrder(t *testing.T) {
	type ev struct {
		running bool
		id      int
	}
	evs := []ev{{false, 0}, {false, 1}, {false, 2}, {true, 3}, {false, 4}, {false, 5}, {false, 2}}
	want := -1
	// every rotation, each event doubled
	for r := range evs {
		var a App
		for i := range evs {
			e := evs[(r+i)%len(evs)]
			for k := 0; k < 2; k++ {
				if e.running {
					a.CountRunning(e.id)
				} else {
					a.CountFailure(e.id)
				}
			}
		}
		if want == -1 {
			want = a.ConsecutiveFailures
		}
		if a.ConsecutiveFailures != want || a.ConsecutiveFailures != len(a.FailedExecutors) {
			t.Fatalf("rotation %d: %d failures %v, want %d", r, a.ConsecutiveFailures, a.FailedExecutors, want)
		}
	}
	if want != 2 {
		t.Fatalf("failures after executor 3 ran = %d, want 2 (executors 4 and 5)", want)
	}
}

func TestApp_CountFailure_FirstExecutor(t *testing.T) {
	var a App
	if !a.CountFailure(0) || a.CountFailure(0) || a.ConsecutiveFailures != 1 {
		t.Fatalf("executor 0's failure: %+v, want counted once", a)
	}
	if !a.CountRunning(0) || a.ConsecutiveFailures != 0 || a.CountFailure(0) {
		t.Fatalf("after executor 0 ran: %+v", a)
	}
}
