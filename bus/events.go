package bus

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/schemas"
)

// Emit publishes a state-change event on stoker.events.<kind>.<id>. It is
// best effort: the KV write is the fact, the event is its history.
// Kinds: worker, driver, app, executor, leader, cluster.
func Emit(nc *nats.Conn, kind, id, state, message string) {
	if nc == nil {
		return
	}
	_ = Publish(nc, EventSubject(kind, eventToken(id)), &schemas.Event{
		Kind: kind, ID: id, State: state, Message: message, At: time.Now().UTC(),
	})
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
