package registration

import (
	"testing"
	"time"

	"github.com/stoker/stoker/schemas"
)

func TestExecutorReported(t *testing.T) {
	code := func(c int) *int { return &c }
	const key = "app-1.0"
	rec := func(st schemas.ExecutorState, wid string) *schemas.Executor {
		return &schemas.Executor{AppID: "app-1", WorkerID: wid, State: st, PID: 7}
	}
	for _, tc := range []struct {
		name     string
		cur      *schemas.Executor
		state    schemas.ExecutorState
		pid      int
		exit     *int
		want     schemas.ExecutorState // "" for no write
		wantKill bool
	}{
		{"unknown executor is killed", nil, schemas.ExecutorRunning, 9, nil, "", true},
		{"placed elsewhere is killed", rec(schemas.ExecutorRunning, "w2"), schemas.ExecutorRunning, 9, nil, "", true},
		{"launching → running", rec(schemas.ExecutorLaunching, "w1"), schemas.ExecutorRunning, 9, nil, schemas.ExecutorRunning, false},
		{"running → failed with code", rec(schemas.ExecutorRunning, "w1"), schemas.ExecutorFailed, 0, code(3), schemas.ExecutorFailed, false},
		{"repeated report writes nothing", rec(schemas.ExecutorRunning, "w1"), schemas.ExecutorRunning, 7, nil, "", false},
		{"running reported for an ended one is killed", rec(schemas.ExecutorLost, "w1"), schemas.ExecutorRunning, 9, nil, "", true},
		{"late ending of an ended one stands", rec(schemas.ExecutorKilled, "w1"), schemas.ExecutorExited, 0, code(0), "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &schemas.StateChange{WorkerID: "w1", AppID: "app-1", State: string(tc.state), PID: tc.pid, ExitCode: tc.exit}
			next, why := executorReported(tc.cur, req, key)
			if (why != "") != tc.wantKill {
				t.Fatalf("kill reason %q, want kill %v", why, tc.wantKill)
			}
			switch {
			case tc.want == "" && next != nil:
				t.Fatalf("wrote %+v, want nothing", next)
			case tc.want != "" && (next == nil || next.State != tc.want):
				t.Fatalf("wrote %+v, want %s", next, tc.want)
			}
			if next != nil && tc.exit != nil && (next.ExitCode == nil || *next.ExitCode != *tc.exit) {
				t.Fatalf("exit code %v, want %d", next.ExitCode, *tc.exit)
			}
		})
	}
}

func TestDriverReported(t *testing.T) {
	rec := func(st schemas.DriverState, wid string) *schemas.Driver {
		return &schemas.Driver{ID: "driver-1", WorkerID: wid, State: st, Attempts: 1, PID: 7}
	}
	for _, tc := range []struct {
		name     string
		cur      *schemas.Driver
		state    schemas.DriverState
		attempt  int
		want     schemas.DriverState
		wantKill bool
	}{
		{"unknown driver is killed", nil, schemas.DriverRunning, 1, "", true},
		{"waiting to be relaunched is killed", rec(schemas.DriverSubmitted, ""), schemas.DriverRunning, 1, "", true},
		{"running → relaunching", rec(schemas.DriverRunning, "w1"), schemas.DriverRelaunching, 1, schemas.DriverRelaunching, false},
		{"relaunching → running, next attempt", rec(schemas.DriverRelaunching, "w1"), schemas.DriverRunning, 2, schemas.DriverRunning, false},
		{"unknown in recovery → error reported", rec(schemas.DriverUnknown, "w1"), schemas.DriverError, 1, schemas.DriverError, false},
		{"running reported for an ended one is killed", rec(schemas.DriverError, "w1"), schemas.DriverRunning, 1, "", true},
		{"late ending of an ended one stands", rec(schemas.DriverKilled, "w1"), schemas.DriverFailed, 1, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &schemas.StateChange{WorkerID: "w1", DriverID: "driver-1", State: string(tc.state), Attempt: tc.attempt, PID: 9}
			next, why := driverReported(tc.cur, req)
			if (why != "") != tc.wantKill {
				t.Fatalf("kill reason %q, want kill %v", why, tc.wantKill)
			}
			switch {
			case tc.want == "" && next != nil:
				t.Fatalf("wrote %+v, want nothing", next)
			case tc.want != "" && (next == nil || next.State != tc.want || next.Attempts != max(1, tc.attempt)):
				t.Fatalf("wrote %+v, want %s attempt %d", next, tc.want, max(1, tc.attempt))
			}
		})
	}
}

// One worker id, one live agent: of two instances, the newer keeps the id,
// so the registration of an older instance than the ALIVE one is refused.
func TestReplacedInstance(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	alive := func(inst string, since time.Time) *schemas.Worker {
		return &schemas.Worker{ID: "w", Instance: inst, Host: "h1", PID: 10, State: schemas.WorkerAlive, Since: since}
	}
	req := func(inst string, since time.Time) *schemas.RegisterWorker {
		return &schemas.RegisterWorker{WorkerID: "w", Instance: inst, Since: since}
	}
	tests := []struct {
		name    string
		cur     *schemas.Worker
		req     *schemas.RegisterWorker
		refused bool
	}{
		{"new worker", nil, req("b", t0), false},
		{"same instance again", alive("a", t0), req("a", t0), false},
		{"a restart: newer instance", alive("a", t0), req("b", t0.Add(time.Minute)), false},
		{"the replaced one comes back", alive("b", t0.Add(time.Minute)), req("a", t0), true},
		{"older but the record is DEAD", &schemas.Worker{ID: "w", Instance: "b", State: schemas.WorkerDead, Since: t0.Add(time.Minute)}, req("a", t0), false},
		{"record without a start time", alive("b", time.Time{}), req("a", t0), false},
		{"request without a start time", alive("b", t0), req("a", time.Time{}), false},
		{"same start time: the instance nonce orders", alive("a", t0), req("b", t0), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := replacedInstance(tc.cur, tc.req)
			if (got != nil) != tc.refused {
				t.Fatalf("refused %v, want %v", got != nil, tc.refused)
			}
			if got != nil && (got.Instance != tc.cur.Instance || got.Host != "h1" || got.PID != 10) {
				t.Fatalf("holder %+v, want the record's instance", got)
			}
		})
	}
}

// TestExecutorReported_LaunchErrorKept: the agent's FAILED report for a
// process that could not start keeps its reason in Error, whichever of the
// agent's report and the scheduler's refused-launch write ends it first
// (TestRun_LaunchErrorShown raced on this).
func TestExecutorReported_LaunchErrorKept(t *testing.T) {
	cur := &schemas.Executor{AppID: "app-1", WorkerID: "w1", State: schemas.ExecutorLaunching}
	msg := "launch failed: fork/exec /nope: no such file or directory"
	next, why := executorReported(cur, &schemas.StateChange{WorkerID: "w1", AppID: "app-1",
		State: string(schemas.ExecutorFailed), Message: msg, Error: msg}, "app-1.0")
	if why != "" || next == nil || next.State != schemas.ExecutorFailed || next.Error != msg {
		t.Fatalf("wrote %+v (kill %q), want FAILED with error %q", next, why, msg)
	}
	// An exit after running is not a launch error.
	cur.State = schemas.ExecutorRunning
	next, _ = executorReported(cur, &schemas.StateChange{WorkerID: "w1", AppID: "app-1", PID: 9,
		State: string(schemas.ExecutorFailed), Message: "exited 3", ExitCode: new(int)}, "app-1.0")
	if next == nil || next.Error != "" {
		t.Fatalf("wrote %+v, want no launch error", next)
	}
}
