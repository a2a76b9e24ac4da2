package schemas

import (
	"reflect"
	"slices"
	"testing"
)

// Each machine is checked on every state × every event against a grid
// written out by hand (a row per state, "-" for a refusal), so a change to
// a rule shows here as a changed cell. The enumerations are checked too: a
// state or event added to the code but not to its list fails the test.

func TestWorkerState_Next_Exhaustive(t *testing.T) {
	events := []WorkerEvent{WorkerEvRegistered, WorkerEvLeft, WorkerEvTimedOut, WorkerEvRecovering, WorkerEvAnswered, WorkerEvSilent, WorkerEvDrained}
	grid := map[WorkerState][]WorkerState{
		//                     registered    left                  timed-out   recovering     answered     silent
		WorkerAlive:          {WorkerAlive, WorkerDecommissioned, WorkerDead, WorkerUnknown, "-", "-", WorkerDecommissioned},
		WorkerDead:           {WorkerAlive, "-", "-", "-", "-", "-", "-"},
		WorkerDecommissioned: {WorkerAlive, "-", "-", "-", "-", "-", "-"},
		WorkerUnknown:        {WorkerAlive, WorkerDecommissioned, "-", "-", WorkerAlive, WorkerDead, "-"},
	}
	if !slices.Equal(events, WorkerEvents()) {
		t.Fatalf("WorkerEvents() = %v, the grid has %v", WorkerEvents(), events)
	}
	checkGrid(t, WorkerStates(), events, grid, WorkerState.Next)
}

func TestDriverState_Next_Exhaustive(t *testing.T) {
	events := DriverEvents()
	const (
		S, R, L = DriverSubmitted, DriverRunning, DriverRelaunching
		F, X, K = DriverFinished, DriverFailed, DriverKilled
		E, U, n = DriverError, DriverUnknown, DriverState("-")
	)
	grid := map[DriverState][]DriverState{
		// placed unack killed-waiting running relaunching finished failed killed errored lost lost-sup lost-kill recovering
		S: {R, n, K, n, n, n, n, n, n, n, n, n, n},
		R: {n, S, n, R, L, F, X, K, E, E, S, K, U},
		L: {n, n, n, R, L, F, X, K, E, E, S, K, U},
		U: {n, n, n, R, L, F, X, K, E, E, S, K, n},
		F: {n, n, n, n, n, n, n, n, n, n, n, n, n},
		X: {n, n, n, n, n, n, n, n, n, n, n, n, n},
		K: {n, n, n, n, n, n, n, n, n, n, n, n, n},
		E: {n, n, n, n, n, n, n, n, n, n, n, n, n},
	}
	want := []DriverEvent{DriverEvPlaced, DriverEvUnacknowledged, DriverEvKilledWaiting, DriverEvRunning,
		DriverEvRelaunching, DriverEvFinished, DriverEvFailed, DriverEvKilled, DriverEvErrored, DriverEvWorkerLost,
		DriverEvWorkerLostSupervised, DriverEvWorkerLostKillRequested, DriverEvRecovering}
	if !slices.Equal(events, want) {
		t.Fatalf("DriverEvents() = %v, the grid has %v", events, want)
	}
	checkGrid(t, DriverStates(), events, grid, DriverState.Next)
	for _, s := range DriverStates() {
		if s.Terminal() && !slices.Equal(grid[s], grid[F]) {
			t.Errorf("terminal %s moves", s)
		}
	}
}

func TestAppState_Next_Exhaustive(t *testing.T) {
	events := AppEvents()
	const (
		W, R, F = AppWaiting, AppRunning, AppFinished
		X, K, U = AppFailed, AppKilled, AppUnknown
		n       = AppState("-")
	)
	grid := map[AppState][]AppState{
		// placed finished failed killed recovering answered-running answered-waiting
		W: {R, F, X, K, U, n, n},
		R: {R, F, X, K, U, n, n},
		U: {n, F, X, K, n, R, W},
		F: {n, n, n, n, n, n, n},
		X: {n, n, n, n, n, n, n},
		K: {n, n, n, n, n, n, n},
	}
	want := []AppEvent{AppEvPlaced, AppEvFinished, AppEvFailed, AppEvKilled, AppEvRecovering, AppEvAnsweredRunning, AppEvAnsweredWaiting}
	if !slices.Equal(events, want) {
		t.Fatalf("AppEvents() = %v, the grid has %v", events, want)
	}
	checkGrid(t, AppStates(), events, grid, AppState.Next)
}

