package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNoQuorum marks a request that failed while the bus's JetStream could
// not answer: on a cluster, fewer than a majority of its nodes are up and
// connected (no meta leader), so no record can be read or written.
var ErrNoQuorum = errors.New("the bus has no quorum")

// Quorum is what a client can tell about the bus's JetStream.
type Quorum struct {
	// OK: JetStream answered an account info request.
	OK bool
	// Err is why it did not (a timeout, or JetStream's 503 "JetStream
	// system temporarily unavailable", error code 10008).
	Err error
	// Known is how many servers the client knows (its URLs and those the
	// cluster advertised); Reachable how many accept a TCP connection now.
	Known, Reachable int
}

// String is "1 of 3 nodes reachable".
func (q Quorum) String() string {
	if q.Known <= 1 {
		return fmt.Sprintf("%d node reachable; the others of its cluster are down or cut off", q.Reachable)
	}
	return fmt.Sprintf("%d of %d nodes reachable", q.Reachable, q.Known)
}

// CheckQuorum asks JetStream for the account's info ($JS.API.INFO, which
// needs the meta leader) and for the stoker-cluster bucket's stream info
// (which needs that stream's leader) within timeout and counts the known servers that
// accept a TCP connection.
func CheckQuorum(ctx context.Context, nc *nats.Conn, timeout time.Duration) Quorum {
	var q Quorum
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		js, err := jetstream.New(nc)
		if err == nil {
			_, err = js.AccountInfo(ctx)
		}
		if err == nil {
			err = storeQuorum(ctx, js)
		}
		q.OK, q.Err = err == nil, err
	}()
	servers := nc.Servers()
	q.Known = len(servers)
	reach := make(chan bool, len(servers))
	for _, s := range servers {
		go func() {
			u, err := url.Parse(s)
			if err != nil {
				reach <- false
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", u.Host)
			if err == nil {
				_ = c.Close()
			}
			reach <- err == nil
		}()
	}
	for range servers {
		if <-reach {
			q.Reachable++
		}
	}
	wg.Wait()
	return q
}

// storeQuorum checks every bucket's stream: it has a leader, and a
// majority of its replicas were heard from lately (a leader that lost its
// peers answers for several seconds before it steps down).
func storeQuorum(ctx context.Context, js jetstream.JetStream) error {
	for _, b := range Buckets() {
		s, err := js.Stream(ctx, kvStream(b))
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue // answered: no store yet is not a quorum problem
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", kvStream(b), err)
		}
		if err := StreamQuorum(s.CachedInfo()); err != nil {
			return err
		}
	}
	return nil
}

// ReplicaQuiet is how long a stream leader may not have heard from a
// replica before that replica no longer counts toward its majority. A raft
// leader beats every second but steps down only 10-20 s after losing its
// peers, answering from its own state meanwhile.
const ReplicaQuiet = 5 * time.Second

// StreamQuorum checks a stream's cluster info as its leader reported it: a
// majority of the replicas (the leader included) current and heard from
// within ReplicaQuiet (else ErrNoQuorum: what it answers may be stale). A
// stream on one server has nothing to check.
func StreamQuorum(si *jetstream.StreamInfo) error {
	if si == nil || si.Cluster == nil || len(si.Cluster.Replicas) == 0 {
		return nil
	}
	live := 1
	for _, r := range si.Cluster.Replicas {
		if r.Current && !r.Offline && r.Active < ReplicaQuiet {
			live++
		}
	}
	if size := 1 + len(si.Cluster.Replicas); 2*live <= size {
		return fmt.Errorf("%w: stream %s: %d of its %d replicas current", ErrNoQuorum, si.Config.Name, live, size)
	}
	return nil
}

// Unavailable reports whether err says JetStream could not answer: a
// timeout, no responders, or a 503 (10008: "JetStream system temporarily
// unavailable") as opposed to a refusal or a permission error.
func Unavailable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 || apiErr.ErrorCode == 10008
	}
	var be *Error
	if errors.As(err, &be) {
		return be.Code == CodeUnavailable || be.Code == CodeInternal
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

// ExplainQuorum returns err as is unless it looks like the bus could not
// answer and JetStream indeed does not; then it wraps ErrNoQuorum with what
// the client can tell ("the bus has no quorum (1 of 3 nodes reachable)").
func ExplainQuorum(ctx context.Context, nc *nats.Conn, err error) error {
	if err == nil || errors.Is(err, ErrNoQuorum) || errors.Is(err, ErrDenied) || !Unavailable(err) || nc == nil {
		return err
	}
	q := CheckQuorum(context.WithoutCancel(ctx), nc, 2*time.Second)
	if q.OK {
		return err
	}
	return fmt.Errorf("%w (%s): JetStream does not answer (%v); retry once a majority of the bus's nodes are up and connected (%v)",
		ErrNoQuorum, q, q.Err, err)
}
