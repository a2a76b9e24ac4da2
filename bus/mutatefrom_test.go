package bus_test

import (
	"context"
	"testing"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

// TestMutateFrom_TrustsAHintOnlyWhenItsWriteSucceeds: a current hint is
// written without a read; a stale hint (an older revision, or a value on
// which fn changes nothing) falls back to reading the record, so fn always
// decides on the latest value.
func TestMutateFrom_TrustsAHintOnlyWhenItsWriteSucceeds(t *testing.T) {
	s := bustest.Start(t)
	st := bustest.Store(t, bustest.Conn(t, s.URL()))
	ctx := context.Background()
	w := schemas.Worker{ID: "w1", Cores: 1, MemoryMB: 1, State: schemas.WorkerAlive}
	rev1, err := bus.Create(ctx, st.Workers, "w1", &w)
	if err != nil {
		t.Fatal(err)
	}
	var seen []int
	grow := func(cur *schemas.Worker) (*schemas.Worker, error) {
		seen = append(seen, cur.Cores)
		n := *cur
		n.Cores++
		return &n, nil
	}
	// Current hint: written from it (fn ran once, on the hint).
	got, rev2, err := bus.MutateFrom(ctx, st.Workers, "w1", &w, rev1, grow)
	if err != nil || got.Cores != 2 || rev2 <= rev1 || len(seen) != 1 {
		t.Fatalf("current hint: %+v rev %d err %v fn saw %v, want 2 cores written once", got, rev2, err, seen)
	}
	// Stale hint (rev1, 1 core): its write is refused, the record (2 cores)
	// is read and fn decides on it.
	seen = nil
	got, _, err = bus.MutateFrom(ctx, st.Workers, "w1", &w, rev1, grow)
	if err != nil || got.Cores != 3 || len(seen) != 2 || seen[1] != 2 {
		t.Fatalf("stale hint: %+v err %v fn saw %v, want 3 cores decided on the stored 2", got, err, seen)
	}
	// A hint on which fn writes nothing is not trusted: the record decides.
	seen = nil
	onlyFrom := func(cur *schemas.Worker) (*schemas.Worker, error) {
		seen = append(seen, cur.Cores)
		if cur.Cores != 3 {
			return nil, nil
		}
		n := *cur
		n.State = schemas.WorkerDead
		return &n, nil
	}
	got, _, err = bus.MutateFrom(ctx, st.Workers, "w1", &w, rev1, onlyFrom)
	if err != nil || got == nil || got.State != schemas.WorkerDead || len(seen) != 2 {
		t.Fatalf("no-op hint: %+v err %v fn saw %v, want DEAD written after reading", got, err, seen)
	}
	// No hint: Mutate.
	got, _, err = bus.MutateFrom(ctx, st.Workers, "w1", nil, 0, grow)
	if err != nil || got.Cores != 4 {
		t.Fatalf("no hint: %+v err %v, want 4 cores", got, err)
	}
}
