package tests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/schemas"
)

// TestSecurity_ForgedLaunchNeverRunsAndCannotPoisonTheEpoch replays the
// issue's attack on a real cluster of processes: a launch with epoch 999999
// sent by an admin, another agent and an app credential is refused by
// permissions and never runs; a scheduler-role message with that epoch is
// refused by the agent; the real scheduler still runs a submitted driver
// on that worker afterwards; and an anonymous client is refused.
func TestSecurity_ForgedLaunchNeverRunsAndCannotPoisonTheEpoch(t *testing.T) {
	c := fullCluster(t, nil, map[string]int{"a": 2})
	marker := filepath.Join(c.Dir, "pwned")
	forged := &schemas.LaunchExecutor{Epoch: 999999, AppID: "app-20260101000000-abcdef", ExecutorID: 0,
		Command: []string{"/bin/sh", "-c", "touch " + marker}, Cores: 1, MemoryMB: 64}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, who := range []struct {
		role auth.Role
		name string
	}{{auth.RoleAdmin, "mallory"}, {auth.RoleAgent, "b"}, {auth.RoleApp, "app-20260101000000-abcdef"}, {auth.RoleViewer, "v"}} {
		err := bus.Call(ctx, c.ConnAs(who.role, who.name), bus.WorkerCmdLaunchSubject("a"), forged, nil)
		if err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("%s: forged launch: %v, want permission denied", who.role, err)
		}
	}
	err := bus.Call(ctx, c.ConnAs(auth.RoleScheduler, "rogue"), bus.WorkerCmdLaunchSubject("a"), forged, nil)
	if err == nil || !strings.Contains(err.Error(), "unknown epoch") {
		t.Fatalf("scheduler-role launch with an unissued epoch: %v, want unknown epoch", err)
	}
	out, errOut, err := c.CLI("submit", "--wait", "--", "/bin/sh", "-c", "exit 0")
	if err != nil {
		t.Fatalf("a real submission after the forged ones: %v\n%s\n%s", err, out, errOut)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a forged launch ran")
	}
	// Without credentials: one line, at once.
	start := time.Now()
	if _, err := bus.Connect(c.URL, bus.ConnectOptions{Name: "anonymous", CA: c.CA()}); err == nil || !strings.Contains(err.Error(), "refused the credentials") {
		t.Fatalf("anonymous connect: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("anonymous refused after %s", d)
	}
}
