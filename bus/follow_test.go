package bus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

func TestFollow_InitialValuesThenUpdates(t *testing.T) {
	s := bustest.Start(t)
	st := bustest.Store(t, bustest.Conn(t, s.URL()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range []string{"w1", "w2"} {
		if _, err := bus.Create(ctx, st.Workers, id, &schemas.Worker{ID: id, Cores: 1, MemoryMB: 1, State: schemas.WorkerAlive}); err != nil {
			t.Fatal(err)
		}
	}
	w, err := st.Workers.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	var got []string
	apply := func(e jetstream.KeyValueEntry) {
		got = append(got, e.Key()+map[bool]string{true: " deleted", false: ""}[bus.Deleted(e)])
	}
	// Stop at the end of the initial values.
	if err := bus.Follow(ctx, w, apply, func() bool { return false }); err != nil {
		t.Fatalf("initial values: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("initial values = %v, want w1 and w2", got)
	}
	if err := st.Workers.Delete(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	// Follow the delete, then end with ctx.
	fctx, fcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- bus.Follow(fctx, w, func(e jetstream.KeyValueEntry) { apply(e); fcancel() }, nil)
	}()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow = %v, want context.Canceled", err)
	}
	if got[2] != "w1 deleted" {
		t.Fatalf("update = %q, want w1 deleted", got[2])
	}
	// A stopped watcher ends Follow with ErrWatchClosed.
	_ = w.Stop()
	if err := bus.Follow(ctx, w, apply, nil); !errors.Is(err, bus.ErrWatchClosed) {
		t.Fatalf("Follow on a stopped watcher = %v, want ErrWatchClosed", err)
	}
}
