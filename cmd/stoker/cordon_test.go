package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stoker/stoker/schemas"
)

// TestCordon_CLI (issue 14, drain): `stoker cordon W` stops new placements
// on W (an app's executors all land on the other worker), `stoker workers`
// shows it, `stoker uncordon W` clears it; bad input is a clear error.
func TestCordon_CLI(t *testing.T) {
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
	var ws []schemas.WorkerView
	if err := json.Unmarshal([]byte(cli("workers", "--json")), &ws); err != nil || len(ws) != 2 {
		t.Fatalf("workers --json: %v %+v", err, ws)
	}
	cordoned, other := ws[0].ID, ws[1].ID
	if out := cli("cordon", cordoned); !strings.Contains(out, "worker "+cordoned+" cordoned") {
		t.Fatalf("cordon: %q", out)
	}
	if table := cli("workers"); !strings.Contains(table, "ALIVE,cordoned") {
		t.Fatalf("workers table does not show the cordon:\n%s", table)
	}
	if detail := cli("workers", cordoned); !strings.Contains(detail, "Cordoned:") {
		t.Fatalf("workers %s does not show the cordon:\n%s", cordoned, detail)
	}

	appID := strings.Fields(cli("run", "--executors", "2", "--", "true"))[0]
	var a schemas.AppView
	if err := json.Unmarshal([]byte(cli("apps", appID, "--json")), &a); err != nil {
		t.Fatal(err)
	}
	if len(a.Executors) != 2 {
		t.Fatalf("app %s executors = %+v, want 2", appID, a.Executors)
	}
	for _, x := range a.Executors {
		if x.WorkerID != other {
			t.Fatalf("executor %d placed on %s, want only %s (%s is cordoned)", x.ID, x.WorkerID, other, cordoned)
		}
	}

	if out := cli("uncordon", cordoned); !strings.Contains(out, "uncordoned") {
		t.Fatalf("uncordon: %q", out)
	}
	if table := cli("workers"); strings.Contains(table, "cordoned") {
		t.Fatalf("still cordoned after uncordon:\n%s", table)
	}
	for _, bad := range [][]string{{"cordon"}, {"cordon", "a", "b"}, {"uncordon", "no-such-worker"}} {
		code, _, stderr := runCmd(t, vars, append(bad, "--nats", c.url)...)
		if code == exitOK || stderr == "" {
			t.Fatalf("stoker %v: exit %d, stderr %q, want an error", bad, code, stderr)
		}
	}
}
