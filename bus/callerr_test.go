package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

// A request that times out says why in words, not "context deadline
// exceeded", and still unwraps to it (issue 9 item 8: stoker run during an
// outage).
func TestCall_NoAnswerSaysWhy(t *testing.T) {
	s := bustest.Start(t)
	nc := bustest.Conn(t, s.URL())
	// A responder that never answers in time.
	sub, err := nc.Subscribe("stoker.test.slow", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = bus.Call(ctx, nc, "stoker.test.slow", &schemas.Ack{OK: true}, nil)
	if err == nil || !strings.Contains(err.Error(), "no answer within") || strings.Contains(err.Error(), "context deadline exceeded") ||
		!errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow service: %v", err)
	}

	// No bus at all (a connection that keeps retrying).
	down, err := bus.Connect("nats://127.0.0.1:1", bus.ConnectOptions{Name: "down", Retry: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(down.Close)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	err = bus.Call(ctx2, down, "stoker.test.slow", &schemas.Ack{OK: true}, nil)
	if err == nil || !strings.Contains(err.Error(), "not connected to the bus") {
		t.Errorf("no bus: %v", err)
	}
}
