package bus_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

// SendKills: a worker's kills go as KillExecutors commands of at most
// MaxKillBatch, each kill's answer in its place (a refusal keeps its
// code); an agent that answers only cmd.kill gets them one by one.
func TestSendKills_BatchesAndFallsBack(t *testing.T) {
	s := bustest.Start(t)
	nc := bustest.Conn(t, s.URL())
	kills := make([]schemas.Kill, schemas.MaxKillBatch+6)
	for i := range kills {
		kills[i] = schemas.Kill{AppID: "app-1", ExecutorID: i, Epoch: 3}
	}
	var mu sync.Mutex
	var batches []int
	sub, err := nc.Subscribe(bus.WorkerCmdKillExecutorsSubject("w1"), func(m *nats.Msg) {
		var req schemas.KillExecutors
		if err := bus.Decode(m.Data, bus.FormatOf(m.Header), &req); err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		batches = append(batches, len(req.Kills))
		mu.Unlock()
		acks := schemas.KillAcks{Acks: make([]schemas.Ack, len(req.Kills))}
		for i, k := range req.Kills {
			acks.Acks[i] = schemas.Ack{OK: k.ExecutorID != 5}
			if k.ExecutorID == 5 {
				acks.Acks[i].Message, acks.Acks[i].Code = "stale command", bus.CodeConflict
			}
		}
		b, _ := bus.Encode(&acks, bus.Msgpack)
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	errs := bus.SendKills(ctx, nc, "w1", kills, 2*time.Second)
	mu.Lock()
	if len(batches) != 2 || batches[0] != schemas.MaxKillBatch || batches[1] != 6 {
		t.Fatalf("commands of %v kills, want %d and 6", batches, schemas.MaxKillBatch)
	}
	mu.Unlock()
	for i, err := range errs {
		var be *bus.Error
		switch {
		case i == 5 && (!errors.Is(err, bus.ErrRefused) || !errors.As(err, &be) || be.Code != bus.CodeConflict):
			t.Errorf("kill 5: %v, want refused with its 409", err)
		case i != 5 && err != nil:
			t.Errorf("kill %d: %v", i, err)
		}
	}
	_ = sub.Unsubscribe()

	// An agent from before the batch subject: one by one on cmd.kill.
	var singles int
	sub, err = nc.Subscribe(bus.WorkerCmdKillSubject("w2"), func(m *nats.Msg) {
		mu.Lock()
		singles++
		mu.Unlock()
		b, _ := bus.Encode(&schemas.Ack{OK: true}, bus.Msgpack)
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for i, err := range bus.SendKills(ctx, nc, "w2", kills[:3], 2*time.Second) {
		if err != nil {
			t.Errorf("single kill %d: %v", i, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if singles != 3 {
		t.Fatalf("%d single kills, want 3", singles)
	}
}