func TestExecutorState_Next_Exhaustive(t *testing.T) {
	events := ExecutorEvents()
	const (
		L, R, E = ExecutorLaunching, ExecutorRunning, ExecutorExited
		F, K, X = ExecutorFailed, ExecutorKilled, ExecutorLost
		n       = ExecutorState("-")
	)
	grid := map[ExecutorState][]ExecutorState{
		// running exited failed killed launch-failed launch-lost lost
		L: {R, E, F, K, F, X, X},
		R: {R, E, F, K, n, n, X}, // a late launch outcome never ends a RUNNING executor
		E: {n, n, n, n, n, n, n},
		F: {n, n, n, n, n, n, n},
		K: {n, n, n, n, n, n, n},
		X: {n, n, n, n, n, n, n},
	}
	want := []ExecutorEvent{ExecutorEvRunning, ExecutorEvExited, ExecutorEvFailed, ExecutorEvKilled, ExecutorEvLaunchFailed, ExecutorEvLaunchLost, ExecutorEvLost}
	if !slices.Equal(events, want) {
		t.Fatalf("ExecutorEvents() = %v, the grid has %v", events, want)
	}
	checkGrid(t, ExecutorStates(), events, grid, ExecutorState.Next)
}

// checkGrid asserts next(state, event) for every cell; "-" means refused,
// and a refusal leaves the state as it was.
func checkGrid[S, E ~string](t *testing.T, states []S, events []E, grid map[S][]S, next func(S, E) (S, bool)) {
	t.Helper()
	if len(states) != len(grid) {
		t.Fatalf("%d states enumerated, %d rows in the grid", len(states), len(grid))
	}
	cells := 0
	for _, s := range states {
		row, ok := grid[s]
		if !ok || len(row) != len(events) {
			t.Fatalf("state %s: grid row %v for %d events", s, row, len(events))
		}
		for i, e := range events {
			got, ok := next(s, e)
			want := row[i]
			switch {
			case want == "-" && ok:
				t.Errorf("%s × %s = %s, want refused", s, e, got)
			case want == "-" && got != s:
				t.Errorf("%s × %s refused but returned %s", s, e, got)
			case want != "-" && (!ok || got != want):
				t.Errorf("%s × %s = %s (ok %v), want %s", s, e, got, ok, want)
			}
			cells++
		}
	}
	if _, ok := next(states[0], E("no-such-event")); ok {
		t.Errorf("an unknown event was accepted")
	}
	t.Logf("%d cells", cells)
}

func TestReportedEvents(t *testing.T) {
	for _, s := range DriverStates() {
		e := DriverReported(s)
		if (e == "") != (s == DriverSubmitted || s == DriverUnknown) {
			t.Errorf("DriverReported(%s) = %q", s, e)
		}
		if e != "" {
			if got, ok := DriverRunning.Next(e); !ok || got != s {
				t.Errorf("RUNNING × reported %s = %s, %v", s, got, ok)
			}
		}
	}
	for _, s := range ExecutorStates() {
		e := ExecutorReported(s)
		if (e == "") != (s == ExecutorLaunching || s == ExecutorLost) {
			t.Errorf("ExecutorReported(%s) = %q", s, e)
		}
		if e != "" {
			if got, ok := ExecutorRunning.Next(e); !ok || got != s {
				t.Errorf("RUNNING × reported %s = %s, %v", s, got, ok)
			}
		}
	}
	for _, s := range AppStates() {
		if e := AppEnded(s); (e != "") != s.Terminal() {
			t.Errorf("AppEnded(%s) = %q", s, e)
		}
	}
	for d, want := range map[DriverState]AppState{DriverFinished: AppFinished, DriverFailed: AppFailed,
		DriverError: AppFailed, DriverKilled: AppKilled, DriverRunning: ""} {
		e := AppAfterDriver(d)
		got, _ := AppRunning.Next(e)
		if e == "" {
			got = ""
		}
		if got != want {
			t.Errorf("app after driver %s = %q, want %q", d, got, want)
		}
	}
}

