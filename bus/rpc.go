package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/schemas"
)

// Inbound is a request as a handler sees it, whether it came through a
// micro endpoint or a plain subscription.
type Inbound interface {
	Subject() string
	Data() []byte
	Header() nats.Header
	// Respond sends data with headers (nil if no reply subject was given).
	Respond(data []byte, h nats.Header) error
	HasReply() bool
}

type msgInbound struct{ m *nats.Msg }

// FromMsg adapts a core NATS message.
func FromMsg(m *nats.Msg) Inbound { return msgInbound{m} }

func (i msgInbound) Subject() string     { return i.m.Subject }
func (i msgInbound) Data() []byte        { return i.m.Data }
func (i msgInbound) Header() nats.Header { return i.m.Header }
func (i msgInbound) HasReply() bool      { return i.m.Reply != "" }
func (i msgInbound) Respond(data []byte, h nats.Header) error {
	if i.m.Reply == "" {
		return nil
	}
	return i.m.RespondMsg(&nats.Msg{Subject: i.m.Reply, Data: data, Header: h})
}

type microInbound struct{ r micro.Request }

// FromMicro adapts a micro request.
func FromMicro(r micro.Request) Inbound { return microInbound{r} }

func (i microInbound) Subject() string     { return i.r.Subject() }
func (i microInbound) Data() []byte        { return i.r.Data() }
func (i microInbound) Header() nats.Header { return nats.Header(i.r.Headers()) }
func (i microInbound) HasReply() bool      { return i.r.Reply() != "" }
func (i microInbound) Respond(data []byte, h nats.Header) error {
	if i.r.Reply() == "" {
		return nil
	}
	if code := h.Get(ErrorCodeHeader); code != "" {
		// Through micro's Error so `nats micro stats` counts it.
		hh := nats.Header{}
		for k, v := range h {
			if k != ErrorHeader && k != ErrorCodeHeader {
				hh[k] = v
			}
		}
		return i.r.Error(code, h.Get(ErrorHeader), data, micro.WithHeaders(micro.Headers(hh)))
	}
	return i.r.Respond(data, micro.WithHeaders(micro.Headers(h)))
}

// Reply encodes v in the request's format and sends it.
func Reply(in Inbound, v any) error {
	f := FormatOf(in.Header())
	b, err := Encode(v, f)
	if err != nil {
		return ReplyError(in, fmt.Errorf("encode reply: %w", err))
	}
	h := nats.Header{}
	if f == JSON {
		h.Set(ContentType, ContentTypeJSON)
	}
	return in.Respond(b, h)
}

// ReplyError answers with micro's error headers, the code chosen by ErrorCode.
func ReplyError(in Inbound, err error) error {
	h := nats.Header{}
	code := ErrorCode(err)
	desc := err.Error()
	var e *Error
	if errors.As(err, &e) {
		desc = e.Description
	}
	h.Set(ErrorHeader, desc)
	h.Set(ErrorCodeHeader, strconv.Itoa(code))
	if FormatOf(in.Header()) == JSON {
		h.Set(ContentType, ContentTypeJSON)
	}
	return in.Respond(nil, h)
}

// Counters counts what a handler saw; services expose them in logs and
// micro stats data.
type Counters struct {
	Requests atomic.Int64
	Errors   atomic.Int64
	BadInput atomic.Int64
}

// Handler is a typed request handler: it gets the decoded, validated
// request and returns the reply (or nil for no reply) or an error.
type Handler[Req any] func(ctx context.Context, in Inbound, req *Req) (any, error)

// Serve decodes in as Req (format from Content-Type), validates it, calls
// fn and replies. Bad input is answered with a 400 error, logged as a
// warning (rate limited) and counted; it never panics the service.
func Serve[Req any](ctx context.Context, log *zerolog.Logger, c *Counters, in Inbound, fn Handler[Req]) {
	if c != nil {
		c.Requests.Add(1)
	}
	req := new(Req)
	if err := Decode(in.Data(), FormatOf(in.Header()), req); err != nil {
		if c != nil {
			c.BadInput.Add(1)
		}
		warnLimited(log, in.Subject(), err)
		_ = ReplyError(in, err)
		return
	}
	resp, err := SafeCall(ctx, in, req, fn)
	if err != nil {
		if c != nil {
			c.Errors.Add(1)
		}
		if ErrorCode(err) >= 500 {
			log.Error().Err(err).Str("subject", in.Subject()).Msg("request failed")
		} else {
			log.Debug().Err(err).Str("subject", in.Subject()).Msg("request refused")
		}
		_ = ReplyError(in, err)
		return
	}
	if resp != nil {
		if err := Reply(in, resp); err != nil {
			log.Warn().Err(err).Str("subject", in.Subject()).Msg("cannot send reply")
		}
	}
}

// SafeCall calls fn, turning a panic into a 500 error: what Serve does
// with a request, for a caller that serves several in one (a batch).
func SafeCall[Req any](ctx context.Context, in Inbound, req *Req, fn Handler[Req]) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Errorf(CodeInternal, "internal error: %v", r)
		}
	}()
	return fn(ctx, in, req)
}

// MicroHandler adapts a typed handler to a micro endpoint.
func MicroHandler[Req any](ctx context.Context, log *zerolog.Logger, c *Counters, fn Handler[Req]) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) { Serve(ctx, log, c, FromMicro(r), fn) })
}

