package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

func testJS(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(bustest.Conn(t, url))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(ctx10(t), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().Config
}

func TestProvision_Fresh_CreatesEveryBucketAndStream(t *testing.T) {
	srv := bustest.Start(t)
	js := testJS(t, srv.ClientURL())
	if _, err := bus.OpenStore(ctx10(t), js); !errors.Is(err, bus.ErrNoStore) {
		t.Fatalf("OpenStore on a fresh bus: want ErrNoStore, got %v", err)
	}
	var log bustest.Buffer
	if _, err := bus.Provision(ctx10(t), js, bus.StoreConfig{LeaseTTL: 2 * time.Second}, zerolog.New(&log)); err != nil {
		t.Fatal(err)
	}
	for _, b := range bus.Buckets() {
		c := streamConfig(t, js, "KV_"+b)
		if c.Replicas != 1 || c.Storage != jetstream.FileStorage {
			t.Errorf("%s: replicas %d storage %s", b, c.Replicas, c.Storage)
		}
	}
	if c := streamConfig(t, js, "KV_"+bus.BucketLeader); c.MaxAge != 2*time.Second || c.SubjectDeleteMarkerTTL != 2*time.Second || c.MaxMsgsPerSubject != 1 {
		t.Errorf("lease bucket: %+v", c)
	}
	if c := streamConfig(t, js, bus.StreamEvents); c.MaxAge != bus.DefaultEventsMaxAge || c.MaxBytes != bus.DefaultEventsMaxBytes {
		t.Errorf("events stream: %+v", c)
	}
	if c := streamConfig(t, js, bus.StreamArtifacts); c.Replicas != 1 || !c.AllowDirect {
		t.Errorf("artifacts object store: %+v", c)
	}
	if n := strings.Count(log.String(), `"message":"created"`); n != 8 {
		t.Errorf("want 8 created lines, got %d:\n%s", n, log.String())
	}
	// Again with the same config: nothing to do, nothing logged.
	before := log.String()
	if _, err := bus.Provision(ctx10(t), js, bus.StoreConfig{LeaseTTL: 2 * time.Second}, zerolog.New(&log)); err != nil {
		t.Fatal(err)
	}
	if log.String() != before {
		t.Errorf("second provision logged: %s", strings.TrimPrefix(log.String(), before))
	}
}

func TestProvision_LeaseTTLChanged_UpdatedInPlaceAndLogged(t *testing.T) {
	srv := bustest.Start(t)
	js := testJS(t, srv.ClientURL())
	st, err := bus.Provision(ctx10(t), js, bus.StoreConfig{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Create(ctx10(t), st.Workers, "w1", &schemas.Worker{ID: "w1", Cores: 1, MemoryMB: 1}); err != nil {
		t.Fatal(err)
	}
	var log bustest.Buffer
	st, err = bus.Provision(ctx10(t), js, bus.StoreConfig{LeaseTTL: 5 * time.Second, EventsMaxAge: time.Hour}, zerolog.New(&log))
	if err != nil {
		t.Fatalf("provision with another lease TTL: %v", err)
	}
	if ttl, err := bus.LeaseTTL(ctx10(t), st.Leader); err != nil || ttl != 5*time.Second {
		t.Fatalf("lease TTL = %s, %v; want 5s", ttl, err)
	}
	if c := streamConfig(t, js, "KV_"+bus.BucketLeader); c.SubjectDeleteMarkerTTL != 5*time.Second {
		t.Errorf("limit-marker TTL = %s, want 5s", c.SubjectDeleteMarkerTTL)
	}
	if c := streamConfig(t, js, bus.StreamEvents); c.MaxAge != time.Hour {
		t.Errorf("events max age = %s, want 1h", c.MaxAge)
	}
	for _, want := range []string{`"resource":"bucket stoker-leader","setting":"TTL","was":"10s","now":"5s"`,
		`"resource":"stream stoker-events","setting":"max age","was":"168h0m0s","now":"1h0m0s"`} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, log.String())
		}
	}
	if w, _, err := bus.Get[schemas.Worker](ctx10(t), st.Workers, "w1"); err != nil || w.ID != "w1" {
		t.Fatalf("record lost by the update: %v", err)
	}
}

