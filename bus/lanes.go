package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Lanes runs a micro endpoint's requests n at a time instead of one at a
// time: requests on one subject (stoker.worker.<wid>.state: one agent's
// reports) are handled in the order they came, one after the other, while
// requests on different subjects are handled at once, at most n together.
// A micro endpoint alone serves one request at a time, which made
// registration the bottleneck of every agent's registration and state
// reports (stoker bench: 400 agents took a minute to register, 3,200
// executors starting at once needed 1,288 report retries).
//
// Each subject with requests waiting has a goroutine of its own (spawn
// starts it: svc.Group.Go, so stopping the service waits for them), which
// takes a slot of n for each request. An earlier version hashed subjects
// onto n fixed lanes, so an agent whose large batch of reports was being
// handled held up every agent hashed to its lane (2,000 agents on 128
// lanes: reports waited past their 2 s timeout and were sent again,
// 22,521 times in one run). More than maxQueued requests waiting on one
// subject are answered 503 at once (one agent sends one request at a time;
// more is a flood). Requests still waiting when the service stops go
// unanswered (the requester retries, as after any timeout).
//
// A request that waited in its subject's queue longer than its requester
// waits for the answer (TimeoutHeader) is dropped unserved: the requester
// gave up and sends it again, so serving the old one only doubles the
// backlog (with 2,000 agents' reports, the duplicates queued until the
// answers came after the requesters' one-minute permission to be answered
// had expired). Only the time queued here counts: no clock is compared.
//
// A request is never answered through the micro.Request micro handed in:
// micro reads that request's error after its handler returns (for `nats
// micro stats`), and the handler here returns as soon as the request is
// queued, so answering through it raced with micro (the race detector
// caught it in CI). The handler gets a detached copy that answers through
// nc instead. The cost: micro stats count a lane endpoint's requests but
// not its errors, and its processing time is the time to queue; the
// service's own Counters (stats data) count the errors.
func Lanes(nc *nats.Conn, spawn func(func(context.Context)) bool, n int, h micro.Handler) micro.Handler {
	if n <= 1 {
		return h
	}
	var mu sync.Mutex
	waiting := map[string][]*detachedRequest{} // subjects with a goroutine, and what waits there
	slots := make(chan struct{}, n)
	return micro.HandlerFunc(func(r micro.Request) {
		d := detach(nc, r)
		mu.Lock()
		q, running := waiting[d.subject]
		if running {
			if len(q) >= maxQueued {
				mu.Unlock()
				_ = ReplyError(FromMicro(d), Errorf(CodeUnavailable, "%d requests already wait on %s", maxQueued, d.subject))
				return
			}
			waiting[d.subject] = append(q, d)
			mu.Unlock()
			return
		}
		waiting[d.subject] = []*detachedRequest{d}
		mu.Unlock()
		ok := spawn(func(ctx context.Context) {
			for {
				mu.Lock()
				q := waiting[d.subject]
				if len(q) == 0 {
					delete(waiting, d.subject)
					mu.Unlock()
					return
				}
				next := q[0]
				q[0] = nil
				waiting[d.subject] = q[1:]
				mu.Unlock()
				if next.gaveUp(time.Now()) {
					continue
				}
				select {
				case slots <- struct{}{}:
				case <-ctx.Done():
					mu.Lock()
					delete(waiting, d.subject)
					mu.Unlock()
					return
				}
				h.Handle(next)
				<-slots
			}
		})
		if !ok { // stopping: nothing will handle it
			mu.Lock()
			delete(waiting, d.subject)
			mu.Unlock()
		}
	})
}

// maxQueued bounds the requests waiting on one subject of Lanes.
const maxQueued = 64

// detachedRequest is a micro.Request that owns copies of what it needs
// and answers by publishing on nc, the way micro's own request does.
type detachedRequest struct {
	nc             *nats.Conn
	subject, reply string
	data           []byte
	headers        micro.Headers
	at             time.Time // when it was queued
}

func detach(nc *nats.Conn, r micro.Request) *detachedRequest {
	return &detachedRequest{nc: nc, subject: r.Subject(), reply: r.Reply(), data: r.Data(), headers: r.Headers(), at: time.Now()}
}

// gaveUp reports whether the request's requester stopped waiting by now:
// it waited in the queue longer than its TimeoutHeader.
func (r *detachedRequest) gaveUp(now time.Time) bool {
	v := r.headers.Get(TimeoutHeader)
	if v == "" {
		return false
	}
	d, err := time.ParseDuration(v)
	return err == nil && now.Sub(r.at) > d
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
