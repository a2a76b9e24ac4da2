package bus_test

import (
	"context"
	"testing"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

func TestMutateIf_WritesOnlyWhatStillApplies(t *testing.T) {
	s := bustest.Start(t)
	st := bustest.Store(t, bustest.Conn(t, s.URL()))
	ctx := context.Background()
	toDead := func(w *schemas.Worker) bool {
		if w.State != schemas.WorkerAlive {
			return false
		}
		w.State = schemas.WorkerDead
		return true
	}
	if v, wrote, err := bus.MutateIf(ctx, st.Workers, "w1", toDead); err != nil || wrote || v != nil {
		t.Fatalf("absent record: v=%+v wrote=%v err=%v, want nothing written", v, wrote, err)
	}
	if _, err := bus.Create(ctx, st.Workers, "w1", &schemas.Worker{ID: "w1", Cores: 1, MemoryMB: 1, State: schemas.WorkerAlive}); err != nil {
		t.Fatal(err)
	}
	v, wrote, err := bus.MutateIf(ctx, st.Workers, "w1", toDead)
	if err != nil || !wrote || v.State != schemas.WorkerDead {
		t.Fatalf("applies: v=%+v wrote=%v err=%v, want DEAD written", v, wrote, err)
	}
	v, wrote, err = bus.MutateIf(ctx, st.Workers, "w1", toDead)
	if err != nil || wrote || v.State != schemas.WorkerDead {
		t.Fatalf("moved on: v=%+v wrote=%v err=%v, want the current record, nothing written", v, wrote, err)
	}
	got, _, err := bus.Get[schemas.Worker](ctx, st.Workers, "w1")
	if err != nil || got.State != schemas.WorkerDead {
		t.Fatalf("stored %+v %v", got, err)
	}
}
