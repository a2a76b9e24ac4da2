package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

// startTestCluster runs the `stoker up` wiring in-process on a random port
// with two small workers and stops it at cleanup.
func startTestCluster(t *testing.T) *upCluster {
	t.Helper()
	return startTestClusterWith(t, nil)
}

// startTestClusterWith is startTestCluster with options changed by edit.
func startTestClusterWith(t *testing.T, edit func(*upOptions)) *upCluster {
	t.Helper()
	o := &upOptions{
		workers: 2, coresPerWorker: 2, memoryPerWorkerMB: 1024,
		data: t.TempDir(), host: "127.0.0.1", port: -1,
		live:            liveness{heartbeat: 200 * time.Millisecond, workerTimeout: 3 * time.Second},
		recoveryTimeout: time.Second, killGrace: time.Second, registerWait: 20 * time.Second,
	}
	if edit != nil {
		edit(o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := startUp(ctx, o, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatalf("startUp: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}

// clientVars is the environment `stoker up` tells clients to set.
func (c *upCluster) clientVars() map[string]string {
	return map[string]string{"STOKER_NATS_URL": c.url, "STOKER_CREDS": c.adminCreds()}
}

// adminConn connects a test client with the admin credential `stoker up` wrote.
func (c *upCluster) adminConn(t *testing.T) *nats.Conn {
	t.Helper()
	nc, err := bus.Connect(c.url, bus.ConnectOptions{Name: t.Name(), Creds: c.adminCreds(), CA: c.ca})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestUp_SecureByDefault: `stoker up` authenticates; a client without
// credentials gets a one-line error at once, with the printed line it
// works, and the banner prints that line.
func TestUp_SecureByDefault(t *testing.T) {
	c := startTestCluster(t)
	if !c.secure || !c.srv.Secure() {
		t.Fatal("stoker up started without authentication")
	}
	start := time.Now()
	code, _, stderr := runCmd(t, map[string]string{"STOKER_CREDS": "", "STOKER_TLS_CA": c.ca}, "workers", "--nats", c.url)
	if code == exitOK || !strings.Contains(stderr, "refused the credentials") || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
		t.Fatalf("anonymous client: exit %d, stderr %q", code, stderr)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("anonymous client refused after %s", d)
	}
	code, out, stderr := runCmd(t, c.clientVars(), "workers", "--nats", c.url)
	if code != exitOK {
		t.Fatalf("with the admin credential: exit %d: %s %s", code, out, stderr)
	}
	// TLS is on: without the CA the client cannot verify the bus, and says
	// which flag fixes it; a plaintext client is refused.
	code, _, stderr = runCmd(t, map[string]string{"STOKER_CREDS": c.adminCreds(), "STOKER_TLS_CA": "/nonexistent-ca.pem"}, "workers", "--nats", c.url)
	if code == exitOK {
		t.Fatalf("a client with the wrong CA connected")
	}
	plain, err := net.Dial("tcp", strings.TrimPrefix(c.url, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	_ = plain.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := plain.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(plain)
	// The server announces tls_required, takes the plaintext for a failed
	// handshake and closes: no PONG.
	if !strings.Contains(string(b), `"tls_required":true`) || strings.Contains(string(b), "PONG") {
		t.Fatalf("plaintext client got %q, want tls_required and no PONG", b)
	}
	var banner strings.Builder
	printUpBanner(&banner, &upOptions{data: c.data}, c)
	if !strings.Contains(banner.String(), "STOKER_CREDS="+c.adminCreds()) {
		t.Errorf("banner lacks the STOKER_CREDS line:\n%s", banner.String())
	}
	// The viewer credential written beside it may list but not submit.
	viewer := map[string]string{"STOKER_NATS_URL": c.url, "STOKER_CREDS": strings.Replace(c.adminCreds(), "admin.creds", "viewer.creds", 1)}
	if code, out, stderr := runCmd(t, viewer, "workers"); code != exitOK {
		t.Fatalf("viewer workers: exit %d: %s %s", code, out, stderr)
	}
	code, _, stderr = runCmd(t, viewer, "submit", "--", "true")
	if code == exitOK || !strings.Contains(stderr, "permission denied") {
		t.Fatalf("viewer submit: exit %d, stderr %q", code, stderr)
	}
	// Event history needs a consumer, which a viewer may not create: the
	// error says so instead of only timing out.
	code, _, stderr = runCmd(t, viewer, "events", "--last", "1")
	if code == exitOK || !strings.Contains(stderr, "permission denied") {
		t.Fatalf("viewer events: exit %d, stderr %q", code, stderr)
	}
}

func TestUp_WorkersJSON_ListsBothAlive(t *testing.T) {
	c := startTestCluster(t)
	host := hostname()
	want := map[string]bool{upWorkerID(host, 1): true, upWorkerID(host, 2): true}

	var last string
	bustest.Eventually(t, 20*time.Second, "both workers ALIVE in `stoker workers --json`", func() bool {
		code, out, stderr := runCmd(t, c.clientVars(), "workers", "--json", "--nats", c.url)
		last = out + stderr
		if code != exitOK {
			return false
		}
		var ws []schemas.WorkerView
		if err := json.Unmarshal([]byte(out), &ws); err != nil {
			t.Fatalf("workers --json is not a JSON array of workers: %v\n%s", err, out)
		}
		alive := 0
		for _, w := range ws {
			if want[w.ID] && w.State == schemas.WorkerAlive && w.Cores == 2 && w.MemoryMB == 1024 {
				alive++
			}
		}
		return alive == 2
	})
	if t.Failed() {
		t.Logf("last output: %s", last)
	}

	// The table for people names both workers too.
	code, out, _ := runCmd(t, c.clientVars(), "workers", "--nats", c.url)
	for id := range want {
		if code != exitOK || !strings.Contains(out, id) {
			t.Errorf("workers table (exit %d) lacks %s:\n%s", code, id, out)
		}
	}
}

func TestUp_SubmitWait_ExitCodeFollowsDriver(t *testing.T) {
	c := startTestCluster(t)
	tests := []struct {
		name string
		cmd  []string
		want int
	}{
		{"finished", []string{"true"}, exitOK},
		{"failed", []string{"false"}, exitFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"submit", "--wait", "--nats", c.url, "--"}, tt.cmd...)
			code, out, stderr := runCmd(t, c.clientVars(), args...)
			if code != tt.want {
				t.Fatalf("exit = %d, want %d\nstdout %s\nstderr %s", code, tt.want, out, stderr)
			}
			if !strings.HasPrefix(out, schemas.DriverIDPrefix) {
				t.Errorf("stdout = %q, want the driver id first", out)
			}
		})
	}
}

// TestUp_SecondOnLockedData_Refused (issue 9 item 2): a second `stoker up`
// on a data dir a live `stoker up` holds exits with an error naming the
// owner, and the first keeps working.
func TestUp_SecondOnLockedData_Refused(t *testing.T) {
	c := startTestCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, _, errb := testEnv(nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	code := run(ctx, e, []string{"up", "--data", c.data, "--host", "127.0.0.1", "--port", fmt.Sprint(port), "--workers", "1"})
	if ctx.Err() != nil {
		t.Fatal("the second stoker up on the same --data ran until cancelled")
	}
	stderr := errb.String()
	for _, want := range []string{c.data, "is in use by stoker up", fmt.Sprintf("pid %d", os.Getpid()), "stop it first"} {
		if code == exitOK || !strings.Contains(stderr, want) {
			t.Fatalf("second stoker up: exit %d, stderr does not say %q:\n%s", code, want, stderr)
		}
	}
	bustest.Eventually(t, 20*time.Second, "the first cluster's workers still ALIVE", func() bool {
		code, out, _ := runCmd(t, c.clientVars(), "workers", "--json", "--nats", c.url)
		var ws []schemas.WorkerView
		if code != exitOK || json.Unmarshal([]byte(out), &ws) != nil || len(ws) != 2 {
			return false
		}
		for _, w := range ws {
			if w.State != schemas.WorkerAlive {
				return false
			}
		}
		return true
	})
}
