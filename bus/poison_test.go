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

// Every kind of poisoned record is left out of a listing with its reason,
// the good ones next to it kept: a value that is not a record, a broken
// invariant (negative cores, unknown state, a key that is not its id, an
// executor key that does not parse) and, after listing, an executor
// holding resources on a worker with no record.
func TestListSkipping_PoisonedKinds(t *testing.T) {
	s := bustest.Start(t)
	st := bustest.Store(t, bustest.Conn(t, s.URL()))
	ctx := context.Background()
	raw := func(kv jetstream.KeyValue, key, v string) {
		t.Helper()
		if _, err := kv.Put(ctx, key, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	raw(st.Workers, "w1", `{"id":"w1","state":"ALIVE","cores":4,"memory_mb":1024}`)
	raw(st.Workers, "w-neg", `{"id":"w-neg","state":"ALIVE","cores":-5,"memory_mb":1024}`)
	raw(st.Workers, "w-zombie", `{"id":"w-zombie","state":"ZOMBIE","cores":4,"memory_mb":1024}`)
	raw(st.Workers, "w-other", `{"id":"w1","state":"ALIVE","cores":4,"memory_mb":1024}`)
	raw(st.Workers, "w-text", `hello`)
	raw(st.Executors, "app-1.0", `{"app_id":"app-1","id":0,"worker_id":"w1","state":"RUNNING","cores":1,"memory_mb":64}`)
	raw(st.Executors, "app-1.1", `{"app_id":"app-1","id":1,"worker_id":"w-ghost","state":"RUNNING","cores":1,"memory_mb":64}`)
	raw(st.Executors, "app-1.2", `{"app_id":"app-1","id":2,"worker_id":"w-ghost","state":"LOST","cores":1,"memory_mb":64}`)
	raw(st.Executors, "app-1", `{"app_id":"app-1","id":3,"worker_id":"w1","state":"RUNNING","cores":1,"memory_mb":64}`)

	why := map[string]error{}
	skip := func(p bus.Poison) { why[p.Bucket+"/"+p.Key] = p }
	workers, err := bus.ListSkipping[schemas.Worker](ctx, st.Workers, skip)
	if err != nil {
		t.Fatal(err)
	}
	execs, err := bus.ListSkipping[schemas.Executor](ctx, st.Executors, skip)
	if err != nil {
		t.Fatal(err)
	}
	execs = bus.DropUnplaced(bus.BucketExecutors, execs, bus.KnownWorkers(workers), skip)
	if len(workers) != 1 || workers[0].Key != "w1" {
		t.Fatalf("workers listed: %v, want only w1", workers)
	}
	if m := bus.Map(execs); len(m) != 2 || m["app-1.0"] == nil || m["app-1.2"] == nil {
		t.Fatalf("executors listed: %v, want app-1.0 and the ended app-1.2", m)
	}
	want := map[string]string{
		"stoker-workers/w-neg":     "cores must be > 0",
		"stoker-workers/w-zombie":  `"ZOMBIE"`,
		"stoker-workers/w-other":   `key "w-other" holds the record of "w1"`,
		"stoker-workers/w-text":    "", // a decoding error
		"stoker-executors/app-1.1": `worker "w-ghost", which has no record`,
		"stoker-executors/app-1":   "not <appid>.<execid>",
	}
	if len(why) != len(want) {
		t.Fatalf("skipped %v, want %d", why, len(want))
	}
	for k, text := range want {
		err := why[k]
		switch {
		case err == nil:
			t.Errorf("%s not skipped", k)
		case text == "" && bus.IsImpossible(err):
			t.Errorf("%s: %v, want a decoding error", k, err)
		case text != "" && (!bus.IsImpossible(err) || !strings.Contains(err.Error(), text)):
			t.Errorf("%s: %v, want an impossible record with %q", k, err, text)
		}
	}
	if _, err := bus.List[schemas.Worker](ctx, st.Workers); !errors.As(err, new(bus.Poison)) {
		t.Fatalf("List over poisoned records = %v, want a Poison error", err)
	}
}

// A Reporter reports a (bucket, key, revision) once; a new revision of the
// same key again. The events stream keeps one event per revision even when
// two services (two Reporters) report it.
func TestReporter_OncePerRevision(t *testing.T) {
	s := bustest.Start(t)
	nc := bustest.Conn(t, s.URL())
	bustest.Store(t, nc) // the events stream
	ctx := context.Background()
	var logs bustest.Buffer
	r1 := bus.NewReporter(nc, zerolog.New(&logs))
	r2 := bus.NewReporter(bustest.Conn(t, s.URL()), zerolog.Nop())
	p := bus.Poison{Bucket: bus.BucketApps, Key: "junk", Revision: 7, Err: errors.New("not a record")}
	for range 3 {
		r1.Report(p)
		r2.Report(p)
	}
	p2 := p
	p2.Revision = 8
	r1.Report(p2)
	if r1.Reported() != 2 || r2.Reported() != 1 {
		t.Fatalf("reported %d and %d, want 2 and 1", r1.Reported(), r2.Reported())
	}
	if n := strings.Count(logs.String(), "impossible record skipped"); n != 2 {
		t.Fatalf("%d warnings, want 2:\n%s", n, logs.String())
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var got []bus.StoredEvent
	bustest.Eventually(t, 5*time.Second, "two poisoned events stored", func() bool {
		got = nil
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		err := bus.ReadEvents(rctx, nc, bus.EventQuery{Last: 10, Kind: bus.EventKindPoisoned}, func(e bus.StoredEvent) error {
			got = append(got, e)
			return nil
		})
		return err == nil && len(got) >= 2
	})
	if len(got) != 2 || got[0].ID != "stoker-apps/junk" || got[0].State != "POISONED" ||
		!strings.Contains(got[0].Message, "revision 7") || !strings.Contains(got[1].Message, "revision 8") {
		t.Fatalf("events %+v, want one per revision", got)
	}
}
