package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

// TestDetail_OneThing (issue 9 item 6): `stoker workers|drivers|apps ID`
// show one item in detail, as a table and with --json; an unknown id is an
// error that names it.
func TestDetail_OneThing(t *testing.T) {
	c := startTestCluster(t)
	vars := c.clientVars()
	cli := func(args ...string) string {
		t.Helper()
		code, out, stderr := runCmd(t, vars, append(args, "--nats", c.url)...)
		if code != exitOK {
			t.Fatalf("stoker %s: exit %d\n%s%s", strings.Join(args, " "), code, out, stderr)
		}
		return out
	}
	code, out, _ := runCmd(t, vars, "submit", "--wait", "--nats", c.url, "--", "false")
	if code != exitFailure {
		t.Fatalf("submit --wait false: exit %d: %s", code, out)
	}
	driverID := strings.Fields(out)[0]
	out = cli("run", "--", "true")
	appID := strings.Fields(out)[0]

	var d sdk.DriverDetail
	if err := json.Unmarshal([]byte(cli("drivers", driverID, "--json")), &d); err != nil {
		t.Fatal(err)
	}
	if d.Driver.ID != driverID || d.Driver.State != schemas.DriverFailed || d.Driver.ExitCode == nil || *d.Driver.ExitCode != 1 ||
		d.Driver.Attempts != 1 || d.Driver.WorkerID == "" {
		t.Fatalf("drivers %s --json: %+v", driverID, d.Driver)
	}
	if table := cli("drivers", driverID); !strings.Contains(table, "Exit code:") || !strings.Contains(table, "FAILED") {
		t.Fatalf("drivers %s:\n%s", driverID, table)
	}

	var a schemas.AppView
	if err := json.Unmarshal([]byte(cli("apps", appID, "--json")), &a); err != nil {
		t.Fatal(err)
	}
	if a.ID != appID || len(a.Executors) != 1 || a.Executors[0].ExitCode == nil || *a.Executors[0].ExitCode != 0 ||
		a.Executors[0].UpdatedAt.IsZero() {
		t.Fatalf("apps %s --json: %+v", appID, a)
	}
	if table := cli("apps", appID); !strings.Contains(table, "Executors (1)") || !strings.Contains(table, schemas.ExecutorKey(appID, 0)) {
		t.Fatalf("apps %s:\n%s", appID, table)
	}

	wid := a.Executors[0].WorkerID
	var w sdk.WorkerDetail
	if err := json.Unmarshal([]byte(cli("workers", wid, "--json")), &w); err != nil {
		t.Fatal(err)
	}
	if w.Worker.ID != wid || w.Worker.State != schemas.WorkerAlive || w.Worker.PID != os.Getpid() || w.Worker.WorkDir == "" {
		t.Fatalf("workers %s --json: %+v", wid, w.Worker)
	}
	found := false
	for _, x := range w.Executors {
		found = found || (x.AppID == appID && x.ID == 0)
	}
	if !found {
		t.Fatalf("workers %s --json does not list executor %s.0: %+v", wid, appID, w.Executors)
	}
	if table := cli("workers", wid); !strings.Contains(table, "Work dir:") || !strings.Contains(table, schemas.ExecutorKey(appID, 0)) {
		t.Fatalf("workers %s:\n%s", wid, table)
	}

	for _, kind := range []string{"workers", "drivers", "apps"} {
		code, _, stderr := runCmd(t, vars, kind, "nope", "--nats", c.url)
		if code == exitOK || !strings.Contains(stderr, "nope") || !strings.Contains(stderr, "not found") {
			t.Errorf("stoker %s nope: exit %d, stderr %q", kind, code, stderr)
		}
	}
}
