package svc

import (
	"context"
	"sync"
	"time"
)

// Fresh shares one call of a read among the callers that want it at the
// same time, without giving any of them an answer older than its request:
// every caller gets the result of a call that began after it asked. A
// caller that arrives while a call is under way waits for the next one,
// which starts as soon as the current one ends and serves everyone who
// arrived meanwhile; so at most two calls are ever waited for, and at most
// one runs at a time however many callers there are.
//
// It is for reads whose answer must include the caller's own earlier
// writes (a stream's last sequence before reading an index fed by it)
// and that, asked by every request, would queue behind one another: at
// 10,000 agents registering at once, registration's four stream-info
// requests per registration went through the server's deprioritised
// JetStream info queue one by one and registrations waited past the
// agents' timeout.
//
// A call runs under base, bounded by timeout, never under a caller's
// context: a caller that gives up does not cancel the others' answer.
type Fresh[T any] struct {
	base    context.Context
	timeout time.Duration
	call    func(context.Context) (T, error)

	mu   sync.Mutex
	cur  *freshCall[T] // running; began before anyone arriving now asked
	next *freshCall[T] // starts when cur ends; callers arriving now wait for it
}

type freshCall[T any] struct {
	done chan struct{}
	v    T
	err  error
}

// NewFresh returns a Fresh whose calls run under base with timeout.
func NewFresh[T any](base context.Context, timeout time.Duration, call func(context.Context) (T, error)) *Fresh[T] {
	return &Fresh[T]{base: base, timeout: timeout, call: call}
}

// Get returns the result of a call that began after Get was called, or
// ctx's error if ctx ends first.
func (f *Fresh[T]) Get(ctx context.Context) (T, error) {
	f.mu.Lock()
	var c *freshCall[T]
	switch {
	case f.cur == nil:
		c = &freshCall[T]{done: make(chan struct{})}
		f.cur = c
		go f.run(c)
	case f.next == nil:
		c = &freshCall[T]{done: make(chan struct{})}
		f.next = c
	default:
		c = f.next
	}
	f.mu.Unlock()
	select {
	case <-c.done:
		return c.v, c.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// run makes call c, then the one callers queued meanwhile, if any.
func (f *Fresh[T]) run(c *freshCall[T]) {
	for c != nil {
		ctx, cancel := context.WithTimeout(f.base, f.timeout)
		c.v, c.err = f.call(ctx)
		cancel()
		close(c.done)
		f.mu.Lock()
		c, f.next = f.next, nil
		f.cur = c
		f.mu.Unlock()
	}
}
