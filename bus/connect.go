package bus

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
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
	// embedded server: what `stoker up` does for its services. Such a
	// connection is a pipe inside the process: it is authenticated as any
	// other (its credential signs the server's nonce) but carries no TLS,
	// whatever CA says (nothing leaves the process for TLS to protect),
	// and its writes have no deadline (net.Pipe arms a timer for each
	// one; a pipe's reader is the server itself, which closes the pipe
	// when it goes).
	Server *Server
	// Retry keeps trying when the first connect fails (services and agents);
	// clients leave it false to fail fast with a clear error.
	Retry bool
	// Log receives disconnect and reconnect notices.
	Log *zerolog.Logger
	// ReconnectWait is the base wait between reconnect attempts. Default 250ms.
	ReconnectWait time.Duration
	// Creds is a .creds file (a user JWT and its seed), read again on every
	// reconnect so a rotated file takes effect. CredsData is the same held
	// in memory (`stoker up`'s own services). Neither: no credentials.
	Creds     string
	CredsData []byte
	// InboxPrefix overrides the inbox prefix. Default: the one the
	// credential's role is allowed to subscribe to (see bus/auth), else
	// NATS's _INBOX.
	InboxPrefix string
	// PingInterval and MaxPingsOutstanding decide how soon a dead link
	// (a half-open socket: a partition, a cable pulled) is noticed: after
	// about PingInterval×(MaxPingsOutstanding+1) without a PONG. Default 1s
	// and 2 for services and agents (Retry): noticed in about 3s, well inside
	// the worker timeout, instead of nats.go's 2m×2 or our old 5s×3 (~20s);
	// 5s and 3 for one-shot clients.
	PingInterval        time.Duration
	MaxPingsOutstanding int
	// CA is a PEM file of the certificate authority that signed the
	// server's certificate (TLS). Empty: the system's roots, plaintext URLs.
	// Not used in-process (Server).
	CA string
}

// DefaultPingInterval is ConnectOptions.PingInterval's default: 1s for a
// long-lived service or agent connection (retry), 5s for a client.
func DefaultPingInterval(retry bool) time.Duration {
	if retry {
		return time.Second
	}
	return 5 * time.Second
}

// RoleTag prefixes a Stoker user JWT's role in its tags (bus/auth mints
// them), so a client finds its inbox prefix from its own credential.
const RoleTag = "stoker-role:"

// InboxPrefix is the inbox prefix of user name in role: _INBOX_<role>_<name>,
// the only inbox that user may subscribe to. An agent trusts a command only
// if its reply subject starts with the scheduler's or recovery's prefix.
func InboxPrefix(role, name string) string { return "_INBOX_" + role + "_" + name }

// Identity is who a credential says it is (read without verifying the
// signature: the server does that).
type Identity struct {
	Role    string
	Name    string
	Expires time.Time // zero: never
}

// CredsIdentity reads the identity in a .creds file's user JWT.
func CredsIdentity(creds []byte) (Identity, error) {
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return Identity{}, fmt.Errorf("not a NATS credential: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return Identity{}, fmt.Errorf("not a NATS user credential: %w", err)
	}
	id := Identity{Name: uc.Name}
	for _, t := range uc.Tags {
		if v, ok := strings.CutPrefix(t, RoleTag); ok {
			id.Role = v
		}
	}
	if uc.Expires > 0 {
		id.Expires = time.Unix(uc.Expires, 0)
	}
	return id, nil
}

// ErrAuth marks a connection the server refused for its credentials.
var ErrAuth = errors.New("NATS refused the credentials")

// Connect dials NATS at urls (comma separated) and reconnects forever with
// backoff and jitter.
func Connect(urls string, o ConnectOptions) (*nats.Conn, error) {
	if o.ReconnectWait == 0 {
		o.ReconnectWait = 250 * time.Millisecond
	}
	if o.PingInterval == 0 {
		o.PingInterval = DefaultPingInterval(o.Retry)
	}
	if o.MaxPingsOutstanding == 0 {
		o.MaxPingsOutstanding = 3
		if o.Retry {
			o.MaxPingsOutstanding = 2
		}
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(o.ReconnectWait),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.Timeout(5 * time.Second),
		nats.PingInterval(o.PingInterval),
		nats.MaxPingsOutstanding(o.MaxPingsOutstanding),
		nats.ReconnectBufSize(8 << 20),
	}
	if o.Retry {
		// Keep trying after auth errors too (nats.go otherwise gives up
		// after the same one twice, SECURITY-NOTES trap 11): a service
		// waits for its credential to be fixed or the account pushed.
		opts = append(opts, nats.RetryOnFailedConnect(true), nats.IgnoreAuthErrorAbort())
	}
	credOpts, who, err := credentialOptions(o)
	if err != nil {
		return nil, err
	}
	opts = append(opts, credOpts...)
	var l zerolog.Logger = zerolog.Nop()
	if o.Log != nil {
		l = *o.Log
	}
	opts = append(opts,
		nats.ReconnectHandler(func(nc *nats.Conn) {
			l.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
			runReconnectHooks(nc)
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			forgetReconnectHooks(nc)
			connLogs.Delete(nc)
			permErrors.Delete(nc)
		}),
	)
	if o.Server != nil {
		opts = append(opts, nats.InProcessServer(o.Server.Server), nats.FlusherTimeout(0))
	}
	if o.Log != nil {
		opts = append(opts,
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					l.Warn().Err(err).Msg("disconnected from NATS")
				}
			}),
			nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
				notePermissionError(nc, err)
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
	if o.Log == nil {
		opts = append(opts, nats.ErrorHandler(func(nc *nats.Conn, _ *nats.Subscription, err error) {
			notePermissionError(nc, err)
		}))
	}
	nc, err := nats.Connect(urls, opts...)
	if err == nil && o.Log != nil {
		connLogs.Store(nc, l)
	}
	if err != nil {
		if isAuthError(err) {
			return nil, fmt.Errorf("%w: NATS at %s said %q to %s (pass --creds FILE or set STOKER_CREDS; `stoker up` prints the line to use)",
				ErrAuth, urls, strings.TrimPrefix(err.Error(), "nats: "), who)
		}
		if strings.Contains(err.Error(), "x509:") || strings.Contains(err.Error(), "tls:") {
			return nil, fmt.Errorf("NATS at %s: %w (pass --tls-ca FILE or set STOKER_TLS_CA: the ca.pem beside the credentials `stoker up` wrote)", urls, err)
		}
		if o.Server != nil {
			// Refused credentials end here too: over the unbuffered pipe
			// the server's -ERR and the client's PING wait for each other
			// until the connect deadline.
			return nil, fmt.Errorf("cannot connect to the in-process bus: %w", err)
		}
		return nil, fmt.Errorf("cannot reach the bus at %s: %w (is `stoker up` running? set --nats or STOKER_NATS_URL)", Redact(urls), err)
	}
	return nc, nil
}