func TestProvision_ReplicasDiffer_ErrorNamesBucketAndFix(t *testing.T) {
	srv := bustest.Start(t)
	js := testJS(t, srv.ClientURL())
	if _, err := bus.Provision(ctx10(t), js, bus.StoreConfig{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	_, err := bus.Provision(ctx10(t), js, bus.StoreConfig{Replicas: 3}, zerolog.Nop())
	if !errors.Is(err, bus.ErrStoreMismatch) {
		t.Fatalf("want ErrStoreMismatch, got %v", err)
	}
	for _, want := range []string{"bucket stoker-workers", "replicas is 1, wanted 3", "--replicas 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if c := streamConfig(t, js, "KV_"+bus.BucketWorkers); c.Replicas != 1 {
		t.Errorf("replicas changed to %d", c.Replicas)
	}
}

func TestProvision_StorageDiffers_Error(t *testing.T) {
	srv := bustest.Start(t)
	js := testJS(t, srv.ClientURL())
	if _, err := js.CreateKeyValue(ctx10(t), jetstream.KeyValueConfig{Bucket: bus.BucketApps, Storage: jetstream.MemoryStorage, History: 5}); err != nil {
		t.Fatal(err)
	}
	_, err := bus.Provision(ctx10(t), js, bus.StoreConfig{}, zerolog.Nop())
	if !errors.Is(err, bus.ErrStoreMismatch) || !strings.Contains(err.Error(), "bucket stoker-apps: ") ||
		!strings.Contains(err.Error(), "storage is Memory, wanted File") {
		t.Fatalf("want a storage mismatch on stoker-apps, got %v", err)
	}
}

// Services wait for the store; the owner's Provision ends the wait.
func TestWaitStore_ReturnsOnceProvisioned(t *testing.T) {
	srv := bustest.Start(t)
	js := testJS(t, srv.ClientURL())
	var log bustest.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := bus.WaitStore(ctx10(t), js, zerolog.New(&log))
		done <- err
	}()
	bustest.Eventually(t, 5*time.Second, "a waiting log line", func() bool {
		return strings.Contains(log.String(), "waiting for the store; run `stoker init` against an external NATS")
	})
	select {
	case err := <-done:
		t.Fatalf("WaitStore returned before the store existed: %v", err)
	default:
	}
	if _, err := bus.Provision(ctx10(t), js, bus.StoreConfig{}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitStore: %v", err)
	}
}

// The owner puts the store back when its connection comes back to a bus
// that lost it.
func TestProvision_ReconnectToEmptyBus_Reprovisions(t *testing.T) {
	srv := bustest.Start(t)
	port := srv.Port()
	nc := bustest.Conn(t, srv.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Provision(ctx10(t), js, bus.StoreConfig{LeaseTTL: 4 * time.Second}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	bustest.StartIn(t, t.TempDir(), port) // an empty store
	bustest.Eventually(t, 15*time.Second, "the store provisioned again", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := bus.OpenStore(ctx, js)
		if err != nil {
			return false
		}
		ttl, err := bus.LeaseTTL(ctx, st.Leader)
		return err == nil && ttl == 4*time.Second
	})
}

// TestProvision_DirectGetsOff: every bucket is read from its stream leader
// (AllowDirect off: a replica cut off from the quorum cannot answer a Get
// with old data), on a fresh store and on one whose buckets nats.go created
// with direct gets (updated in place and logged); a Get still works.
func TestProvision_DirectGetsOff(t *testing.T) {
	srv := bustest.Start(t)
	js := testJS(t, srv.ClientURL())
	if _, err := js.CreateKeyValue(ctx10(t), jetstream.KeyValueConfig{Bucket: bus.BucketWorkers, History: 5,
		Description: "Stoker worker records", Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if !streamConfig(t, js, "KV_"+bus.BucketWorkers).AllowDirect {
		t.Fatal("nats.go created a bucket without direct gets: the premise of this test is gone")
	}
	var log bustest.Buffer
	st, err := bus.Provision(ctx10(t), js, bus.StoreConfig{}, zerolog.New(&log))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bus.Buckets() {
		if streamConfig(t, js, "KV_"+b).AllowDirect {
			t.Errorf("bucket %s allows direct gets", b)
		}
	}
	if !strings.Contains(log.String(), `"setting":"direct gets","was":"true","now":"false"`) {
		t.Errorf("the change was not logged:\n%s", log.String())
	}
	if _, err := bus.Create(ctx10(t), st.Workers, "w1", &schemas.Worker{ID: "w1", Cores: 1, MemoryMB: 1, State: schemas.WorkerAlive}); err != nil {
		t.Fatal(err)
	}
	if w, _, err := bus.Get[schemas.Worker](ctx10(t), st.Workers, "w1"); err != nil || w.ID != "w1" {
		t.Fatalf("get from the leader: %+v %v", w, err)
	}
}
