package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Lanes runs a micro endpoint's requests on n goroutines instead of one,
// each request on the lane its subject hashes to: requests on one subject
// (stoker.worker.<wid>.state: one agent's reports) keep their order, while
// different agents' requests are served at once. A micro endpoint alone
// serves one request at a time, which made registration the fan-in
// bottleneck of every agent's registration and state reports (stoker
// bench: 400 agents took a minute to register, 3,200 executors starting at
// once needed 1,288 report retries). spawn starts each lane's goroutine
// (svc.Group.Go, so stopping the service waits for them); a lane ends when
// its context is done, and requests still queued then go unanswered (the
// requester retries, as after any timeout).
//
// A lane never touches the micro.Request micro handed in: micro reads that
// request's error after its handler returns (for `nats micro stats`), and
// the handler here returns as soon as the request is queued, so a lane
// answering through it raced with micro (the race detector caught it in
// CI). The lane gets a detached copy that answers through nc instead. The
// cost: micro stats count a lane endpoint's requests but not its errors,
// and its processing time is the time to queue; the service's own
// Counters (stats data) count the errors.
func Lanes(nc *nats.Conn, spawn func(func(context.Context)) bool, n int, h micro.Handler) micro.Handler {
	if n <= 1 {
		return h
	}
	seed := maphash.MakeSeed()
	lanes := make([]chan micro.Request, n)
	for i := range lanes {
		ch := make(chan micro.Request, 64)
		lanes[i] = ch
		spawn(func(ctx context.Context) {
			for {
				select {
				case r := <-ch:
					h.Handle(r)
				case <-ctx.Done():
					return
				}
			}
		})
	}
	return micro.HandlerFunc(func(r micro.Request) {
		lanes[maphash.String(seed, r.Subject())%uint64(n)] <- detach(nc, r)
	})
}

// detachedRequest is a micro.Request that owns copies of what it needs
// and answers by publishing on nc, the way micro's own request does.
type detachedRequest struct {
	nc             *nats.Conn
	subject, reply string
	data           []byte
	headers        micro.Headers
}

func detach(nc *nats.Conn, r micro.Request) *detachedRequest {
	return &detachedRequest{nc: nc, subject: r.Subject(), reply: r.Reply(), data: r.Data(), headers: r.Headers()}
}

func (r *detachedRequest) Data() []byte           { return r.data }
func (r *detachedRequest) Headers() micro.Headers { return r.headers }
func (r *detachedRequest) Subject() string        { return r.subject }
func (r *detachedRequest) Reply() string          { return r.reply }

func (r *detachedRequest) Respond(data []byte, opts ...micro.RespondOpt) error {
	return r.publish(&nats.Msg{Data: data}, opts)
}

func (r *detachedRequest) RespondJSON(v any, opts ...micro.RespondOpt) error {
	b, err := json.Marshal(v)
	if err != nil {
		return micro.ErrMarshalResponse
	}
	return r.Respond(b, opts...)
}

func (r *detachedRequest) Error(code, description string, data []byte, opts ...micro.RespondOpt) error {
	if code == "" {
		return fmt.Errorf("%w: error code", micro.ErrArgRequired)
	}
	if description == "" {
		return fmt.Errorf("%w: description", micro.ErrArgRequired)
	}
	m := &nats.Msg{Data: data, Header: nats.Header{
		micro.ErrorHeader:     []string{description},
		micro.ErrorCodeHeader: []string{code},
	}}
	return r.publish(m, opts)
}

func (r *detachedRequest) publish(m *nats.Msg, opts []micro.RespondOpt) error {
	for _, o := range opts {
		o(m)
	}
	if r.reply == "" {
		return nil
	}
	m.Subject = r.reply
	if err := r.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("%w: %s", micro.ErrRespond, err)
	}
	return nil
}
