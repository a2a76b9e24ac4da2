package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

// permutations of s, in a stable order.
func permutations(s []string) [][]string {
	if len(s) <= 1 {
		return [][]string{append([]string(nil), s...)}
	}
	var out [][]string
	for i := range s {
		rest := append(append([]string(nil), s[:i]...), s[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]string{s[i]}, p...))
		}
	}
	return out
}

// storeShape is every bucket's and the stream's settings, as text.
func storeShape(t *testing.T, js jetstream.JetStream) string {
	t.Helper()
	var b strings.Builder
	names := []string{bus.StreamEvents}
	for _, n := range bus.Buckets() {
		names = append(names, "KV_"+n)
	}
	for _, n := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := js.Stream(ctx, n)
		cancel()
		if err != nil {
			t.Fatalf("stream %s: %v", n, err)
		}
		c := s.CachedInfo().Config
		fmt.Fprintf(&b, "%s r=%d age=%s hist=%d bytes=%d marker=%s %s %q\n", n, c.Replicas, c.MaxAge,
			c.MaxMsgsPerSubject, c.MaxBytes, c.SubjectDeleteMarkerTTL, c.Storage, c.Description)
	}
	return b.String()
}

func newTestService(t *testing.T, name string, nc *nats.Conn) service {
	t.Helper()
	mk := map[string]newService{
		"registration": newRegistration(liveness{}), "heartbeat": newHeartbeat(liveness{}, 0, false),
		"recovery": newRecovery(0), "scheduler": newScheduler(schedulerSettings{}),
	}[name]
	s, err := mk(nc, name+"-1", zerolog.Nop())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return s
}

// Services only open the store; its owner creates it. Whatever the order
// (services before the owner wait for it), on a fresh or an existing bus,
// every service starts and the buckets are the owner's.
func TestServices_AnyOrder_OpenTheOwnersStore(t *testing.T) {
	owner := bus.StoreConfig{LeaseTTL: 4 * time.Second, EventsMaxAge: time.Hour}
	srv := bustest.Start(t)
	js, err := jetstream.New(bustest.Conn(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := bus.Provision(ctx, js, owner, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	want := storeShape(t, js)
	if !strings.Contains(want, "KV_stoker-leader r=1 age=4s") {
		t.Fatalf("the reference store lacks the owner's lease TTL:\n%s", want)
	}

	for i, order := range permutations([]string{"registration", "heartbeat", "recovery", "scheduler"}) {
		ownerAt := i % (len(order) + 1) // the owner before the first, ..., after the last
		for _, existing := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s owner@%d existing=%v", strings.Join(order, ","), ownerAt, existing), func(t *testing.T) {
				srv := bustest.Start(t)
				nc := bustest.Conn(t, srv.ClientURL())
				js, err := jetstream.New(nc)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				provision := func() {
					if _, err := bus.Provision(ctx, js, owner, zerolog.Nop()); err != nil {
						t.Fatalf("provision: %v", err)
					}
				}
				if existing {
					provision()
				}
				started := make(chan error, len(order))
				for j, name := range order {
					if j == ownerAt {
						provision()
					}
					s := newTestService(t, name, bustest.Conn(t, srv.ClientURL()))
					t.Cleanup(s.Stop)
					go func() { started <- startWhenStore(ctx, nc, s, zerolog.Nop()) }()
				}
				if ownerAt == len(order) {
					provision()
				}
				for range order {
					if err := <-started; err != nil {
						t.Fatalf("a service did not start: %v", err)
					}
				}
				if got := storeShape(t, js); got != want {
					t.Fatalf("store:\n%s\nwant:\n%s", got, want)
				}
			})
		}
	}
}

