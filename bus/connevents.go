package bus

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ConnRef names one NATS connection: the id of the server it is connected
// to and the client id that server gave it. Client ids are unique per
// server run, and a server's id is fresh at each start, so the pair never
// names two connections.
type ConnRef struct {
	Server string
	Client uint64
}

// Zero reports a reference that names nothing (not connected, or a
// record written by an older version).
func (r ConnRef) Zero() bool { return r.Server == "" || r.Client == 0 }

// Ref is nc's current connection, or the zero ConnRef while disconnected.
func Ref(nc *nats.Conn) ConnRef {
	if nc == nil || !nc.IsConnected() {
		return ConnRef{}
	}
	cid, err := nc.GetClientID()
	if err != nil {
		return ConnRef{}
	}
	return ConnRef{Server: nc.ConnectedServerId(), Client: cid}
}

// Closed is one connection of the STOKER account that the server saw close
// (a process that died, a client that disconnected or reconnects).
type Closed struct {
	Conn ConnRef
	// User is the user's name in its JWT (worker id, app id, service
	// instance) and Role its Stoker role: both signed, unlike the
	// connection name the client chooses.
	User, Role string
	Reason     string
	// At is when this process received the event.
	At time.Time
}

// ParseClosed decodes the server's DISCONNECT advisory.
func ParseClosed(data []byte, at time.Time) (Closed, error) {
	var ev server.DisconnectEventMsg
	if err := json.Unmarshal(data, &ev); err != nil {
		return Closed{}, err
	}
	c := Closed{Conn: ConnRef{Server: ev.Server.ID, Client: ev.Client.ID}, Reason: ev.Reason, At: at}
	// The user JWT the server accepted at connect (the name the client
	// chose is not to be trusted).
	if ev.Client.Jwt != "" {
		if uc, err := jwt.DecodeUserClaims(ev.Client.Jwt); err == nil {
			c.User = uc.Name
		}
	}
	for _, t := range ev.Client.Tags {
		if v, ok := strings.CutPrefix(t, RoleTag); ok {
			c.Role = v
		}
	}
	return c, nil
}

// OnClosed calls fn for every connection the server reports closed (see
// ConnClosed). fn runs on the subscription's goroutine: keep it short.
// Where the bus does not forward these events the subscription simply
// stays silent, and callers rely on beats and timeouts as before.
func OnClosed(nc *nats.Conn, fn func(Closed)) (*nats.Subscription, error) {
	return nc.Subscribe(ConnClosed, func(m *nats.Msg) {
		c, err := ParseClosed(m.Data, time.Now())
		if err != nil || c.Conn.Zero() {
			return
		}
		fn(c)
	})
}
