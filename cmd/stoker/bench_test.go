package main

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stoker/stoker/bench"
	"github.com/stoker/stoker/bus/bustest"
)

// TestBench_SmallRunChecksCounts: a small stoker bench on a real embedded,
// secured cluster runs every simulated scenario, finds nothing lost or
// doubled, and prints each figure (time is never checked).
func TestBench_SmallRunChecksCounts(t *testing.T) {
	// Loggers write from many goroutines: a buffer that locks.
	var stdout, stderrb bustest.Buffer
	e := &env{stdout: &stdout, stderr: &stderrb, getenv: func(string) string { return "" }}
	code := run(context.Background(), e, []string{"bench", "--agents", "10", "--executors", "100", "--apps", "4",
		"--latency-runs", "3", "--heartbeat-interval", "200ms", "--worker-timeout", "1s", "--steady", "300ms",
		"--scenarios", "reference,latency,placements,resources,failover,dead", "--json"})
	out, stderr := stdout.String(), stderrb.String()
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	var res bench.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(res.Failures) != 0 {
		t.Fatalf("failures: %v", res.Failures)
	}
	seen := map[string]bool{}
	for _, r := range res.Rows {
		seen[r.Scenario] = true
	}
	for _, s := range []string{"reference", "agents", "latency", "placements", "resources", "failover", "dead"} {
		if !seen[s] {
			t.Errorf("no %s figure in %s", s, out)
		}
	}
}
