package tests

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stoker/stoker/bench"
)

// TestBench_Processes: `stoker bench --processes` runs the bus and each
// service as its own process and reports CPU and RSS for each of them (the
// per-service figures of issue 12), a failover by SIGKILL of the leading
// scheduler's process, and finds nothing lost or doubled. Time is never
// checked.
func TestBench_Processes(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a bus and four services: skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, stokerBin, "bench", "--processes", "--agents", "10", "--executors", "40", "--apps", "2",
		"--heartbeat-interval", "200ms", "--worker-timeout", "1s", "--steady", "500ms",
		"--scenarios", "resources,failover", "--json", "--data", t.TempDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("stoker bench --processes: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	var res bench.Result
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(res.Failures) != 0 {
		t.Fatalf("failures: %v", res.Failures)
	}
	rows := map[string]bench.Row{}
	for _, r := range res.Rows {
		rows[r.Figure] = r
	}
	for _, p := range []string{"bus", "registration-1", "heartbeat-1", "recovery-1", "scheduler-1", "bench process: simulated agents"} {
		if _, ok := rows["CPU, steady heartbeats ("+p+")"]; !ok {
			t.Errorf("no CPU figure for %s in\n%s", p, out)
		}
		if r, ok := rows["RSS ("+p+")"]; !ok || r.Value <= 0 {
			t.Errorf("no RSS figure for %s (%+v) in\n%s", p, r, out)
		}
	}
	if _, ok := rows["scheduler failover (leader silent → standby holds the lease)"]; !ok {
		t.Errorf("no failover figure in\n%s", out)
	}
}
