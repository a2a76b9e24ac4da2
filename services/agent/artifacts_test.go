package agent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

func digestOf(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestArtifactCache_FetchVerifyRefetch: with an agent's credential on a
// secured bus, the cache fetches an object an admin stored, reuses the
// verified copy, fetches it again once the cached copy is corrupted, and
// links it executable into a child's directory with argv[0] resolved; the
// agent may not write the store.
func TestArtifactCache_FetchVerifyRefetch(t *testing.T) {
	srv := bustest.StartSecure(t)
	admin := srv.ConnAs(t, auth.RoleAdmin, "admin")
	bustest.Store(t, admin)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	content := bytes.Repeat([]byte("#!/bin/sh\necho shipped\n"), 20000) // several chunks
	digest := digestOf(content)
	jsAdmin, _ := jetstream.New(admin)
	obs, err := bus.Artifacts(ctx, jsAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if stored, err := bus.PutArtifact(ctx, jsAdmin, obs, digest, "tool", bytes.NewReader(content)); err != nil || !stored {
		t.Fatalf("put: stored %v, %v", stored, err)
	}
	if stored, err := bus.PutArtifact(ctx, jsAdmin, obs, digest, "tool-again", bytes.NewReader(content)); err != nil || stored {
		t.Fatalf("second put of the same digest: stored %v, %v", stored, err)
	}

	agentNC := srv.ConnAs(t, auth.RoleAgent, testWID)
	js, _ := jetstream.New(agentNC)
	c := newArtifactCache(t.TempDir(), js)
	p, refetched, err := c.ensure(ctx, digest)
	if err != nil || refetched {
		t.Fatalf("ensure: %v (refetched %v)", err, refetched)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, content) {
		t.Fatalf("cached copy differs (%d bytes)", len(got))
	}
	if _, _, err := c.ensure(ctx, digest); err != nil {
		t.Fatal(err)
	}
	if f, r := c.Stats(); f != 1 || r != 0 {
		t.Fatalf("fetches %d refetches %d, want 1 0", f, r)
	}
	if err := os.WriteFile(p, []byte("corrupted"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, refetched, err := c.ensure(ctx, digest); err != nil || !refetched {
		t.Fatalf("after corruption: refetched %v, %v", refetched, err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, content) {
		t.Fatal("corrupted copy not replaced")
	}
	if f, r := c.Stats(); f != 2 || r != 1 {
		t.Fatalf("fetches %d refetches %d, want 2 1", f, r)
	}

	// Unknown digest: a clear not-found.
	if _, _, err := c.ensure(ctx, digestOf([]byte("nothing"))); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("unknown digest: %v", err)
	}

	// Into a child's dir, argv[0] resolved.
	s := &Service{artifacts: c}
	dir := filepath.Join(t.TempDir(), "app-1", "0")
	argv, err := s.prepareArtifacts(ctx, []schemas.Artifact{{Name: "tool", Digest: digest}}, dir, []string{"tool", "-x"})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "tool"); argv[0] != want || argv[1] != "-x" {
		t.Fatalf("argv %v, want [%s -x]", argv, want)
	}
	if fi, err := os.Stat(argv[0]); err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Fatalf("placed artifact: %v %v", fi, err)
	}

	// The agent reads; it does not write.
	aobs, err := bus.Artifacts(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	defer wcancel()
	other := []byte("agent upload")
	if _, err := bus.PutArtifact(wctx, js, aobs, digestOf(other), "x", bytes.NewReader(other)); err == nil {
		t.Fatal("an agent wrote to stoker-artifacts")
	}
}

func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestUntarGz_UnpacksAndRefusesEscapes(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(t.TempDir(), "ok.tar.gz")
	os.WriteFile(ok, tarGz(t, map[string]string{"conf/app.conf": "x=1\n", "data.txt": "d"}), 0o644)
	if err := untarGz(ok, dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "conf", "app.conf")); string(b) != "x=1\n" {
		t.Fatalf("unpacked %q", b)
	}
	bad := filepath.Join(t.TempDir(), "bad.tar.gz")
	os.WriteFile(bad, tarGz(t, map[string]string{"../evil": "x"}), 0o644)
	if err := untarGz(bad, dir); err == nil || !strings.Contains(err.Error(), "leaves the directory") {
		t.Fatalf("escape: %v", err)
	}
}
