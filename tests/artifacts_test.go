package tests

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// TestArtifacts_PiShippedThroughTheBus is issue 14's must-show for
// artifacts, on real agents whose work dirs share nothing with the client:
// pi, copied into a directory of the client's that is deleted right after
// the upload, runs as a driver and its executors (each agent fetches it
// from stoker-artifacts) and prints its estimate; the same content uploaded
// again under another name is stored once; a corrupted cached copy is
// detected by its digest and fetched again.
func TestArtifacts_PiShippedThroughTheBus(t *testing.T) {
	c := fullCluster(t, nil, map[string]int{"a": 2, "b": 2})
	digest, _, err := bus.FileDigest(piBin)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(piBin)
	if err != nil {
		t.Fatal(err)
	}

	// submit copies pi as name into a fresh client dir, submits it with
	// --file, deletes the dir, and waits for the driver to finish with the
	// estimate in its log. It returns submit's stderr.
	submit := func(name string) string {
		t.Helper()
		private, err := os.MkdirTemp("", "stoker-client-")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(private, name)
		if err := os.WriteFile(path, b, 0o755); err != nil {
			t.Fatal(err)
		}
		out, errOut, err := c.CLI("submit", "--file", path, "--", name, "--slices", "4", "--samples-per-slice", "20000")
		os.RemoveAll(private)
		if err != nil {
			t.Fatalf("stoker submit --file: %v\nstdout: %s\nstderr: %s", err, out, errOut)
		}
		id := strings.Fields(out)[0]
		c.Eventually(90*time.Second, "driver "+id+" ended", func() bool {
			d := c.driver(id)
			return d != nil && d.State.Terminal()
		})
		logs, lerr, err := c.CLI("logs", id)
		if d := c.driver(id); d.State != schemas.DriverFinished || err != nil || !strings.Contains(logs, "Pi is roughly 3.1") {
			t.Fatalf("driver %s %s (%s); logs: %v %s\n%s", id, d.State, d.Message, err, lerr, logs)
		}
		return errOut
	}

	if errOut := submit("pi"); !strings.Contains(errOut, "uploaded") {
		t.Fatalf("first submit did not upload: %s", errOut)
	}
	// Where the executors ran: both agents, by spread-out placement of four
	// one-core executors over 2+2 cores minus the driver's.
	cached := func() []string {
		var out []string
		for _, id := range []string{"a", "b"} {
			p := filepath.Join(c.Dir, "work", id, "artifacts", digest, "data")
			if _, err := os.Stat(p); err == nil {
				out = append(out, p)
			}
		}
		return out
	}
	if len(cached()) == 0 {
		t.Fatalf("no agent cached %s", digest)
	}

	if errOut := submit("pi-again"); !strings.Contains(errOut, "already stored") {
		t.Fatalf("second submit of the same content uploaded again: %s", errOut)
	}
	js, err := jetstream.New(c.NC())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obs, err := bus.Artifacts(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := obs.List(ctx)
	if err != nil || len(infos) != 1 || infos[0].Name != digest {
		t.Fatalf("object store holds %d objects (%v), want only %s", len(infos), err, digest)
	}

	// Corrupt every cached copy (once no process runs from it).
	paths := cached()
	for _, p := range paths {
		c.Eventually(30*time.Second, "corrupt "+p, func() bool {
			return os.WriteFile(p, []byte("not pi"), 0o755) == nil
		})
	}
	submit("pi")
	refetched := 0
	for _, id := range []string{"a", "b"} {
		log, _ := os.ReadFile(c.procByName("agent-" + id).Log)
		refetched += bytes.Count(log, []byte("cached artifact did not match its digest"))
	}
	if refetched == 0 {
		t.Fatal("no agent reported a corrupted cached artifact")
	}
	good := 0
	for _, p := range cached() {
		if got, _, _ := bus.FileDigest(p); got == digest {
			good++
		}
	}
	if good == 0 {
		t.Fatal("no cached copy matches its digest after the refetch")
	}
	t.Logf("refetches after corruption: %d; cached on %d agents", refetched, len(cached()))
}
