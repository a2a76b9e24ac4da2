package bus

// Events survive a bus without quorum: each connection's events go through
// one publisher that writes them to the stoker-events stream with an
// acknowledgement, keeps those the stream did not acknowledge (bounded),
// and writes them again, in the order they were published, once it can.

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"
)

// EventBufferLimit is how many unacknowledged events one connection keeps
// while the events stream cannot store them (no quorum, no connection);
// past it the oldest are dropped and counted. About 300 bytes each: 10,000
// hold a minute of a busy scheduler's history in ~3 MB.
const EventBufferLimit = 10000

// EventKindPublisher is the kind of the event a publisher emits after an
// outage in which it had to drop events: id = the publisher, state
// EventsDropped, the message says how many and over which time.
const (
	EventKindPublisher = "publisher"
	EventsDropped      = "DROPPED"
)

// eventsDroppedTotal counts, for this process, the events dropped because
// the buffer was full.
var eventsDroppedTotal atomic.Uint64

// EventsDroppedTotal is how many events this process's publishers have dropped
// since it started (each drop is also logged and announced after the
// outage as a DROPPED event).
func EventsDroppedTotal() uint64 { return eventsDroppedTotal.Load() }

// Timings of a publisher: how long it waits for the stream's
// acknowledgement, and its backoff between attempts during an outage.
const (
	eventAckWait    = 3 * time.Second
	eventRetryFirst = 250 * time.Millisecond
	eventRetryMax   = 2 * time.Second
	eventBatch      = 256
)

var publishers sync.Map // *nats.Conn → *eventPublisher

// connLogs holds the logger each Connect was given, for what bus runs on
// that connection's behalf (the event publisher).
var connLogs sync.Map // *nats.Conn → zerolog.Logger

type queuedEvent struct {
	seq uint64
	id  string // Nats-Msg-Id: the stream drops a copy written twice within its duplicate window
	m   *nats.Msg
	at  time.Time
}

// eventPublisher writes one connection's events to the stream.
type eventPublisher struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	log   zerolog.Logger
	limit int
	wake  chan struct{}
	done  chan struct{}

	mu      sync.Mutex
	queue   []queuedEvent // not acknowledged yet, oldest first
	outage  bool          // the stream stopped acknowledging (run's view)
	room    chan struct{} // closed when the queue shrinks or an outage starts
	seq     uint64        // of the last queued event
	dropped uint64        // since the last DROPPED notice
	first   time.Time     // publisher time of the first dropped one
	last    time.Time     // and of the last
}

// publisherFor is nc's publisher, started on first use.
func publisherFor(nc *nats.Conn) *eventPublisher {
	if p, ok := publishers.Load(nc); ok {
		return p.(*eventPublisher)
	}
	p, err := newEventPublisher(nc, EventBufferLimit)
	if err != nil {
		return nil
	}
	if old, loaded := publishers.LoadOrStore(nc, p); loaded {
		return old.(*eventPublisher)
	}
	go p.run()
	return p
}

func newEventPublisher(nc *nats.Conn, limit int) (*eventPublisher, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(eventAckWait))
	if err != nil {
		return nil, err
	}
	p := &eventPublisher{nc: nc, js: js, log: zerolog.Nop(), limit: limit, wake: make(chan struct{}, 1), done: make(chan struct{})}
	if l, ok := connLogs.Load(nc); ok {
		p.log = l.(zerolog.Logger)
	}
	p.log = p.log.With().Str("component", "events").Logger()
	return p, nil
}

// SetEventBuffer sets how many events nc's publisher keeps during an
// outage (default EventBufferLimit).
func SetEventBuffer(nc *nats.Conn, limit int) {
	if p := publisherFor(nc); p != nil {
		p.mu.Lock()
		p.limit = max(limit, 1)
		p.mu.Unlock()
	}
}

// add queues m (published at at). With the buffer full it first waits
// while the stream is only slow (it acknowledges what it is sent, and no
// outage is known), at most eventAckWait without progress: a publisher
// faster than the stream is slowed to its pace rather than losing events.
// During an outage, or past that wait, it drops the oldest past the limit.
func (p *eventPublisher) add(m *nats.Msg, at time.Time) {
	p.enqueue(m, at, true)
}