// `stoker up --lease-ttl 5s --replicas 1` (and the other store and
// scheduler flags) starts, and its scheduler leads under the bucket's TTL;
// started again on the same data with another TTL, the bucket follows.
func TestUp_StoreFlags_StartAndUpdateInPlace(t *testing.T) {
	data := t.TempDir()
	parse := func(args ...string) *upOptions {
		t.Helper()
		fs := flag.NewFlagSet("up", flag.ContinueOnError)
		o := &upOptions{}
		complete := bindUp(fs, o)
		if err := fs.Parse(append([]string{"--data", data, "--workers", "1", "--cores-per-worker", "1",
			"--memory-per-worker", "512m", "--heartbeat-interval", "200ms", "--worker-timeout", "3s"}, args...)); err != nil {
			t.Fatal(err)
		}
		if err := complete(fs.Args()); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		o.port, o.registerWait = -1, 20*time.Second
		return o
	}
	for _, tc := range []struct {
		args []string
		ttl  time.Duration
	}{
		{[]string{"--lease-ttl", "5s", "--replicas", "1"}, 5 * time.Second},
		{[]string{"--lease-ttl", "2s", "--replicas", "1", "--renew-interval", "500ms", "--beat-interval", "50ms",
			"--missed-beats", "4", "--launch-timeout", "1s", "--events-max-age", "1h", "--events-max-bytes", "64m",
			"--spread-out=false", "--max-executor-retries", "3"}, 2 * time.Second},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		c, err := startUp(ctx, parse(tc.args...), zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
		cancel()
		if err != nil {
			t.Fatalf("up %v: %v", tc.args, err)
		}
		nc := c.adminConn(t)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
		st, err := bus.OpenStore(ctx, js)
		if err != nil {
			t.Fatal(err)
		}
		if ttl, err := bus.LeaseTTL(ctx, st.Leader); err != nil || ttl != tc.ttl {
			t.Errorf("up %v: lease TTL %s (%v), want %s", tc.args, ttl, err, tc.ttl)
		}
		bustest.Eventually(t, 15*time.Second, "the cluster ALIVE under a scheduler lease", func() bool {
			cl, _, err := bus.Get[schemas.Cluster](ctx, st.Cluster, bus.KeyClusterState)
			return err == nil && cl.State == schemas.ClusterAlive
		})
		cancel()
		c.Stop()
	}
}

// `stoker bus` provisions the store with its flags once JetStream answers,
// and `stoker init` against it with other settings updates what can be
// updated and refuses what cannot.
func TestBus_ProvisionsStore_InitChecksIt(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	ctx, cancel := context.WithCancel(context.Background())
	e, out, errb := testEnv(nil)
	exited := make(chan int, 1)
	data := t.TempDir()
	// The bus writes the admin credential in its data dir on first start.
	admin := map[string]string{"STOKER_CREDS": auth.CredsPath(data, auth.RoleAdmin)}
	go func() {
		exited <- run(ctx, e, []string{"bus", "--data", data, "--host", "127.0.0.1", "--port", fmt.Sprint(port),
			"--lease-ttl", "2s", "--log-level", "warn"})
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-exited; code != exitOK {
			t.Errorf("bus exit %d\n%s%s", code, out, errb)
		}
	})
	var js jetstream.JetStream
	bustest.Eventually(t, 20*time.Second, "the bus's store", func() bool {
		nc, err := bus.Connect(url, bus.ConnectOptions{Name: t.Name(), Creds: admin["STOKER_CREDS"],
			CA: auth.CAPath(data)})
		if err != nil {
			return false
		}
		t.Cleanup(nc.Close)
		js, _ = jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = bus.OpenStore(ctx, js)
		return err == nil
	})
	if !strings.Contains(storeShape(t, js), "KV_stoker-leader r=1 age=2s") {
		t.Fatalf("the bus did not provision its lease TTL:\n%s", storeShape(t, js))
	}
	code, stdout, stderr := runCmd(t, admin, "init", "--nats", url, "--lease-ttl", "4s", "--log-level", "warn")
	if code != exitOK || !strings.Contains(stdout, "store ready") || !strings.Contains(storeShape(t, js), "KV_stoker-leader r=1 age=4s") {
		t.Fatalf("init --lease-ttl 4s: exit %d\n%s%s\n%s", code, stdout, stderr, storeShape(t, js))
	}
	code, _, stderr = runCmd(t, admin, "init", "--nats", url, "--replicas", "3", "--timeout", "5s", "--log-level", "warn")
	if code != exitFailure || !strings.Contains(stderr, "replicas is 1, wanted 3") {
		t.Fatalf("init --replicas 3 on an R1 store: exit %d, %s", code, stderr)
	}
}