func TestLoseDriver(t *testing.T) {
	base := Driver{ID: "driver-1", State: DriverRunning, WorkerID: "w1", PID: 42, Message: "old"}
	for _, tc := range []struct {
		name       string
		state      DriverState
		supervise  bool
		kill       bool
		ok         bool
		want       DriverState
		wantWorker string
		wantMsg    string
	}{
		{"unsupervised ends ERROR", DriverRunning, false, false, true, DriverError, "w1", "worker w1 is DEAD"},
		{"supervised relaunches", DriverRelaunching, true, false, true, DriverSubmitted, "", "relaunching: worker w1 is DEAD"},
		{"kill requested ends KILLED", DriverUnknown, true, true, true, DriverKilled, "w1", "killed: worker w1 is DEAD"},
		{"unknown unsupervised ends ERROR", DriverUnknown, false, false, true, DriverError, "w1", "worker w1 is DEAD"},
		{"submitted is not on a worker", DriverSubmitted, true, false, false, DriverSubmitted, "w1", "old"},
		{"finished stays", DriverFinished, false, false, false, DriverFinished, "w1", "old"},
		{"error stays", DriverError, true, true, false, DriverError, "w1", "old"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := base
			d.State, d.Supervise, d.KillRequested = tc.state, tc.supervise, tc.kill
			got, ok := LoseDriver(d, "worker w1 is DEAD")
			if ok != tc.ok || got.State != tc.want || got.WorkerID != tc.wantWorker || got.Message != tc.wantMsg {
				t.Fatalf("LoseDriver = %s on %q %q (ok %v), want %s on %q %q (ok %v)",
					got.State, got.WorkerID, got.Message, ok, tc.want, tc.wantWorker, tc.wantMsg, tc.ok)
			}
			if ok && got.PID != 0 {
				t.Errorf("PID %d kept", got.PID)
			}
			if !ok && got.PID != 42 {
				t.Errorf("refused but changed the record")
			}
		})
	}
}

func TestUnreportedExecutors(t *testing.T) {
	rec := map[string]*Executor{
		"app-1.0": {AppID: "app-1", ID: 0, WorkerID: "w1", State: ExecutorRunning},
		"app-1.1": {AppID: "app-1", ID: 1, WorkerID: "w1", State: ExecutorLaunching},
		"app-1.2": {AppID: "app-1", ID: 2, WorkerID: "w1", State: ExecutorExited},
		"app-1.3": {AppID: "app-1", ID: 3, WorkerID: "w2", State: ExecutorRunning},
		"app-2.0": {AppID: "app-2", ID: 0, WorkerID: "w1", State: ExecutorRunning},
	}
	got := UnreportedExecutors("w1", rec, []RunningExecutor{{AppID: "app-1", ExecutorID: 0}, {AppID: "app-9", ExecutorID: 0}})
	if want := []string{"app-1.1", "app-2.0"}; !slices.Equal(got, want) {
		t.Fatalf("UnreportedExecutors = %v, want %v", got, want)
	}
	if got := UnreportedExecutors("w3", rec, nil); len(got) != 0 {
		t.Fatalf("a worker with nothing placed: %v", got)
	}
}

func TestUsages(t *testing.T) {
	u := Usages{}
	for _, e := range []Executor{
		{WorkerID: "w1", Cores: 2, MemoryMB: 100, State: ExecutorRunning},
		{WorkerID: "w1", Cores: 1, MemoryMB: 50, State: ExecutorLaunching},
		{WorkerID: "w1", Cores: 8, MemoryMB: 800, State: ExecutorExited},
		{WorkerID: "", Cores: 4, MemoryMB: 400, State: ExecutorRunning}, // no worker: counted nowhere
	} {
		u.AddExecutor(&e)
	}
	for _, d := range []Driver{
		{WorkerID: "w1", Cores: 1, MemoryMB: 10, State: DriverRelaunching},
		{WorkerID: "w2", Cores: 1, MemoryMB: 10, State: DriverRunning},
		{WorkerID: "w2", Cores: 5, MemoryMB: 10, State: DriverUnknown},
		{WorkerID: "", Cores: 1, MemoryMB: 10, State: DriverSubmitted},
	} {
		u.AddDriver(&d)
	}
	want := Usages{
		"w1": {Cores: 4, MemoryMB: 160, Executors: 2, Drivers: 1},
		"w2": {Cores: 1, MemoryMB: 10, Drivers: 1},
	}
	if !reflect.DeepEqual(u, want) {
		t.Fatalf("Usages = %+v, want %+v", u, want)
	}
}

func TestLease_EpochOf(t *testing.T) {
	if got := (&Lease{}).EpochOf(7); got != 7 {
		t.Errorf("unrenewed lease: epoch %d, want the revision 7", got)
	}
	if got := (&Lease{Epoch: 3}).EpochOf(7); got != 3 {
		t.Errorf("renewed lease: epoch %d, want 3", got)
	}
}