// enqueue is add; wait false never waits for room (run's own notices:
// only run makes room).
func (p *eventPublisher) enqueue(m *nats.Msg, at time.Time, wait bool) {
	p.mu.Lock()
	if wait && len(p.queue) >= p.limit && !p.outage {
		p.waitRoomLocked()
	}
	p.seq++
	id := m.Header.Get(nats.MsgIdHdr) // a publisher's own (poisoned records: one event per record revision)
	if id == "" {
		id = nuid.Next()
	}
	p.queue = append(p.queue, queuedEvent{seq: p.seq, id: id, m: m, at: at})
	if over := len(p.queue) - p.limit; over > 0 {
		for _, e := range p.queue[:over] {
			if p.dropped == 0 {
				p.first = e.at
			}
			p.dropped++
			p.last = e.at
		}
		if p.dropped == uint64(over) {
			p.log.Warn().Int("buffer", p.limit).Msg("events buffer full: dropping the oldest kept events (counted, announced after the outage)")
		}
		eventsDroppedTotal.Add(uint64(over))
		// Re-slice rather than copy: a full buffer drops one event per add,
		// and copying the whole buffer each time made every add under load
		// cost the buffer's size (a 480 KB copy and as much garbage). The
		// dropped messages are cleared so the array does not keep them;
		// append moves what is left once the array's end is reached.
		clear(p.queue[:over])
		p.queue = p.queue[over:]
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// waitRoomLocked waits, p.mu held, until the queue is below the limit, an
// outage starts, or eventAckWait passes without the queue shrinking.
func (p *eventPublisher) waitRoomLocked() {
	timer := time.NewTimer(eventAckWait)
	defer timer.Stop()
	for len(p.queue) >= p.limit && !p.outage && !p.nc.IsClosed() {
		if p.room == nil {
			p.room = make(chan struct{})
		}
		room := p.room
		p.mu.Unlock()
		select {
		case <-room:
			p.mu.Lock()
			timer.Reset(eventAckWait) // Go 1.23+: no stale tick to drain
		case <-timer.C:
			p.mu.Lock()
			return
		case <-p.done:
			p.mu.Lock()
			return
		}
	}
}

// roomLocked wakes the adds waiting for room (p.mu held).
func (p *eventPublisher) roomLocked() {
	if p.room != nil {
		close(p.room)
		p.room = nil
	}
}

// run writes queued events until nc closes: in order, a batch at a time;
// during an outage it tries the oldest alone, with backoff, and resumes
// batches once the stream acknowledges it.
func (p *eventPublisher) run() {
	defer close(p.done)
	defer publishers.Delete(p.nc)
	closed := p.nc.StatusChanged(nats.CLOSED)
	defer p.nc.RemoveStatusListener(closed)
	if p.nc.IsClosed() {
		return
	}
	backoff := time.Duration(0)
	var outageSince time.Time
	for {
		if backoff > 0 {
			select {
			case <-closed:
				return
			case <-time.After(backoff):
			}
		}
		p.mu.Lock()
		n := min(len(p.queue), eventBatch)
		if backoff > 0 {
			n = min(n, 1)
		}
		batch := append([]queuedEvent(nil), p.queue[:n]...)
		p.mu.Unlock()
		if len(batch) == 0 {
			select {
			case <-closed:
				return
			case <-p.wake:
				continue
			}
		}
		acked, err := p.write(batch, closed)
		if acked > 0 {
			p.mu.Lock()
			upto := batch[acked-1].seq
			i := 0
			for i < len(p.queue) && p.queue[i].seq <= upto {
				i++
			}
			p.queue = p.queue[i:]
			p.roomLocked()
			p.mu.Unlock()
		}
		if acked == len(batch) {
			p.mu.Lock()
			p.outage = false
			p.mu.Unlock()
			p.healed(outageSince)
			outageSince = time.Time{}
			backoff = 0
			continue
		}
		if p.nc.IsClosed() {
			return
		}
		if apiErr := (*jetstream.APIError)(nil); errors.Is(err, nats.ErrMaxPayload) || (errors.As(err, &apiErr) && apiErr.Code != 503) {
			// This one event cannot be stored (larger than the server takes,
			// or the stream answered and refused it): no retry changes that,
			// and the events behind it must not wait on it.
			p.refused(batch[acked], err)
			continue
		}
		if outageSince.IsZero() {
			outageSince = time.Now()
			p.mu.Lock()
			held := len(p.queue)
			p.outage = true
			p.roomLocked()
			p.mu.Unlock()
			p.log.Warn().Err(err).Int("held", held).Msg("the events stream does not store events; keeping them to write after the outage")
		}
		backoff = min(max(2*backoff, eventRetryFirst), eventRetryMax)
	}
}

// write publishes batch and returns how many of its first events the
// stream acknowledged, and the first error.
func (p *eventPublisher) write(batch []queuedEvent, closed chan nats.Status) (int, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(batch))
	var sendErr error
	for _, e := range batch {
		f, err := p.js.PublishMsgAsync(e.m, jetstream.WithMsgID(e.id))
		if err != nil {
			sendErr = err
			break
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return i, err
		case <-closed:
			return i, nats.ErrConnectionClosed
		}
	}
	return len(futures), sendErr
}

// refused drops e, which the stream refused, and counts it as dropped.
func (p *eventPublisher) refused(e queuedEvent, err error) {
	p.mu.Lock()
	if len(p.queue) > 0 && p.queue[0].seq == e.seq {
		p.queue = p.queue[1:]
		p.roomLocked()
		if p.dropped == 0 {
			p.first = e.at
		}
		p.dropped++
		p.last = e.at
		eventsDroppedTotal.Add(1)
	}
	p.mu.Unlock()
	p.log.Warn().Err(err).Str("subject", e.m.Subject).Msg("the events stream refused an event; dropped (counted)")
}

// healed logs the end of an outage (since: its start, zero if none was
// noticed) and announces what was dropped.
func (p *eventPublisher) healed(since time.Time) {
	p.mu.Lock()
	dropped, first, last, limit := p.dropped, p.first, p.last, p.limit
	p.dropped = 0
	p.mu.Unlock()
	if since.IsZero() && dropped == 0 {
		return
	}
	ev := p.log.Info()
	if !since.IsZero() {
		ev = ev.Dur("outage", time.Since(since).Round(time.Millisecond))
	}
	if dropped == 0 {
		ev.Msg("the events stream stores events again; every kept event written")
		return
	}
	ev.Uint64("dropped", dropped).Msg("the events stream stores events again; events were dropped (buffer full)")
	name := p.nc.Opts.Name
	if name == "" {
		name = "unnamed"
	}
	msg := fmt.Sprintf("%d events published between %s and %s were dropped unacknowledged (lost unless a first attempt was stored): the events stream could not store them and the buffer holds %d",
		dropped, first.Format(time.RFC3339Nano), last.Format(time.RFC3339Nano), limit)
	if m, err := eventMsg(EventKindPublisher, name, EventsDropped, msg, p.nc.Opts.Name, 0); err == nil {
		m.Header.Set("Stoker-Dropped", strconv.FormatUint(dropped, 10))
		p.enqueue(m, time.Now(), false)
	}
}
