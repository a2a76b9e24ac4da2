package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stoker/stoker/schemas"
)

// submit -- bin/pi: a relative path that exists here is sent absolute; one
// that does not gets a warning; bare names and absolute paths are left
// alone (issue 9 item 8).
func TestResolveCommand(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "pi"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	abs, _ := filepath.Abs("bin/pi")
	for _, tc := range []struct {
		in, want, note string
	}{
		{"bin/pi", abs, "sent as " + abs},
		{"./bin/pi", abs, "sent as " + abs},
		{"bin/nope", "bin/nope", "resolves it in its own work dir"},
		{"sleep", "sleep", ""},
		{"/bin/sh", "/bin/sh", ""},
	} {
		got, note := resolveCommand(tc.in)
		if got != tc.want || (tc.note == "") != (note == "") || !strings.Contains(note, tc.note) {
			t.Errorf("resolveCommand(%q) = %q, %q; want %q and a note with %q", tc.in, got, note, tc.want, tc.note)
		}
	}
}

func TestDriverLine_RelaunchedShowsPreviousAttempt(t *testing.T) {
	one := 1
	d := &schemas.Driver{ID: "driver-1", State: schemas.DriverRunning, WorkerID: "vm-1", Attempts: 2, ExitCode: &one, Message: "exit code 1"}
	got := driverLine(d)
	if want := "driver-1 RUNNING on vm-1 (attempt 2; the previous one: exit code 1)"; got != want {
		t.Errorf("relaunched: %q, want %q", got, want)
	}
	d = &schemas.Driver{ID: "driver-1", State: schemas.DriverFailed, Attempts: 1, ExitCode: &one, Message: "exit code 1"}
	if got, want := driverLine(d), "driver-1 FAILED (exit 1): exit code 1"; got != want {
		t.Errorf("ended: %q, want %q", got, want)
	}
}

func TestStoppedWaiting_NeverPlaced(t *testing.T) {
	d := &schemas.Driver{ID: "driver-1", State: schemas.DriverSubmitted, Cores: 64, MemoryMB: 512}
	if got := stoppedWaiting("driver-1", d); !strings.Contains(got, "was never placed") || !strings.Contains(got, "64 cores") ||
		strings.Contains(got, "keeps running") {
		t.Errorf("never placed: %q", got)
	}
	d.State = schemas.DriverRunning
	if got := stoppedWaiting("driver-1", d); !strings.Contains(got, "keeps running, RUNNING") {
		t.Errorf("running: %q", got)
	}
}

// pi's executors end KILLED when the app ends; they exit 0 on SIGTERM, and
// "KILLED (exit 0)" misled (issue 9 item 8).
func TestExecutorEnd(t *testing.T) {
	zero, term, two := 0, 143, 2
	for _, tc := range []struct {
		st   schemas.ExecutorState
		code *int
		want string
	}{
		{schemas.ExecutorKilled, &zero, "KILLED (stopped cleanly when told to)"},
		{schemas.ExecutorKilled, &term, "KILLED (ended by signal 15)"},
		{schemas.ExecutorFailed, &two, "FAILED (exit 2)"},
		{schemas.ExecutorRunning, nil, "RUNNING"},
	} {
		if got := executorEnd(tc.st, tc.code); got != tc.want {
			t.Errorf("executorEnd(%s) = %q, want %q", tc.st, got, tc.want)
		}
	}
}

// stoker status shows the leader's pace when it answered, and nothing of
// it when it did not.
func TestPrintStatus_InFlight(t *testing.T) {
	st := &schemas.Status{Leader: &schemas.LeaderView{ID: "s1", Term: 2, Since: time.Now()}, State: schemas.ClusterAlive}
	for _, tc := range []struct {
		ss   *schemas.SchedulerStatus
		want string
	}{
		{nil, ""},
		{&schemas.SchedulerStatus{Window: 512, MaxInFlight: 8192, FlowTargetMS: 2000, Launching: 300, Killing: 4, WindowRounds: 7, WindowCuts: 1},
			"In flight:  300 launching, 4 being killed; window 512 of at most 8192, halved when most reports take over 2s (1 of 7 rounds did)"},
		{&schemas.SchedulerStatus{Window: 100, MaxInFlight: 100}, "In flight:  0 launching, 0 being killed; window 100 (constant)"},
		{&schemas.SchedulerStatus{}, "In flight:  0 launching, 0 being killed; no bound"},
	} {
		var b strings.Builder
		printStatus(&b, st, tc.ss)
		out := b.String()
		if tc.want == "" {
			if strings.Contains(out, "In flight") {
				t.Errorf("no scheduler status, yet:\n%s", out)
			}
			continue
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("want %q in:\n%s", tc.want, out)
		}
	}
}
