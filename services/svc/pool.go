package svc

import (
	"context"
	"sync"
)

// Pool runs work on goroutines that live as long as their group. A
// goroutine started per piece of work grows a fresh stack for each
// (registration's state reports, eight goroutines a batch: 7 % of its CPU
// went to stack growth at 1,000 agents); a pool's keep theirs.
type Pool struct {
	tasks chan func()
	done  <-chan struct{}
}

// NewPool starts size goroutines in g; they stop with it.
func NewPool(g *Group, size int) *Pool {
	p := &Pool{tasks: make(chan func()), done: g.Context().Done()}
	for range max(size, 1) {
		g.Go(func(ctx context.Context) {
			for {
				select {
				case <-ctx.Done():
					return
				case f := <-p.tasks:
					f()
				}
			}
		})
	}
	return p
}

// Parallel is svc.Parallel on the pool: fn(0..n-1), at most limit at
// once, and it waits for all. It waits for idle goroutines of the pool
// (the pool's size bounds the work in flight across callers); once the
// group has stopped it runs on goroutines of its own, so it always
// returns.
func (p *Pool) Parallel(n, limit int, fn func(i int)) {
	workers := min(max(limit, 1), n)
	if workers <= 0 {
		return
	}
	var wg sync.WaitGroup
	wg.Add(workers)
	take := indexes(n, fn)
	run := func() {
		defer wg.Done()
		take()
	}
	for range workers {
		select {
		case p.tasks <- run:
		case <-p.done:
			go run()
		}
	}
	wg.Wait()
}
