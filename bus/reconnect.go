package bus

import (
	"sync"

	"github.com/nats-io/nats.go"
)

// Connections made by Connect run these callbacks after every reconnect.
// A bus that restarted on an empty store (memory storage, a lost volume)
// has no buckets: Provision registers itself here so the store's owner puts
// them back, instead of every request failing until someone restarts it.
var reconnectHooks struct {
	sync.Mutex
	m map[*nats.Conn]map[string]func()
}

// OnReconnect runs fn (in its own goroutine) after each reconnect of nc.
// A second registration under the same name replaces the first.
func OnReconnect(nc *nats.Conn, name string, fn func()) {
	reconnectHooks.Lock()
	defer reconnectHooks.Unlock()
	if reconnectHooks.m == nil {
		reconnectHooks.m = map[*nats.Conn]map[string]func(){}
	}
	if reconnectHooks.m[nc] == nil {
		reconnectHooks.m[nc] = map[string]func(){}
	}
	reconnectHooks.m[nc][name] = fn
}

func runReconnectHooks(nc *nats.Conn) {
	reconnectHooks.Lock()
	var fns []func()
	for _, fn := range reconnectHooks.m[nc] {
		fns = append(fns, fn)
	}
	reconnectHooks.Unlock()
	for _, fn := range fns {
		go fn()
	}
}

func forgetReconnectHooks(nc *nats.Conn) {
	reconnectHooks.Lock()
	delete(reconnectHooks.m, nc)
	reconnectHooks.Unlock()
}