// MsgHandler adapts a typed handler to a core subscription.
func MsgHandler[Req any](ctx context.Context, log *zerolog.Logger, c *Counters, fn Handler[Req]) nats.MsgHandler {
	return func(m *nats.Msg) { Serve(ctx, log, c, FromMsg(m), fn) }
}

var lastWarn rateMap

// warnLimited logs a bad-input warning at most once a second per subject.
func warnLimited(log *zerolog.Logger, subject string, err error) {
	now := time.Now().UnixNano()
	if prev, ok := lastWarn.swapIfOlder(subject, now, int64(time.Second)); !ok {
		_ = prev
		return
	}
	log.Warn().Err(err).Str("subject", subject).Msg("bad request")
}

// Call sends req (msgpack) to subject and decodes the reply into resp
// (nil to ignore the body). An error reply becomes *Error; no responder
// becomes an error that says which service is missing.
func Call(ctx context.Context, nc *nats.Conn, subject string, req, resp any) error {
	b, err := Encode(req, Msgpack)
	if err != nil {
		return err
	}
	m := &nats.Msg{Subject: subject, Data: b, Header: nats.Header{}}
	m.Header.Set(ContentType, ContentTypeMsgpack)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	sent := time.Now()
	if dl, ok := ctx.Deadline(); ok {
		m.Header.Set(TimeoutHeader, dl.Sub(sent).Round(time.Millisecond).String())
	}
	wctx, release := watchDenied(ctx, nc, subject)
	defer release()
	r, err := nc.RequestMsgWithContext(wctx, m)
	if err != nil {
		if cause := context.Cause(wctx); errors.Is(cause, ErrDenied) {
			return fmt.Errorf("%s: %w", subject, cause)
		}
		if perr := PermissionError(nc, subject, sent); perr != nil {
			return fmt.Errorf("%s: %w", subject, perr)
		}
		if errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("%s: %w (is the service that answers it running?)", subject, err)
		}
		return explainCallError(nc, subject, sent, err)
	}
	if err := errorFromHeader(r.Header); err != nil {
		return err
	}
	if resp == nil {
		return nil
	}
	return Decode(r.Data, FormatOf(r.Header), resp)
}

// callError says in words why a request got no answer; it unwraps to the
// error nats.go gave (context.DeadlineExceeded, ...), for errors.Is.
type callError struct {
	msg string
	err error
}

func (e *callError) Error() string { return e.msg }
func (e *callError) Unwrap() error { return e.err }

// explainCallError turns "context deadline exceeded" (or what nats.go says
// of a server it never met, "headers not supported") into what happened:
// no bus, or no answer in time.
func explainCallError(nc *nats.Conn, subject string, sent time.Time, err error) error {
	switch {
	case !nc.IsConnected():
		return &callError{fmt.Sprintf("%s: not connected to the bus (it is down or unreachable; the connection keeps trying)", subject), err}
	case errors.Is(err, context.DeadlineExceeded):
		return &callError{fmt.Sprintf("%s: no answer within %s (the service that answers it is down, busy or recovering)",
			subject, time.Since(sent).Round(100*time.Millisecond)), err}
	}
	return fmt.Errorf("%s: %w", subject, err)
}

// ErrRefused is wrapped by CallAck when the peer answered with
// Ack{OK: false}: it understood the request and declined it.
var ErrRefused = errors.New("refused")

// CallAck is Call for requests answered with schemas.Ack: a refusal
// (OK false) is an error wrapping ErrRefused with the peer's message, so no
// caller can mistake it for a success. The Ack is returned either way when
// one was received.
func CallAck(ctx context.Context, nc *nats.Conn, subject string, req any) (*schemas.Ack, error) {
	var ack schemas.Ack
	if err := Call(ctx, nc, subject, req, &ack); err != nil {
		return nil, err
	}
	return &ack, Refusal(subject, &ack)
}

// Refusal is the error of an Ack with ok false answering a request on
// subject (wrapping ErrRefused, with the peer's reason), nil for one with
// ok true. A batch item's Ack with a code also wraps that *Error, as the
// command alone would have been answered.
func Refusal(subject string, ack *schemas.Ack) error {
	if ack.OK {
		return nil
	}
	msg := ack.Message
	if msg == "" {
		msg = "no reason given"
	}
	if ack.Code != 0 {
		return fmt.Errorf("%s: %w: %w", subject, ErrRefused, &Error{Code: ack.Code, Description: msg})
	}
	return fmt.Errorf("%s: %w: %s", subject, ErrRefused, msg)
}

// Publish encodes v as msgpack and publishes it (fire and forget).
func Publish(nc *nats.Conn, subject string, v any) error {
	b, err := Encode(v, Msgpack)
	if err != nil {
		return err
	}
	return nc.Publish(subject, b)
}

// PublishRequest publishes v with a reply subject (heartbeats).
func PublishRequest(nc *nats.Conn, subject, reply string, v any) error {
	b, err := Encode(v, Msgpack)
	if err != nil {
		return err
	}
	return nc.PublishRequest(subject, reply, b)
}

// DecodeMsg decodes a message that is not a request (a published event or
// a reply read from a subscription).
func DecodeMsg(m *nats.Msg, v any) error {
	if err := errorFromHeader(m.Header); err != nil {
		return err
	}
	return Decode(m.Data, FormatOf(m.Header), v)
}
