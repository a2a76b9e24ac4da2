package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

// streamHas waits until the events stream holds n messages.
func streamHas(t *testing.T, nc *nats.Conn, n uint64) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 10*time.Second, fmt.Sprintf("%d events in %s", n, bus.StreamEvents), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, err := js.Stream(ctx, bus.StreamEvents)
		return err == nil && s.CachedInfo().State.Msgs >= n
	})
}

// emitted is what the tests emit: kind, id, state, message.
var emitted = [][4]string{
	{"worker", "w1", "ALIVE", "registered"},
	{"driver", "driver-20250101120000-ab12", "SUBMITTED", "submitted"},
	{"worker", "w2", "ALIVE", "registered"},
	{"executor", "app-20250101120000-cd34.0", "RUNNING", "exit 0"},
	{"worker", "w1", "DEAD", "no heartbeat for 5s"},
}

func emitAll(t *testing.T, nc *nats.Conn) {
	t.Helper()
	for _, e := range emitted {
		bus.Emit(nc, e[0], e[1], e[2], e[3])
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	streamHas(t, nc, uint64(len(emitted)))
}

// jsonEvents parses `stoker events --json` output.
func jsonEvents(t *testing.T, out string) []bus.StoredEvent {
	t.Helper()
	var evs []bus.StoredEvent
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var ev bus.StoredEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("not a JSON line: %q: %v", l, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func TestEvents_Print_SurvivesBusRestart(t *testing.T) {
	dir := t.TempDir()
	srv := bustest.StartIn(t, dir, -1)
	port := srv.Port()
	nc := bustest.Conn(t, srv.ClientURL())
	bustest.Store(t, nc)
	emitAll(t, nc)
	nc.Close()
	srv.Stop()

	srv = bustest.StartIn(t, dir, port)
	url := srv.ClientURL()

	code, out, stderr := runCmd(t, nil, "events", "--nats", url)
	if code != exitOK {
		t.Fatalf("events: exit %d\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(emitted) {
		t.Fatalf("want %d lines after the restart, got %d:\n%s", len(emitted), len(lines), out)
	}
	for i, e := range emitted {
		if f := strings.Fields(lines[i]); len(f) < 5 || f[2] != e[0] || f[3] != e[1] || f[4] != e[2] ||
			!strings.HasSuffix(lines[i], e[3]) {
			t.Errorf("line %d = %q, want time %s %s %s %s", i, lines[i], e[0], e[1], e[2], e[3])
		}
	}

	tests := []struct {
		name string
		args []string
		want []int // indexes into emitted
	}{
		{"all", nil, []int{0, 1, 2, 3, 4}},
		{"last 2", []string{"--last", "2"}, []int{3, 4}},
		{"kind worker", []string{"--kind", "worker"}, []int{0, 2, 4}},
		{"kind worker last 2", []string{"--kind", "worker", "--last", "2"}, []int{2, 4}},
		{"since 1h", []string{"--since", "1h"}, []int{0, 1, 2, 3, 4}},
		{"kind with none", []string{"--kind", "app"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"events", "--json", "--nats", url}, tt.args...)
			code, out, stderr := runCmd(t, nil, args...)
			if code != exitOK {
				t.Fatalf("exit %d\n%s", code, stderr)
			}
			evs := jsonEvents(t, out)
			if len(evs) != len(tt.want) {
				t.Fatalf("want %d events, got %d:\n%s", len(tt.want), len(evs), out)
			}
			for i, w := range tt.want {
				e := emitted[w]
				if got := evs[i]; got.Kind != e[0] || got.ID != e[1] || got.State != e[2] || got.Message != e[3] || got.Seq == 0 || got.At.IsZero() {
					t.Errorf("event %d = %+v, want %v", i, got, e)
				}
			}
		})
	}
}

func TestEvents_Since_SkipsOlder(t *testing.T) {
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.ClientURL())
	bustest.Store(t, nc)
	emitAll(t, nc)
	// --since goes by the stream's own timestamps, so time must pass: the
	// window starts half way between the old batch and the new event.
	tOld := time.Now()
	time.Sleep(time.Second)
	tNew := time.Now()
	bus.Emit(nc, "app", "app-20250101120000-ef56", "WAITING", "registered")
	streamHas(t, nc, uint64(len(emitted)+1))
	since := time.Since(tOld.Add(tNew.Sub(tOld) / 2)).Round(time.Millisecond)
	code, out, stderr := runCmd(t, nil, "events", "--json", "--since", since.String(), "--nats", srv.ClientURL())
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	evs := jsonEvents(t, out)
	if len(evs) != 1 || evs[0].Kind != "app" {
		t.Fatalf("want only the app event, got %+v", evs)
	}
}

func TestEvents_Follow_PrintsNewUntilCancelled(t *testing.T) {
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.ClientURL())
	bustest.Store(t, nc)
	bus.Emit(nc, "worker", "w0", "ALIVE", "old")
	streamHas(t, nc, 1)

	ctx, cancel := context.WithCancel(context.Background())
	var out bustest.Buffer
	done := make(chan error, 1)
	go func() {
		done <- sdk.NewClient(nc).Events(ctx, bus.EventQuery{Last: 100, Kind: "worker", Follow: true},
			func(ev bus.StoredEvent) error { return writeEvent(&out, ev, false) })
	}()
	bustest.Eventually(t, 10*time.Second, "the old event", func() bool { return strings.Contains(out.String(), "old") })
	bus.Emit(nc, "driver", "driver-20250101120000-ab12", "SUBMITTED", "other kind")
	bus.Emit(nc, "worker", "w0", "DEAD", "new one")
	bustest.Eventually(t, 10*time.Second, "the new event", func() bool { return strings.Contains(out.String(), "new one") })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("follow ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end after cancel")
	}
	if s := out.String(); strings.Contains(s, "other kind") || strings.Count(s, "\n") != 2 {
		t.Fatalf("output:\n%s", s)
	}
}

