package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

func TestStore_Mutate_CompareAndSet(t *testing.T) {
	s := bustest.Start(t)
	nc := bustest.Conn(t, s.URL())
	st := bustest.Store(t, nc)
	ctx := context.Background()

	w, rev, err := bus.Mutate(ctx, st.Workers, "w1", func(cur *schemas.Worker) (*schemas.Worker, error) {
		if cur != nil {
			t.Fatalf("want no record, got %+v", cur)
		}
		return &schemas.Worker{ID: "w1", Cores: 4, MemoryMB: 1024, State: schemas.WorkerAlive}, nil
	})
	if err != nil || rev == 0 || w.ID != "w1" {
		t.Fatalf("create: %v rev=%d", err, rev)
	}
	// A stale Update loses.
	if _, err := bus.Update(ctx, st.Workers, "w1", w, rev+100); !bus.IsCASConflict(err) {
		t.Fatalf("stale update: want CAS conflict, got %v", err)
	}
	// A second Create loses.
	if _, err := bus.Create(ctx, st.Workers, "w1", w); !bus.IsCASConflict(err) {
		t.Fatalf("second create: want CAS conflict, got %v", err)
	}
	got, _, err := bus.Get[schemas.Worker](ctx, st.Workers, "w1")
	if err != nil || got.Cores != 4 || got.Type != schemas.TypeWorker {
		t.Fatalf("get: %+v %v", got, err)
	}
	if _, _, err := bus.Get[schemas.Worker](ctx, st.Workers, "nope"); !errors.Is(err, bus.ErrNotFound) {
		t.Fatalf("missing key: want ErrNotFound, got %v", err)
	}
	all, err := bus.List[schemas.Worker](ctx, st.Workers)
	if err != nil || len(all) != 1 {
		t.Fatalf("list: %v %d", err, len(all))
	}
	empty, err := bus.List[schemas.App](ctx, st.Apps)
	if err != nil || len(empty) != 0 {
		t.Fatalf("list empty bucket: %v %d", err, len(empty))
	}
}

func TestStore_LeaseBucket_ExpiryReachesWatchers(t *testing.T) {
	s := bustest.Start(t)
	nc := bustest.Conn(t, s.URL())
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	st, err := bus.Provision(ctx, js, bus.StoreConfig{LeaseTTL: time.Second}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.Leader.Watch(ctx, bus.KeyScheduler, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	rev, err := bus.Create(ctx, st.Leader, bus.KeyScheduler, &schemas.Lease{Holder: "a"})
	if err != nil {
		t.Fatal(err)
	}
	// Renew once with Update: the bucket TTL must still expire it.
	if _, err := bus.Update(ctx, st.Leader, bus.KeyScheduler, &schemas.Lease{Holder: "a", Epoch: rev}, rev); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-w.Updates():
			if e != nil && e.Operation() != jetstream.KeyValuePut {
				return // expiry arrived as a delete/purge marker
			}
		case <-deadline:
			t.Fatal("lease expiry never reached the watcher")
		}
	}
}

func TestServe_BadPayloads(t *testing.T) {
	s := bustest.Start(t)
	nc := bustest.Conn(t, s.URL())
	log := zerolog.Nop()
	var c bus.Counters
	sub, err := nc.Subscribe("t.hb", bus.MsgHandler(context.Background(), &log, &c,
		func(ctx context.Context, in bus.Inbound, req *schemas.Heartbeat) (any, error) {
			return &schemas.Ack{OK: true, Message: req.WorkerID}, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	cases := []struct {
		name string
		data []byte
		json bool
		code string
	}{
		{"garbage msgpack", []byte{0xc1, 0xff, 0x00}, false, "400"},
		{"garbage json", []byte("{not json"), true, "400"},
		{"empty", nil, false, "400"},
		{"invalid id", []byte(`{"worker_id":"a.b"}`), true, "400"},
		{"wrong type", []byte(`{"type":"io.stoker.v1.app","worker_id":"w1"}`), true, "400"},
		{"good json", []byte(`{"worker_id":"w1"}`), true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := &nats.Msg{Subject: "t.hb", Data: tc.data, Header: nats.Header{}}
			if tc.json {
				m.Header.Set(bus.ContentType, bus.ContentTypeJSON)
			}
			r, err := nc.RequestMsg(m, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Header.Get(bus.ErrorCodeHeader); got != tc.code {
				t.Fatalf("code %q, want %q (%s)", got, tc.code, r.Header.Get(bus.ErrorHeader))
			}
			if tc.code == "" && string(r.Data) != `{"type":"io.stoker.v1.ack","ok":true,"message":"w1"}` {
				t.Fatalf("json reply: %s", r.Data)
			}
		})
	}
	if c.BadInput.Load() != 5 {
		t.Fatalf("bad input counted %d, want 5", c.BadInput.Load())
	}
	// Still serving msgpack after all that.
	var ack schemas.Ack
	if err := bus.Call(context.Background(), nc, "t.hb", &schemas.Heartbeat{WorkerID: "w2"}, &ack); err != nil || ack.Message != "w2" {
		t.Fatalf("call after bad input: %v %+v", err, ack)
	}
}

func TestDecode_JSONWithoutHeaderHints(t *testing.T) {
	var hb schemas.Heartbeat
	err := bus.Decode([]byte(`{"worker_id":"w1"}`), bus.Msgpack, &hb)
	if err == nil || !errors.Is(err, bus.ErrDecode) || !strings.Contains(err.Error(), "Content-Type: application/json") {
		t.Fatalf("want a decode error with a Content-Type hint, got %v", err)
	}
}

func TestStartServer_PortInUse_FailsFast(t *testing.T) {
	s := bustest.Start(t)
	start := time.Now()
	_, err := bus.StartServer(bus.ServerConfig{Host: "127.0.0.1", Port: s.Port(), StoreDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "cannot listen") {
		t.Fatalf("second server on a used port: %v, want a listen error", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("took %s to report a used port", time.Since(start))
	}
}
