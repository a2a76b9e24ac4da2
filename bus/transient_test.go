package bus

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestTransient(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{context.Canceled, false},
		{ErrNotFound, false},
		{jetstream.ErrKeyExists, false},
		{context.DeadlineExceeded, true},
		{fmt.Errorf("update: %w", nats.ErrTimeout), true},
		{nats.ErrNoResponders, true},
		{&jetstream.APIError{Code: 500, Description: "raft: not leader"}, true},
		{&jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}, true},
		{&jetstream.APIError{Code: 400, Description: "bad request"}, false},
	}
	for _, c := range cases {
		if got := Transient(c.err); got != c.want {
			t.Errorf("Transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestRetryTransient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n := 0
	err := RetryTransient(ctx, time.Second, func(context.Context) error {
		n++
		if n < 3 {
			return &jetstream.APIError{Code: 500}
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("err %v after %d attempts, want nil after 3", err, n)
	}
	n = 0
	decision := errors.New("refused")
	if err := RetryTransient(ctx, time.Second, func(context.Context) error { n++; return decision }); !errors.Is(err, decision) || n != 1 {
		t.Fatalf("a decision: err %v after %d attempts, want it after 1", err, n)
	}
	short, cancel2 := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel2()
	if err := RetryTransient(short, 0, func(context.Context) error { return nats.ErrTimeout }); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("until ctx ends: err %v, want the last transient error", err)
	}
}
