package svc

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestGroup_StopCancelsWaitsAndRefuses(t *testing.T) {
	g := NewGroup(context.Background())
	var done atomic.Int32
	for i := 0; i < 3; i++ {
		if !g.Go(func(ctx context.Context) { <-ctx.Done(); done.Add(1) }) {
			t.Fatal("Go refused before Stop")
		}
	}
	g.Stop()
	if done.Load() != 3 {
		t.Fatalf("Stop returned with %d of 3 goroutines finished", done.Load())
	}
	if g.Go(func(context.Context) {}) {
		t.Fatal("Go accepted after Stop")
	}
	g.Stop() // idempotent
}

func TestBackoff_GrowsCapsAndJitters(t *testing.T) {
	base, max := 100*time.Millisecond, time.Second
	if d := Backoff(0, base, max, nil); d != base {
		t.Fatalf("attempt 0: %s", d)
	}
	if d := Backoff(3, base, max, nil); d != 800*time.Millisecond {
		t.Fatalf("attempt 3: %s", d)
	}
	if d := Backoff(30, base, max, nil); d != max {
		t.Fatalf("attempt 30: %s, want the cap", d)
	}
	half := func(n int64) int64 { return n - 1 }
	if d := Backoff(30, base, max, half); d < max/2 || d > max {
		t.Fatalf("jittered: %s outside [max/2, max]", d)
	}
}

func TestNewLogger_LevelAndJSON(t *testing.T) {
	var buf bytes.Buffer
	l, err := NewLogger(&buf, "warn")
	if err != nil {
		t.Fatal(err)
	}
	l.Info().Msg("hidden")
	l.Warn().Msg("shown")
	if bytes.Contains(buf.Bytes(), []byte("hidden")) || !bytes.Contains(buf.Bytes(), []byte(`"message":"shown"`)) {
		t.Fatalf("log output: %s", buf.String())
	}
	if _, err := NewLogger(&buf, "loud"); err == nil {
		t.Fatal("bad level accepted")
	}
}
