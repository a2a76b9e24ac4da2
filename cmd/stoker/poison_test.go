package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/registration"
)

// The first repro through the commands: a value that is not a
// record in stoker-apps does not break stoker status or stoker apps; the
// status names it; stoker kv get shows it raw with the reason; stoker kv rm
// deletes it only at the revision shown.
func TestPoisoned_StatusAppsAndKV(t *testing.T) {
	srv := bustest.Start(t)
	url := srv.ClientURL()
	nc := bustest.Conn(t, url)
	st := bustest.Store(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	reg, err := registration.New(registration.Config{NC: bustest.Conn(t, url), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	if _, err := bus.Create(ctx, st.Apps, "app-1", &schemas.App{ID: "app-1", Name: "good", State: schemas.AppWaiting,
		Executor: schemas.ExecutorSpec{Command: []string{"x"}, Cores: 1, MemoryMB: 64}, SubmittedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	rev, err := st.Apps.Put(ctx, "app-junk", []byte("not a record"))
	if err != nil {
		t.Fatal(err)
	}

	code, out, stderr := runCmd(t, nil, "status", "--json", "--nats", url)
	var s schemas.Status
	if err := json.Unmarshal([]byte(out), &s); code != exitOK || err != nil {
		t.Fatalf("status: exit %d, %v\n%s%s", code, err, out, stderr)
	}
	if s.Poisoned[bus.BucketApps] != 1 || fmt.Sprint(s.PoisonedKeys[bus.BucketApps]) != "[app-junk]" || s.Apps["WAITING"] != 1 {
		t.Fatalf("status %+v: want app-1 WAITING and app-junk poisoned", s)
	}
	code, out, _ = runCmd(t, nil, "status", "--nats", url)
	if code != exitOK || !strings.Contains(out, "Poisoned:") || !strings.Contains(out, "1 in stoker-apps") || !strings.Contains(out, "app-junk") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	code, out, stderr = runCmd(t, nil, "apps", "--nats", url)
	if code != exitOK || !strings.Contains(out, "app-1") || strings.Contains(out, "app-junk") {
		t.Fatalf("apps: exit %d\n%s%s", code, out, stderr)
	}
	code, out, _ = runCmd(t, nil, "kv", "get", "apps", "app-junk", "--nats", url)
	if code != exitOK || !strings.Contains(out, "POISONED") || !strings.Contains(out, "not a record") ||
		!strings.Contains(out, fmt.Sprintf("--revision %d", rev)) {
		t.Fatalf("kv get: exit %d\n%s", code, out)
	}
	code, out, _ = runCmd(t, nil, "kv", "get", "apps", "app-junk", "--json", "--nats", url)
	var rec kvRecord
	if err := json.Unmarshal([]byte(out), &rec); code != exitOK || err != nil || rec.Poisoned == "" || rec.Value != "not a record" {
		t.Fatalf("kv get --json: exit %d, %v\n%s", code, err, out)
	}
	code, out, _ = runCmd(t, nil, "kv", "ls", "apps", "--nats", url)
	if code != exitOK || !strings.Contains(out, "app-junk") || !strings.Contains(out, "POISONED") || !strings.Contains(out, "WAITING") {
		t.Fatalf("kv ls: exit %d\n%s", code, out)
	}
	// The revision guard: a stale revision deletes nothing.
	code, _, stderr = runCmd(t, nil, "kv", "rm", "apps", "app-junk", "--revision", fmt.Sprint(rev-1), "--nats", url)
	if code == exitOK || !strings.Contains(stderr, "not deleted") {
		t.Fatalf("kv rm at a stale revision: exit %d, %s", code, stderr)
	}
	code, out, stderr = runCmd(t, nil, "kv", "rm", "apps", "app-junk", "--revision", fmt.Sprint(rev), "--nats", url)
	if code != exitOK || !strings.Contains(out, "deleted stoker-apps/app-junk") {
		t.Fatalf("kv rm: exit %d, %s%s", code, out, stderr)
	}
	code, out, _ = runCmd(t, nil, "status", "--json", "--nats", url)
	if code != exitOK || strings.Contains(out, "poisoned") {
		t.Fatalf("status after rm: exit %d\n%s", code, out)
	}
}
