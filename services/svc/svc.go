// Package svc holds the small runtime every Stoker service and the agent
// share: a goroutine group that refuses work after shutdown, and logger
// construction. It knows nothing of NATS (that is package bus).
package svc

import (
	"context"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Version is Stoker's semantic version: every micro service announces it
// (`nats micro ls`) and `stoker version` prints it. Declared once, here.
const Version = "0.1.0"

// Group tracks goroutines: Go refuses after Stop; Stop cancels the group's
// context and waits; Stop is idempotent.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	wg     sync.WaitGroup
	done   bool
}

// NewGroup returns a group whose context is derived from parent.
func NewGroup(parent context.Context) *Group {
	ctx, cancel := context.WithCancel(parent)
	return &Group{ctx: ctx, cancel: cancel}
}

// Context is cancelled by Stop.
func (g *Group) Context() context.Context { return g.ctx }

// Go runs fn in a tracked goroutine; it returns false after Stop.
func (g *Group) Go(fn func(ctx context.Context)) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		fn(g.ctx)
	}()
	return true
}

// Stop cancels and waits for every goroutine started by Go.
func (g *Group) Stop() {
	g.mu.Lock()
	g.done = true
	g.mu.Unlock()
	g.cancel()
	g.wg.Wait()
}

// Log times keep milliseconds: zerolog's default field format is whole
// seconds, which the console writer then shows as "15:04:05.000".
func init() { zerolog.TimeFieldFormat = time.RFC3339Nano }

// NewLogger returns a console logger on a terminal and JSON otherwise.
// level is a zerolog level name ("debug", "info", "warn", ...).
func NewLogger(w io.Writer, level string) (zerolog.Logger, error) {
	lvl := zerolog.InfoLevel
	if level != "" {
		l, err := zerolog.ParseLevel(level)
		if err != nil {
			return zerolog.Nop(), err
		}
		lvl = l
	}
	out := w
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		out = zerolog.ConsoleWriter{Out: f, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger(), nil
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Backoff returns the wait before attempt n (0-based): base doubling up to
// max, with up to 50% random jitter so a fleet does not retry in step.
func Backoff(n int, base, max time.Duration, jitter func(int64) int64) time.Duration {
	d := base
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	if jitter != nil && d > 1 {
		d = d/2 + time.Duration(jitter(int64(d/2)+1))
	}
	return d
}

// Parallel runs fn(0..n-1), at most limit at once, and waits for all.
// The calls start in index order on at most limit goroutines, each taking
// the next index when its call returns: a goroutine per call grew a fresh
// stack for each (placing 100,000 executors on 1,000 simulated agents,
// stack copying fell from 4.7 to 2.8 % of the CPU; the rate within noise).
func Parallel(n, limit int, fn func(i int)) {
	workers := min(max(limit, 1), n)
	var wg sync.WaitGroup
	wg.Add(max(workers, 0))
	take := indexes(n, fn)
	for range workers {
		go func() {
			defer wg.Done()
			take()
		}()
	}
	wg.Wait()
}

// indexes returns a loop that calls fn with the next index not yet taken
// until all of 0..n-1 are: run on several goroutines, they share the work.
func indexes(n int, fn func(i int)) func() {
	var next atomic.Int64
	return func() {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			fn(i)
		}
	}
}
