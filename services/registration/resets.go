package registration

import "sync"

// resets joins the failure resets of one app into one write at a time: a
// caller finding a write for its app under way adds its executor id to
// the next write and waits; when a write ends, one of the callers waiting
// for the next makes it. CountRunning of the highest id does what
// CountRunning of each id in turn does (FailuresFrom becomes their
// maximum), so the joined write is the writes it replaces.
type resets struct {
	mu      sync.Mutex
	pending map[string]*resetBatch // app → the ids waiting for the next write
	writing map[string]bool        // app → a write is under way or handed on
}

type resetBatch struct {
	upTo int
	done chan struct{} // closed once written; err is then set
	turn chan struct{} // one waiter receives it: that caller writes
	err  error
}

// do returns once a write of CountRunning(n), n ≥ id, ended for app (made
// by write, in this call or another's), with that write's error.
func (r *resets) do(app string, id int, write func(upTo int) error) error {
	r.mu.Lock()
	if r.pending == nil {
		r.pending, r.writing = map[string]*resetBatch{}, map[string]bool{}
	}
	b := r.pending[app]
	if b == nil {
		b = &resetBatch{upTo: id, done: make(chan struct{}), turn: make(chan struct{}, 1)}
		r.pending[app] = b
	}
	b.upTo = max(b.upTo, id)
	if r.writing[app] {
		r.mu.Unlock()
		select {
		case <-b.done:
			return b.err
		case <-b.turn:
		}
		r.mu.Lock()
	}
	r.writing[app] = true
	delete(r.pending, app) // b: nobody else writes it, and later ids wait for the next
	upTo := b.upTo
	r.mu.Unlock()
	b.err = write(upTo)
	close(b.done)
	r.mu.Lock()
	if next := r.pending[app]; next != nil {
		next.turn <- struct{}{}
	} else {
		delete(r.writing, app)
	}
	r.mu.Unlock()
	return b.err
}
