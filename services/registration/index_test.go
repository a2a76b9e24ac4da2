package registration

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// entry is one watched KV entry, as a watch delivers it.
type entry struct {
	key  string
	val  []byte
	rev  uint64
	op   jetstream.KeyValueOp
	from string
}

func (e entry) Bucket() string                  { return e.from }
func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return e.val }
func (e entry) Revision() uint64                { return e.rev }
func (e entry) Created() time.Time              { return time.Time{} }
func (e entry) Delta() uint64                   { return 0 }
func (e entry) Operation() jetstream.KeyValueOp { return e.op }

func watched(t *testing.T, rec *schemas.Executor, rev uint64) entry {
	t.Helper()
	b, err := bus.EncodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	return entry{key: rec.Key(), val: b, rev: rev, op: jetstream.KeyValuePut, from: bus.BucketExecutors}
}

// TestIndex_OwnWriteNotDecodedAgain: a record registration wrote is in the
// index at once, and its watch's copy of that revision is not decoded (a
// value that would not even decode is taken for the one written); an older
// revision the watch brings after it changes nothing, a newer one replaces
// it, and requests still sync on the watch alone.
func TestIndex_OwnWriteNotDecodedAgain(t *testing.T) {
	poison := bus.NewReporter(nil, zerolog.Nop())
	x := newIndex(nil, zerolog.Nop(), poison)
	launching := &schemas.Executor{AppID: "app-1", ID: 0, WorkerID: "w1", Cores: 1, MemoryMB: 64, State: schemas.ExecutorLaunching}
	key := launching.Key()

	// The scheduler's create, by the watch.
	x.apply(bus.BucketExecutors, watched(t, launching, 10))
	// This service writes RUNNING at revision 12 (11 is another key)...
	running := *launching
	running.State = schemas.ExecutorRunning
	x.wrote(bus.BucketExecutors, key, &running, 12)
	if got, rev := x.executor("app-1", key); got == nil || got.State != schemas.ExecutorRunning || rev != 12 {
		t.Fatalf("after the write the index holds %+v at %d, want RUNNING at 12", got, rev)
	}
	if len(x.holdExec["w1"]) != 1 || x.nExec != 1 {
		t.Fatalf("holds %d on w1, %d executors; want 1 and 1", len(x.holdExec["w1"]), x.nExec)
	}
	// ...and the watch brings revision 12: not decoded.
	x.apply(bus.BucketExecutors, entry{key: key, val: []byte("{not json"), rev: 12, op: jetstream.KeyValuePut, from: bus.BucketExecutors})
	if n := poison.Reported(); n != 0 {
		t.Fatalf("the watch's copy of the service's own write was decoded: %d poisoned", n)
	}
	if got, _ := x.executor("app-1", key); got == nil || got.State != schemas.ExecutorRunning {
		t.Fatalf("index holds %+v, want the RUNNING record written", got)
	}
	if x.seen[bus.BucketExecutors] != 12 {
		t.Fatalf("seen %d, want the watch's 12", x.seen[bus.BucketExecutors])
	}
	// A write known already, or older, changes nothing.
	stale := *launching
	x.wrote(bus.BucketExecutors, key, &stale, 12)
	x.wrote(bus.BucketExecutors, key, &stale, 11)
	if got, _ := x.executor("app-1", key); got.State != schemas.ExecutorRunning {
		t.Fatalf("a stale write replaced the record: %s", got.State)
	}
	// What the watch brings later replaces it, decoded as ever.
	exited := running
	exited.State = schemas.ExecutorExited
	x.apply(bus.BucketExecutors, watched(t, &exited, 13))
	if got, rev := x.executor("app-1", key); got.State != schemas.ExecutorExited || rev != 13 || len(x.holdExec["w1"]) != 0 {
		t.Fatalf("after the watch's 13: %s at %d, %d held on w1; want EXITED at 13, none held", got.State, rev, len(x.holdExec["w1"]))
	}
	// The watch ahead of the write's answer: the write is older, ignored.
	x.apply(bus.BucketExecutors, entry{key: key, rev: 14, op: jetstream.KeyValueDelete, from: bus.BucketExecutors})
	x.wrote(bus.BucketExecutors, key, &running, 13)
	if got, _ := x.executor("app-1", key); got != nil {
		t.Fatalf("a write older than the delete brought the record back: %+v", got)
	}
	// A garbage value at a revision the index never held is poison, as before.
	x.apply(bus.BucketExecutors, entry{key: key, val: []byte("{not json"), rev: 15, op: jetstream.KeyValuePut, from: bus.BucketExecutors})
	if poison.Reported() != 1 {
		t.Fatalf("undecodable revision 15 not reported: %d", poison.Reported())
	}
}
