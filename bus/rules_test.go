package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

func TestCallAck_RefusalIsAnError(t *testing.T) {
	s := bustest.Start(t)
	nc := bustest.Conn(t, s.URL())
	ctx := context.Background()
	answer := func(subject string, ack *schemas.Ack) {
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
			log := zerolog.Nop()
			bus.Serve(ctx, &log, nil, bus.FromMsg(m), func(context.Context, bus.Inbound, *schemas.ListRequest) (any, error) {
				return ack, nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	answer("t.yes", &schemas.Ack{OK: true, Message: "done"})
	answer("t.no", &schemas.Ack{OK: false, Message: "unknown executor app-1.0"})
	answer("t.mute", &schemas.Ack{OK: false})

	ack, err := bus.CallAck(ctx, nc, "t.yes", &schemas.ListRequest{})
	if err != nil || !ack.OK || ack.Message != "done" {
		t.Fatalf("accepted: %+v %v", ack, err)
	}
	ack, err = bus.CallAck(ctx, nc, "t.no", &schemas.ListRequest{})
	if !errors.Is(err, bus.ErrRefused) || !strings.Contains(err.Error(), "unknown executor app-1.0") {
		t.Fatalf("refused: want ErrRefused with the reason, got %v", err)
	}
	if ack == nil || ack.OK {
		t.Fatalf("refused: the Ack is returned too, got %+v", ack)
	}
	if _, err = bus.CallAck(ctx, nc, "t.mute", &schemas.ListRequest{}); !errors.Is(err, bus.ErrRefused) || !strings.Contains(err.Error(), "no reason given") {
		t.Fatalf("refused without a message: %v", err)
	}
	if _, err = bus.CallAck(ctx, nc, "t.nobody", &schemas.ListRequest{}); !errors.Is(err, nats.ErrNoResponders) || errors.Is(err, bus.ErrRefused) {
		t.Fatalf("no responder is not a refusal: %v", err)
	}
}

func TestMutateOrReplace_UndecodableCountsAsAbsent(t *testing.T) {
	s := bustest.Start(t)
	nc := bustest.Conn(t, s.URL())
	st := bustest.Store(t, nc)
	ctx := context.Background()
	if _, err := st.Cluster.Put(ctx, bus.KeyClusterState, []byte("not a record")); err != nil {
		t.Fatal(err)
	}
	write := func(cur *schemas.Cluster) (*schemas.Cluster, error) {
		if cur != nil {
			return nil, nil
		}
		return &schemas.Cluster{Epoch: 7, State: schemas.ClusterRecovering}, nil
	}
	if _, _, err := bus.Mutate(ctx, st.Cluster, bus.KeyClusterState, write); err == nil {
		t.Fatalf("Mutate over an undecodable record: want an error")
	}
	var bad []error
	got, _, err := bus.MutateOrReplace(ctx, st.Cluster, bus.KeyClusterState, func(err error) { bad = append(bad, err) }, write)
	if err != nil || got == nil || got.Epoch != 7 || len(bad) != 1 {
		t.Fatalf("MutateOrReplace: %+v %v (bad %v)", got, err, bad)
	}
	c, _, err := bus.Get[schemas.Cluster](ctx, st.Cluster, bus.KeyClusterState)
	if err != nil || c.Epoch != 7 {
		t.Fatalf("after replace: %+v %v", c, err)
	}
}

func TestListSkipping_LeavesBadRecordsOut(t *testing.T) {
	s := bustest.Start(t)
	nc := bustest.Conn(t, s.URL())
	st := bustest.Store(t, nc)
	ctx := context.Background()
	for _, id := range []string{"w1", "w2"} {
		if _, err := bus.Create(ctx, st.Workers, id, &schemas.Worker{ID: id, State: schemas.WorkerAlive, Cores: 2, MemoryMB: 512}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Workers.Put(ctx, "w3", []byte("{")); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.List[schemas.Worker](ctx, st.Workers); err == nil {
		t.Fatalf("List with a bad record: want an error")
	}
	var skipped []string
	es, err := bus.ListSkipping[schemas.Worker](ctx, st.Workers, func(p bus.Poison) { skipped = append(skipped, p.Key) })
	if err != nil || len(es) != 2 || fmt.Sprint(skipped) != "[w3]" {
		t.Fatalf("ListSkipping: %d records, skipped %v, %v", len(es), skipped, err)
	}
	if m := bus.Map(es); m["w1"] == nil || m["w2"] == nil || len(m) != 2 {
		t.Fatalf("Map: %v", m)
	}
}

func TestCreateNew_RetriesACollision(t *testing.T) {
	s := bustest.Start(t)
	nc := bustest.Conn(t, s.URL())
	st := bustest.Store(t, nc)
	ctx := context.Background()
	if _, err := bus.Create(ctx, st.Apps, "app-a", &schemas.App{ID: "app-a"}); err != nil {
		t.Fatal(err)
	}
	keys := []string{"app-a", "app-b"}
	i := 0
	newKey := func() string { k := keys[min(i, len(keys)-1)]; i++; return k }
	key, err := bus.CreateNew(ctx, st.Apps, 5, newKey, func(k string) any { return &schemas.App{ID: k} })
	if err != nil || key != "app-b" {
		t.Fatalf("CreateNew: %q %v", key, err)
	}
	i = 0
	keys = []string{"app-a"}
	if _, err := bus.CreateNew(ctx, st.Apps, 3, newKey, func(k string) any { return &schemas.App{ID: k} }); !bus.IsCASConflict(err) || i != 3 {
		t.Fatalf("every key taken: want a conflict after 3 tries, got %v after %d", err, i)
	}
}

func TestCheckSubjectID(t *testing.T) {
	for _, tc := range []struct {
		subject, noun, id string
		ok                bool
	}{
		{"stoker.worker.w1.register", "worker", "w1", true},
		{"stoker.worker.w1.register", "worker", "w2", false},
		{"stoker.app.app-1.heartbeat", "app", "app-1", true},
		{"stoker.app.app-1.heartbeat", "app", "app-2", false},
	} {
		err := bus.CheckSubjectID(bus.FromMsg(&nats.Msg{Subject: tc.subject}), tc.noun, tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("%s %s %s: %v", tc.subject, tc.noun, tc.id, err)
		}
		if err != nil && (bus.ErrorCode(err) != 400 || !strings.Contains(err.Error(), tc.noun+" id")) {
			t.Errorf("%s: want a 400 naming the %s id, got %v", tc.subject, tc.noun, err)
		}
	}
}
