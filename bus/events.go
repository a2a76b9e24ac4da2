package bus

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/schemas"
)

// Emit publishes a state-change event on stoker.events.<kind>.<id>. The
// KV write is the fact, the event is its history: Emit never blocks nor
// fails. The event is written to the stoker-events stream with an
// acknowledgement by the connection's publisher, which keeps what the
// stream did not store (no quorum, no connection) and writes it after the
// outage in the order published; past EventBufferLimit it drops the
// oldest, counts them and announces the count (EventKindPublisher).
// Kinds: worker, driver, app, executor, leader, cluster (and poisoned,
// from a Reporter).
//
// Events are JSON with a Content-Type header, like KV records, so
// `nats sub 'stoker.events.>'` and the stoker-events stream show them as
// they are; DecodeMsg reads them (and older msgpack ones) by that header.
func Emit(nc *nats.Conn, kind, id, state, message string) {
	EmitEpoch(nc, 0, kind, id, state, message)
}

// EmitEpoch is Emit for a publisher acting under a scheduler epoch.
func EmitEpoch(nc *nats.Conn, epoch uint64, kind, id, state, message string) {
	if nc == nil {
		return
	}
	m, err := eventMsg(kind, id, state, message, nc.Opts.Name, epoch)
	if err != nil {
		return
	}
	if p := publisherFor(nc); p != nil {
		p.add(m, time.Now())
	}
}

// eventMsg is the event message Emit publishes.
func eventMsg(kind, id, state, message, publisher string, epoch uint64) (*nats.Msg, error) {
	b, err := Encode(&schemas.Event{
		Kind: kind, ID: id, State: state, Message: message, At: time.Now().UTC(), Publisher: publisher, Epoch: epoch,
	}, JSON)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(EventSubject(kind, eventToken(id)))
	m.Header.Set(ContentType, ContentTypeJSON)
	m.Data = b
	return m, nil
}

// eventToken keeps an id usable as one subject token (executor keys have a dot).
func eventToken(id string) string {
	b := []byte(id)
	for i, c := range b {
		if c == '.' || c == '*' || c == '>' || c == ' ' {
			b[i] = '_'
		}
	}
	return string(b)
}
