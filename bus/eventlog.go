package bus

// Reading the cluster's history back from the stoker-events stream.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/schemas"
)

// EventKinds are the kinds Emit is called with.
var EventKinds = []string{"worker", "driver", "app", "executor", "cluster", "leader", "artifact", EventKindPoisoned, EventKindPublisher}

// EventQuery says which events ReadEvents delivers.
type EventQuery struct {
	// Since > 0: events newer than this. Otherwise the last Last events.
	Since time.Duration
	Last  int
	// Kind is one of EventKinds, or "" for every kind.
	Kind string
	// Follow keeps delivering new events until ctx ends.
	Follow bool
}

// Validate checks q. Each message starts with the field's name in lower
// case (the CLI prefixes its flags' "--").
func (q EventQuery) Validate() error {
	switch {
	case q.Since < 0:
		return fmt.Errorf("since must be positive, got %s", q.Since)
	case q.Last <= 0 && q.Since == 0:
		return fmt.Errorf("last must be > 0, got %d", q.Last)
	case q.Kind != "" && !slices.Contains(EventKinds, q.Kind):
		return fmt.Errorf("kind %q is not one of %s", q.Kind, strings.Join(EventKinds, ", "))
	}
	return nil
}

// StoredEvent is an event with its sequence in the stream.
type StoredEvent struct {
	Seq uint64 `json:"seq"`
	schemas.Event
}

// ReadEvents reads the events stream with an ordered consumer, from a start
// time (Since) or so as to end with the last Last events, and calls fn with
// each in order; with Follow it goes on until ctx ends. It returns nil when
// caught up (or, following, when ctx ends), or fn's first error.
func ReadEvents(ctx context.Context, nc *nats.Conn, q EventQuery, fn func(StoredEvent) error) error {
	if err := q.Validate(); err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stream, err := js.Stream(sctx, StreamEvents)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("no stream %s: is the cluster up? (`stoker up`, `stoker bus` or `stoker init` creates it)", StreamEvents)
		}
		return fmt.Errorf("stream %s: %w", StreamEvents, err)
	}
	filter := Events
	if q.Kind != "" {
		filter = EventSubject(q.Kind, ">")
	}
	// A short inactivity threshold: a reader killed without cleaning up
	// leaves its consumer on the server only briefly.
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: 10 * time.Second,
	}
	keep := 0 // > 0: hold the latest `keep` events until caught up
	switch {
	case q.Since > 0:
		start := time.Now().Add(-q.Since)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	case q.Kind == "":
		// Every event matches: start exactly N before the end.
		st := stream.CachedInfo().State
		if st.LastSeq >= uint64(q.Last) && st.LastSeq-uint64(q.Last)+1 > st.FirstSeq {
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, st.LastSeq-uint64(q.Last)+1
		}
		keep = q.Last
	default:
		// Matches are spread over the stream: read them, keep the last N.
		keep = q.Last
	}
	cons, err := stream.OrderedConsumer(sctx, cfg)
	if err != nil {
		return fmt.Errorf("consumer on %s: %w", StreamEvents, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read %s: %w", StreamEvents, err)
	}
	defer func() {
		it.Stop()
		// Remove the consumer now rather than after the inactivity threshold.
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = stream.DeleteConsumer(dctx, info.Name)
			cancel()
		}
	}()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()

	var held []StoredEvent
	flush := func() error {
		// A batch is ordered by its publishers' clocks: the stream's order
		// is arrival, and events buffered by a reconnecting publisher
		// arrive late.
		slices.SortStableFunc(held, func(a, b StoredEvent) int { return a.At.Compare(b.At) })
		for _, e := range held {
			if err := fn(e); err != nil {
				return err
			}
		}
		held = nil
		return nil
	}
	caughtUp := false
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		caughtUp = true
	}
	for !caughtUp || q.Follow {
		var opts []jetstream.NextOpt
		if !q.Follow {
			// Pending said there is more; never hang if it went away.
			opts = append(opts, jetstream.NextMaxWait(5*time.Second))
		}
		m, err := it.Next(opts...)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, nats.ErrTimeout) {
				break
			}
			return fmt.Errorf("read %s: %w", StreamEvents, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			continue
		}
		var ev schemas.Event
		if err := Decode(m.Data(), FormatOf(m.Headers()), &ev); err != nil {
			continue // not an event Stoker wrote
		}
		e := StoredEvent{Seq: meta.Sequence.Stream, Event: ev}
		if caughtUp {
			if err := fn(e); err != nil {
				return err
			}
		} else {
			held = append(held, e)
			if keep > 0 && len(held) > keep {
				held = held[len(held)-keep:]
			}
		}
		if !caughtUp && meta.NumPending == 0 {
			caughtUp = true
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush() // stopped before catching up
}
