package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
)

// TestToken_JoinOnceRevokeExpire: an admin's token joins a new agent with a
// credential confined to its worker id (kept 0600 in its work dir, with the
// CA); a revoked or expired token is refused with a one-line error; a
// viewer cannot make tokens.
func TestToken_JoinOnceRevokeExpire(t *testing.T) {
	c := startTestCluster(t)
	code, token, stderr := runCmd(t, c.clientVars(), "token", "create", "--ttl", "1h")
	if code != exitOK || !strings.HasPrefix(token, "STOKERJOIN1.") {
		t.Fatalf("token create: exit %d %q %s", code, token, stderr)
	}
	ctx := context.Background()
	dir := t.TempDir()
	// A new machine: the URL and the token, nothing else.
	got, err := joinWithToken(ctx, natsTarget{URL: c.url}, token, dir, "joiner-1")
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	fi, err := os.Stat(got.Creds)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent creds %s: %v %v", got.Creds, err, fi)
	}
	b, _ := os.ReadFile(got.Creds)
	id, err := bus.CredsIdentity(b)
	if err != nil || id.Role != "agent" || id.Name != "joiner-1" {
		t.Fatalf("joined credential names %+v (%v), want agent joiner-1", id, err)
	}
	nc, err := got.connect(bus.ConnectOptions{Name: "joiner"})
	if err != nil {
		t.Fatalf("connect with the joined credential: %v", err)
	}
	nc.Close()

	code, out, _ := runCmd(t, c.clientVars(), "token", "ls")
	if code != exitOK || !strings.Contains(out, "joiner-1") {
		t.Fatalf("token ls: %d %s", code, out)
	}
	tokID := strings.Fields(strings.Split(out, "\n")[1])[0]
	if code, out, stderr := runCmd(t, c.clientVars(), "token", "revoke", tokID); code != exitOK {
		t.Fatalf("token revoke: %d %s %s", code, out, stderr)
	}
	if _, err := joinWithToken(ctx, natsTarget{URL: c.url}, token, t.TempDir(), "joiner-2"); err == nil ||
		!strings.Contains(err.Error(), "revoked") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("join with a revoked token: %v", err)
	}

	// Expired: the join credential itself expires with the token.
	code, short, _ := runCmd(t, c.clientVars(), "token", "create", "--ttl", "1s")
	if code != exitOK {
		t.Fatal("token create --ttl 1s")
	}
	bustest.Eventually(t, 5*time.Second, "the 1s token refused as expired", func() bool {
		_, err := joinWithToken(ctx, natsTarget{URL: c.url}, short, t.TempDir(), "joiner-3")
		return err != nil && strings.Contains(err.Error(), "expired")
	})

	viewer := map[string]string{"STOKER_NATS_URL": c.url, "STOKER_CREDS": strings.Replace(c.adminCreds(), "admin.creds", "viewer.creds", 1)}
	if code, _, stderr := runCmd(t, viewer, "token", "create"); code == exitOK || !strings.Contains(stderr, "permission denied") {
		t.Fatalf("viewer token create: exit %d %s", code, stderr)
	}
}
