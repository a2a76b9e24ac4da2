package bus

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// DefaultURL is where clients look when neither --nats nor STOKER_NATS_URL is set.
const DefaultURL = "nats://127.0.0.1:4222"

// ConnectOptions tunes Connect.
type ConnectOptions struct {
	// Name shows in `nats server report connections`.
	Name string
	// Server, when set, connects in-process (no TCP) to a co-located
	// embedded server: what `stoker up` does for its services.
	Server *Server
	// Retry keeps trying when the first connect fails (services and agents);
	// clients leave it false to fail fast with a clear error.
	Retry bool
	// Log receives disconnect and reconnect notices.
	Log *zerolog.Logger
	// ReconnectWait is the base wait between reconnect attempts. Default 250ms.
	ReconnectWait time.Duration
}

// Connect dials NATS at urls (comma separated) and reconnects forever with
// backoff and jitter.
func Connect(urls string, o ConnectOptions) (*nats.Conn, error) {
	if o.ReconnectWait == 0 {
		o.ReconnectWait = 250 * time.Millisecond
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(o.ReconnectWait),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.Timeout(5 * time.Second),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.ReconnectBufSize(8 << 20),
	}
	if o.Retry {
		opts = append(opts, nats.RetryOnFailedConnect(true))
	}
	var l zerolog.Logger = zerolog.Nop()
	if o.Log != nil {
		l = *o.Log
	}
	opts = append(opts,
		nats.ReconnectHandler(func(nc *nats.Conn) {
			l.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
			runReconnectHooks(nc)
		}),
		nats.ClosedHandler(forgetReconnectHooks),
	)
	if o.Server != nil {
		opts = append(opts, nats.InProcessServer(o.Server.Server))
	}
	if o.Log != nil {
		opts = append(opts,
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					l.Warn().Err(err).Msg("disconnected from NATS")
				}
			}),
			nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
				ev := l.Warn().Err(err)
				if sub != nil {
					ev = ev.Str("subject", sub.Subject)
				}
				ev.Msg("NATS async error")
			}),
		)
	}
	if urls == "" {
		urls = DefaultURL
	}
	urls = strings.Join(strings.Fields(strings.ReplaceAll(urls, ",", " ")), ",")
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		return nil, fmt.Errorf("cannot reach NATS at %s: %w (is `stoker up` running? set --nats or STOKER_NATS_URL)", urls, err)
	}
	return nc, nil
}