// credentialOptions turns o's credential into nats options and says who
// connects (for error messages).
func credentialOptions(o ConnectOptions) ([]nats.Option, string, error) {
	var opts []nats.Option
	data := o.CredsData
	who := "a connection without credentials"
	if o.Creds != "" {
		b, err := os.ReadFile(o.Creds)
		if err != nil {
			return nil, "", fmt.Errorf("credentials: %w", err)
		}
		data = b
		opts = append(opts, nats.UserCredentials(o.Creds))
		who = o.Creds
	} else if len(data) > 0 {
		j, err := jwt.ParseDecoratedJWT(data)
		if err != nil {
			return nil, "", fmt.Errorf("credentials: %w", err)
		}
		kp, err := jwt.ParseDecoratedNKey(data)
		if err != nil {
			return nil, "", fmt.Errorf("credentials: %w", err)
		}
		opts = append(opts, nats.UserJWT(
			func() (string, error) { return j, nil },
			func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) }))
		who = "an in-memory credential"
	}
	inbox := o.InboxPrefix
	if len(data) > 0 {
		id, err := CredsIdentity(data)
		if err != nil {
			return nil, "", fmt.Errorf("credentials %s: %w", who, err)
		}
		if id.Role != "" {
			who = fmt.Sprintf("%s (%s %q)", who, id.Role, id.Name)
			if inbox == "" {
				inbox = InboxPrefix(id.Role, id.Name)
			}
		}
		if !id.Expires.IsZero() && time.Now().After(id.Expires) {
			return nil, "", fmt.Errorf("%w: %s expired at %s", ErrAuth, who, id.Expires.Format(time.RFC3339))
		}
	}
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	if o.CA != "" && o.Server == nil {
		opts = append(opts, nats.RootCAs(o.CA))
	}
	return opts, who, nil
}

func isAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) ||
		strings.Contains(strings.ToLower(err.Error()), "authorization violation")
}

// Permission violations arrive asynchronously (a denied publish is not an
// error for the publisher, SECURITY-NOTES trap 7): remember the last one
// per connection so a request that then times out can say why.
var permErrors sync.Map // *nats.Conn → permErr

type permErr struct {
	err error
	at  time.Time
}

func notePermissionError(nc *nats.Conn, err error) {
	if nc == nil || !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	permErrors.Store(nc, permErr{err, time.Now()})
	permWatches.Lock()
	defer permWatches.Unlock()
	for w := range permWatches.m {
		if w.nc == nc && strings.Contains(err.Error(), `"`+w.subject+`"`) {
			w.cancel(fmt.Errorf("%w: %s", ErrDenied, err))
		}
	}
}

// permWatches are requests in flight that end at once when the server
// reports their publish denied, instead of timing out.
var permWatches struct {
	sync.Mutex
	m map[*permWatch]struct{}
}

type permWatch struct {
	nc      *nats.Conn
	subject string
	cancel  context.CancelCauseFunc
}

// watchDenied returns a context cancelled (with an ErrDenied cause) when
// the server reports a publish to subject on nc denied, and its release.
func watchDenied(ctx context.Context, nc *nats.Conn, subject string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &permWatch{nc: nc, subject: subject, cancel: cancel}
	permWatches.Lock()
	if permWatches.m == nil {
		permWatches.m = map[*permWatch]struct{}{}
	}
	permWatches.m[w] = struct{}{}
	permWatches.Unlock()
	return ctx, func() {
		permWatches.Lock()
		delete(permWatches.m, w)
		permWatches.Unlock()
		cancel(nil)
	}
}

// PermissionError returns the last permission violation the server
// reported on nc for subject since t, or nil.
func PermissionError(nc *nats.Conn, subject string, since time.Time) error {
	v, ok := permErrors.Load(nc)
	if !ok {
		return nil
	}
	pe := v.(permErr)
	if pe.at.Before(since) || !strings.Contains(pe.err.Error(), `"`+subject+`"`) {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrDenied, pe.err)
}

// LastPermissionError returns the last permission violation the server
// reported on nc since t, whatever its subject, or nil.
func LastPermissionError(nc *nats.Conn, since time.Time) error {
	v, ok := permErrors.Load(nc)
	if !ok {
		return nil
	}
	pe := v.(permErr)
	if pe.at.Before(since) {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrDenied, pe.err)
}

// ErrDenied marks a request the caller's credential may not send.
var ErrDenied = errors.New("permission denied")

// Redact hides the passwords in a comma-separated list of NATS URLs, for
// messages and logs.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if u, err := url.Parse(p); err == nil && u.User != nil {
			p = u.Redacted()
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}