func TestEvents_Flags_UsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad kind", []string{"events", "--kind", "dog"}, `--kind "dog" is not one of`},
		{"zero last", []string{"events", "--last", "0"}, "--last must be > 0"},
		{"negative since", []string{"events", "--since=-1m"}, "--since must be positive"},
		{"args", []string{"events", "x"}, "takes no arguments"},
		{"kv nothing", []string{"kv"}, "expected get BUCKET KEY, ls BUCKET or rm BUCKET KEY"},
		{"kv bad verb", []string{"kv", "put", "workers", "x"}, `unknown kv command "put"`},
		{"kv get no key", []string{"kv", "get", "workers"}, "expects 2 argument(s)"},
		{"kv bad bucket", []string{"kv", "ls", "stoker-nope"}, `unknown bucket "stoker-nope"`},
		{"health args", []string{"health", "x"}, "takes no arguments"},
		{"health timeout", []string{"health", "--timeout", "0s"}, "--timeout must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCmd(t, nil, tt.args...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d with %q", code, stderr, exitUsage, tt.want)
			}
		})
	}
}

func TestKV_GetAndLs_DecodeRecords(t *testing.T) {
	srv := bustest.Start(t)
	url := srv.ClientURL()
	nc := bustest.Conn(t, url)
	st := bustest.Store(t, nc)
	ctx := context.Background()
	w := &schemas.Worker{ID: "w1", Instance: "i1", Host: "h1", Cores: 4, MemoryMB: 2048, State: schemas.WorkerAlive}
	rev, err := bus.Create(ctx, st.Workers, "w1", w)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Create(ctx, st.Cluster, bus.KeyClusterState, &schemas.Cluster{Epoch: 7, Leader: "s1", State: schemas.ClusterAlive}); err != nil {
		t.Fatal(err)
	}

	t.Run("get json", func(t *testing.T) {
		code, out, stderr := runCmd(t, nil, "kv", "get", "stoker-workers", "w1", "--json", "--nats", url)
		if code != exitOK {
			t.Fatalf("exit %d\n%s", code, stderr)
		}
		var got struct {
			Bucket   string         `json:"bucket"`
			Key      string         `json:"key"`
			Revision uint64         `json:"revision"`
			Created  time.Time      `json:"created"`
			Value    schemas.Worker `json:"value"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if got.Bucket != bus.BucketWorkers || got.Key != "w1" || got.Revision != rev || got.Created.IsZero() ||
			got.Value.Cores != 4 || got.Value.State != schemas.WorkerAlive || got.Value.Host != "h1" {
			t.Fatalf("got %+v", got)
		}
	})
	t.Run("get for people", func(t *testing.T) {
		code, out, _ := runCmd(t, nil, "kv", "get", "cluster", "state", "--nats", url)
		if code != exitOK || !strings.HasPrefix(out, "stoker-cluster/state  revision 1  written ") ||
			!strings.Contains(out, `"epoch": 7`) || !strings.Contains(out, `"state": "ALIVE"`) ||
			!strings.Contains(out, "read from stream leader") {
			t.Fatalf("exit %d:\n%s", code, out)
		}
	})
	t.Run("get missing", func(t *testing.T) {
		code, _, stderr := runCmd(t, nil, "kv", "get", "workers", "nope", "--nats", url)
		if code != exitFailure || !strings.Contains(stderr, "not found") {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("ls", func(t *testing.T) {
		code, out, _ := runCmd(t, nil, "kv", "ls", "workers", "--nats", url)
		if code != exitOK || !strings.Contains(out, "w1") || !strings.Contains(out, "ALIVE  4 cores  2G  host h1") {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		code, out, _ = runCmd(t, nil, "kv", "ls", "apps", "--nats", url)
		if code != exitOK || !strings.Contains(out, "(no keys in stoker-apps)") {
			t.Fatalf("empty bucket: exit %d:\n%s", code, out)
		}
	})
	t.Run("ls json", func(t *testing.T) {
		code, out, _ := runCmd(t, nil, "kv", "ls", "stoker-workers", "--json", "--nats", url)
		var got []struct {
			Key   string         `json:"key"`
			Value schemas.Worker `json:"value"`
		}
		if err := json.Unmarshal([]byte(out), &got); code != exitOK || err != nil || len(got) != 1 || got[0].Value.ID != "w1" {
			t.Fatalf("exit %d, %v:\n%s", code, err, out)
		}
	})
}

func TestHealth_Run_ExitCodes(t *testing.T) {
	bare := bustest.Start(t) // JetStream, but no stoker store yet
	full := bustest.Start(t)
	bustest.Store(t, bustest.Conn(t, full.ClientURL()))

	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"store ready", []string{"--nats", full.ClientURL()}, exitOK, "healthy: "},
		{"no store yet", []string{"--nats", bare.ClientURL()}, exitFailure, "unhealthy: bus: bucket stoker-workers"},
		{"bus only, no store needed", []string{"--bus", "--nats", bare.ClientURL()}, exitOK, "answers JetStream"},
		{"nothing listening", []string{"--nats", "nats://127.0.0.1:1", "--timeout", "1s"}, exitFailure, "unhealthy: cannot reach the bus at nats://127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := runCmd(t, nil, append([]string{"health"}, tt.args...)...)
			all := out + stderr
			if code != tt.wantCode || !strings.Contains(all, tt.want) || strings.Count(all, "\n") != 1 {
				t.Fatalf("exit %d, output %q; want exit %d, one line with %q", code, all, tt.wantCode, tt.want)
			}
		})
	}
}

func TestHealthTarget(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		sets    int
		busOnly bool
		env     string
		want    string
	}{
		{"client: env", "nats://a:4222", 1, false, "nats://a:4222", "nats://a:4222"},
		{"bus: env names the cluster, check self", "nats://a:4222", 1, true, "nats://a:4222", bus.DefaultURL},
		{"bus: explicit flag", "nats://b:4222", 1, true, "", "nats://b:4222"},
		{"bus: explicit flag over env", "nats://b:4222", 2, true, "nats://a:4222", "nats://b:4222"},
		{"bus: explicit flag equal to env", "nats://a:4222", 2, true, "nats://a:4222", "nats://a:4222"},
		{"bus: default", bus.DefaultURL, 0, true, "", bus.DefaultURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := healthTarget(&setCounter{v: tt.value, sets: tt.sets}, tt.busOnly, tt.env); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}
