package main

// stoker events: the cluster's history from the stoker-events stream.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// eventKinds are the kinds bus.Emit is called with.
var eventKinds = []string{"worker", "driver", "app", "executor", "cluster", "leader"}

// eventsQuery says which events to print.
type eventsQuery struct {
	since  time.Duration // > 0: events newer than this
	last   int           // without since: the last N events (of the kind)
	kind   string        // "" for every kind
	follow bool
	json   bool
}

// eventLine is one event as `stoker events --json` prints it.
type eventLine struct {
	Seq uint64 `json:"seq"`
	schemas.Event
}

func init() {
	register(&command{
		name: "events", group: "Clients", summary: "print the cluster's history of state changes (stream stoker-events)",
		usage: "[--follow] [--since 10m | --last 100] [--kind K] [--json] [--nats URL]",
		details: `Every change of a worker, driver, app, executor, the cluster phase and the
scheduler lease is published on stoker.events.<kind>.<id> and kept in the
JetStream stream stoker-events (7 days or 256 MiB). Without --since the last
--last events are printed; --follow keeps printing new ones until Ctrl-C.
Lines are "time kind id state message"; --json prints one JSON object a line.`,
		examples: []string{
			"stoker events",
			"stoker events --since 1h --kind worker",
			"stoker events --follow --kind driver",
			"stoker events --since 10m --json | jq -c 'select(.state==\"FAILED\")'",
		},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url, asJSON := natsFlag(fs), jsonFlag(fs)
			follow := fs.Bool("follow", false, "keep printing new events until interrupted")
			since := fs.Duration("since", 0, "print events newer than this (e.g. 10m, 2h); default: the last --last events")
			last := fs.Int("last", 100, "without --since: how many of the latest events to print")
			kind := fs.String("kind", "", "only this kind: "+strings.Join(eventKinds, ", "))
			return func(ctx context.Context, args []string) error {
				if err := noArgs("events", args); err != nil {
					return err
				}
				q := eventsQuery{since: *since, last: *last, kind: *kind, follow: *follow, json: *asJSON}
				if err := q.validate(); err != nil {
					return err
				}
				return withClient(*url, func(nc *nats.Conn) error { return printEvents(ctx, nc, e.stdout, q) })
			}
		},
	})
}

func (q *eventsQuery) validate() error {
	if q.since < 0 {
		return usagef("--since must be positive, got %s", q.since)
	}
	if q.last <= 0 && q.since == 0 {
		return usagef("--last must be > 0, got %d", q.last)
	}
	if q.kind != "" && !slices.Contains(eventKinds, q.kind) {
		return usagef("--kind %q is not one of %s", q.kind, strings.Join(eventKinds, ", "))
	}
	return nil
}

// printEvents reads the stream with an ordered consumer: from a start time
// (--since) or so as to end with the last N events, then, with follow, on
// until ctx ends.
func printEvents(ctx context.Context, nc *nats.Conn, w io.Writer, q eventsQuery) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stream, err := js.Stream(sctx, bus.StreamEvents)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("no stream %s: is the cluster up? (`stoker up`, `stoker bus` or `stoker init` creates it)", bus.StreamEvents)
		}
		return fmt.Errorf("stream %s: %w", bus.StreamEvents, err)
	}
	filter := bus.Events
	if q.kind != "" {
		filter = bus.EventSubject(q.kind, ">")
	}
	// A short inactivity threshold: a reader killed without cleaning up
	// leaves its consumer on the server only briefly.
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: 10 * time.Second,
	}
	keep := 0 // > 0: hold the latest `keep` events until caught up
	switch {
	case q.since > 0:
		start := time.Now().Add(-q.since)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	case q.kind == "":
		// Every event matches: start exactly N before the end.
		st := stream.CachedInfo().State
		if st.LastSeq >= uint64(q.last) && st.LastSeq-uint64(q.last)+1 > st.FirstSeq {
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, st.LastSeq-uint64(q.last)+1
		}
		keep = q.last
	default:
		// Matches are spread over the stream: read them, keep the last N.
		keep = q.last
	}
	cons, err := stream.OrderedConsumer(sctx, cfg)
	if err != nil {
		return fmt.Errorf("consumer on %s: %w", bus.StreamEvents, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read %s: %w", bus.StreamEvents, err)
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

	var held []eventLine
	caughtUp := false
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		caughtUp = true
	}
	for !caughtUp || q.follow {
		var opts []jetstream.NextOpt
		if !q.follow {
			// Pending said there is more; never hang if it went away.
			opts = append(opts, jetstream.NextMaxWait(5*time.Second))
		}
		m, err := it.Next(opts...)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, nats.ErrTimeout) {
				break
			}
			return fmt.Errorf("read %s: %w", bus.StreamEvents, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			continue
		}
		var ev schemas.Event
		if err := bus.Decode(m.Data(), bus.FormatOf(m.Headers()), &ev); err != nil {
			continue // not an event Stoker wrote
		}
		line := eventLine{Seq: meta.Sequence.Stream, Event: ev}
		if caughtUp || keep == 0 {
			if err := writeEvent(w, line, q.json); err != nil {
				return err
			}
		} else {
			held = append(held, line)
			if len(held) > keep {
				held = held[len(held)-keep:]
			}
		}
		if !caughtUp && meta.NumPending == 0 {
			caughtUp = true
			for _, l := range held {
				if err := writeEvent(w, l, q.json); err != nil {
					return err
				}
			}
			held = nil
		}
	}
	for _, l := range held { // stopped before catching up
		if err := writeEvent(w, l, q.json); err != nil {
			return err
		}
	}
	return nil
}

// writeEvent prints one event: "time kind id state message", or a JSON line.
func writeEvent(w io.Writer, l eventLine, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(l)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintf(w, "%s  %-8s  %-28s  %-13s  %s\n",
		l.At.Local().Format("2006-01-02 15:04:05.000"), l.Kind, l.ID, l.State, l.Message)
	return err
}
