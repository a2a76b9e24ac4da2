package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

// An executor writing more than --log-max-size has its stdout rolled:
// stdout holds the newest output, stdout.1.. the older, at most
// LogMaxFiles of them; `stoker logs` (the logs request) reads the current
// file.
func TestService_Logs_Roll(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), func(c *Config) { c.LogMaxBytes, c.LogMaxFiles = 100, 2 })
	waitRegistered(t, s)
	app := newAppID()
	// 40 lines of 10 bytes, one write each: 400 bytes, 4 files' worth.
	launchExecutor(t, e.nc, app, 0, `i=0; while [ $i -lt 40 ]; do printf 'line-%04d\n' $i; i=$((i+1)); done`)
	key := schemas.ExecutorKey(app, 0)
	e.c.waitReport(key, "EXITED")
	dir := filepath.Join(s.cfg.WorkDir, app, "0")
	cur, one, two := readFile(t, filepath.Join(dir, "stdout")), readFile(t, filepath.Join(dir, "stdout.1")), readFile(t, filepath.Join(dir, "stdout.2"))
	if _, err := os.Stat(filepath.Join(dir, "stdout.3")); err == nil {
		t.Fatal("stdout.3 kept beyond --log-max-files 2")
	}
	if len(cur) == 0 || len(cur) > 100 || len(one) != 100 || len(two) != 100 {
		t.Fatalf("sizes: stdout %d, stdout.1 %d, stdout.2 %d", len(cur), len(one), len(two))
	}
	if !strings.HasSuffix(cur, "line-0039\n") || !strings.HasPrefix(one, "line-0020\n") || !strings.HasPrefix(two, "line-0010\n") {
		t.Fatalf("order: stdout %q\nstdout.1 %q\nstdout.2 %q", cur, one, two)
	}
	var rep schemas.LogsReply
	if err := call(t, e.nc, bus.WorkerLogsSubject(testWID), &schemas.LogsRequest{ID: key}, &rep); err != nil || string(rep.Data) != cur {
		t.Fatalf("logs read %q (%v), want the current file %q", rep.Data, err, cur)
	}
}

// Worker cleanup removes the work dirs of apps and drivers the agent no
// longer runs once their newest file is older than the TTL, and nothing
// else: not a running app's dir, not a recent one, not LOCK, worker-id or
// another file or dir an operator put there.
func TestService_Cleanup_RemovesOldFinishedWorkDirs(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), func(c *Config) { c.CleanupInterval, c.AppDataTTL = 50*time.Millisecond, time.Hour })
	waitRegistered(t, s)
	running := newAppID()
	launchExecutor(t, e.nc, running, 0, `sleep 30`)
	e.c.waitReport(schemas.ExecutorKey(running, 0), "RUNNING")
	old := time.Now().Add(-2 * time.Hour)
	mk := func(name string, age time.Time) string {
		dir := filepath.Join(s.cfg.WorkDir, name)
		if err := os.MkdirAll(filepath.Join(dir, "0"), 0o755); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "0", "stdout")
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{f, filepath.Join(dir, "0"), dir} {
			if err := os.Chtimes(p, age, age); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	oldApp := mk("app-20261101000000-0a0b0c", old)
	oldDriver := mk("driver-20261101000000-0a0b0c", old)
	recent := mk("app-20261202000000-0a0b0c", time.Now())
	other := mk("keep-me", old)
	for _, f := range []string{"LOCK", WorkerIDFile} {
		p := filepath.Join(s.cfg.WorkDir, f)
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil && f == "LOCK" {
			t.Fatal(err)
		}
		_ = os.Chtimes(p, old, old)
	}
	// The running app's dir is old too, as far as mtimes go.
	for _, p := range []string{filepath.Join(s.cfg.WorkDir, running, "0", "stdout"), filepath.Join(s.cfg.WorkDir, running, "0"), filepath.Join(s.cfg.WorkDir, running)} {
		_ = os.Chtimes(p, old, old)
	}
	gone := func(p string) bool { _, err := os.Stat(p); return os.IsNotExist(err) }
	bustest.Eventually(t, 10*time.Second, "old work dirs removed", func() bool { return gone(oldApp) && gone(oldDriver) })
	for _, p := range []string{recent, other, filepath.Join(s.cfg.WorkDir, running), filepath.Join(s.cfg.WorkDir, "LOCK"), filepath.Join(s.cfg.WorkDir, WorkerIDFile)} {
		if gone(p) {
			t.Fatalf("cleanup removed %s", p)
		}
	}
	if got := s.cleanupOnce(time.Now()); !slices.Equal(got, nil) {
		t.Fatalf("second pass removed %v", got)
	}
}

func TestRollingFile_CutsAtLinesAndKeepsN(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stdout")
	r, err := openRolling(path, 8, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"abc\n", "defg\nhi", "jklmnopqrstuvwxyz\n"} {
		if n, err := r.Write([]byte(w)); err != nil || n != len(w) {
			t.Fatalf("write %q: %d %v", w, n, err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// "defg" does not fit after "abc\n" and has no line end: a new file;
	// the 18-byte line is cut at 8 bytes; one rolled file is kept.
	cur, one := readFile(t, path), readFile(t, path+".1")
	if cur != "z\n" || one != "rstuvwxy" {
		t.Fatalf("stdout %q, stdout.1 %q", cur, one)
	}
	if _, err := os.Stat(path + ".2"); err == nil {
		t.Fatal("stdout.2 kept beyond keep=1")
	}
}
