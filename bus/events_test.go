package bus_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

// TestReadEvents_OrderedByPublisherTime: an event that reached the stream
// late (a publisher's buffer flushed after a reconnect) is read in the
// order of its publisher's clock, and every event names its publisher and,
// when it has one, its epoch.
func TestReadEvents_OrderedByPublisherTime(t *testing.T) {
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.ClientURL())
	bustest.Store(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := bustestJS(t, nc)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().UTC().Add(-time.Minute)
	// Stored in the order 2, 1 (event 1 arrived late), then 3 by Emit.
	for _, e := range []schemas.Event{
		{Kind: "app", ID: "a2", State: "RUNNING", At: base.Add(2 * time.Second), Publisher: "s1", Epoch: 7},
		{Kind: "app", ID: "a1", State: "WAITING", At: base.Add(time.Second), Publisher: "s1", Epoch: 7},
	} {
		b, err := bus.Encode(&e, bus.JSON)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(bus.EventSubject(e.Kind, e.ID))
		m.Header.Set(bus.ContentType, bus.ContentTypeJSON)
		m.Data = b
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	bus.EmitEpoch(nc, 8, "app", "a3", "FINISHED", "done")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var got []bus.StoredEvent
	bustest.Eventually(t, 5*time.Second, "three events", func() bool {
		got = nil
		err := bus.ReadEvents(ctx, nc, bus.EventQuery{Last: 10}, func(e bus.StoredEvent) error {
			got = append(got, e)
			return nil
		})
		return err == nil && len(got) == 3
	})
	for i, want := range []string{"a1", "a2", "a3"} {
		if got[i].ID != want {
			t.Fatalf("event %d is %s (seq %d), want %s: read in arrival order, not the publishers' time", i, got[i].ID, got[i].Seq, want)
		}
	}
	if got[2].Publisher != nc.Opts.Name || got[2].Epoch != 8 {
		t.Fatalf("emitted event names publisher %q epoch %d, want %q 8", got[2].Publisher, got[2].Epoch, nc.Opts.Name)
	}
}

func bustestJS(t *testing.T, nc *nats.Conn) (jetstream.JetStream, error) {
	t.Helper()
	return jetstream.New(nc)
}

// TestEmit_NoQuorum_KeptAndWrittenAfter (issue 16 item 11): events emitted
// while the events stream has no quorum (two of three nodes stopped) are
// kept by the publisher and written once the nodes are back, in the order
// they were published; none is lost.
func TestEmit_NoQuorum_KeptAndWrittenAfter(t *testing.T) {
	nodes, nc := eventsCluster(t)
	bus.Emit(nc, "app", "before", "RUNNING", "")
	waitEvents(t, nc, []string{"before"})

	stopTwo(t, nodes, nc)
	var during []string
	for i := range 5 {
		id := fmt.Sprintf("during-%d", i)
		during = append(during, id)
		bus.Emit(nc, "app", id, "RUNNING", "emitted without quorum")
		time.Sleep(300 * time.Millisecond)
	}
	bustest.StartNodes(t, nodes[1:]...)
	waitEvents(t, nc, append([]string{"before"}, during...))
}

// TestEmit_BufferFull_DropsOldestAndCounts: past its buffer a publisher
// drops the oldest kept events, counts them, and announces the count with
// a DROPPED event after the outage; the newest are written.
func TestEmit_BufferFull_DropsOldestAndCounts(t *testing.T) {
	nodes, nc := eventsCluster(t)
	bus.SetEventBuffer(nc, 3)
	before := bus.EventsDroppedTotal()
	stopTwo(t, nodes, nc)
	for i := range 5 {
		bus.Emit(nc, "app", fmt.Sprintf("e%d", i), "RUNNING", "")
		time.Sleep(100 * time.Millisecond)
	}
	if got := bus.EventsDroppedTotal() - before; got != 2 {
		t.Fatalf("dropped %d events, want 2 (5 emitted into a buffer of 3)", got)
	}
	bustest.StartNodes(t, nodes[1:]...)
	got := waitEvents(t, nc, []string{"e2", "e3", "e4", nc.Opts.Name})
	last := got[len(got)-1]
	if last.Kind != bus.EventKindPublisher || last.State != bus.EventsDropped || !strings.HasPrefix(last.Message, "2 events published between") {
		t.Fatalf("the notice is %+v, want a %s %s event saying 2 events were dropped", last.Event, bus.EventKindPublisher, bus.EventsDropped)
	}
}

// stopTwo stops nodes 2 and 3 and waits until the events stream has no
// leader: until then the lone leader may hold what it is sent and commit it
// once its peers are back; after, whatever is published is lost (nats-server
// steps a leader down after 10 s to 20 s without a quorum).
func stopTwo(t *testing.T, nodes []*bustest.Node, nc *nats.Conn) {
	t.Helper()
	for _, nd := range nodes[1:] {
		nd.Server.Server.Stop()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 60*time.Second, "the events stream without a leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, err := js.Stream(ctx, bus.StreamEvents)
		if err != nil {
			return true
		}
		info, err := s.Info(ctx)
		return err != nil || info.Cluster == nil || info.Cluster.Leader == ""
	})
}

// eventsCluster is a three-node bus with the store on three replicas and a
// named connection to its first node.
func eventsCluster(t *testing.T) ([]*bustest.Node, *nats.Conn) {
	t.Helper()
	nodes := bustest.StartCluster(t, 3)
	lg := zerolog.New(zerolog.NewTestWriter(t))
	nc, err := bus.Connect(nodes[0].ClientURL(), bus.ConnectOptions{Name: "publisher-1", Retry: true, ReconnectWait: 50 * time.Millisecond, Log: &lg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	bustest.StoreWith(t, nc, bus.StoreConfig{Replicas: 3})
	return nodes, nc
}

// waitEvents waits until the events stream holds exactly ids, in that
// order (the readers' order: the publishers' time), and returns them;
// optional ids may be there too.
func waitEvents(t *testing.T, nc *nats.Conn, ids []string, optional ...string) []bus.StoredEvent {
	t.Helper()
	var got []bus.StoredEvent
	var seen []string
	ok := false
	var lastErr error
	deadline := time.Now().Add(60 * time.Second)
	for !ok && time.Now().Before(deadline) {
		got, seen = nil, nil
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := bus.ReadEvents(ctx, nc, bus.EventQuery{Last: 100}, func(e bus.StoredEvent) error {
			if slices.Contains(optional, e.ID) {
				return nil
			}
			got = append(got, e)
			seen = append(seen, e.ID)
			return nil
		})
		cancel()
		lastErr = err
		ok = err == nil && slices.Equal(seen, ids)
		if !ok {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if !ok {
		t.Fatalf("the events stream holds %v (read error: %v), want %v", seen, lastErr, ids)
	}
	return got
}

// TestEmit_RefusedEventDroppedOthersWritten: an event the bus can never
// take (larger than its max payload) is dropped and counted, and the events
// after it are written rather than queued behind it forever.
func TestEmit_RefusedEventDroppedOthersWritten(t *testing.T) {
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.ClientURL())
	bustest.Store(t, nc)
	before := bus.EventsDroppedTotal()
	bus.Emit(nc, "app", "huge", "RUNNING", strings.Repeat("x", int(nc.MaxPayload())+1))
	bus.Emit(nc, "app", "after", "RUNNING", "")
	waitEvents(t, nc, []string{"after", nc.Opts.Name})
	if got := bus.EventsDroppedTotal() - before; got != 1 {
		t.Fatalf("dropped %d events, want 1", got)
	}
}

// TestEmit_FasterThanStream_NoneDropped: a publisher that emits faster
// than the stream acknowledges, with the stream healthy, is slowed to the
// stream's pace; it does not drop events (a 10,000-event buffer overflowed
// this way under stoker bench's 100,000 executors, with no outage at all).
func TestEmit_FasterThanStream_NoneDropped(t *testing.T) {
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.ClientURL())
	bustest.Store(t, nc)
	bus.SetEventBuffer(nc, 3)
	before := bus.EventsDroppedTotal()
	const n = 300
	var ids []string
	for i := range n {
		id := fmt.Sprintf("fast-%03d", i)
		ids = append(ids, id)
		bus.Emit(nc, "app", id, "RUNNING", "")
	}
	if got := bus.EventsDroppedTotal() - before; got != 0 {
		t.Fatalf("dropped %d of %d events with the stream up (buffer 3)", got, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen []string
	bustest.Eventually(t, 20*time.Second, "every event stored", func() bool {
		seen = seen[:0]
		err := bus.ReadEvents(ctx, nc, bus.EventQuery{Last: n + 10}, func(e bus.StoredEvent) error {
			seen = append(seen, e.ID)
			return nil
		})
		return err == nil && len(seen) == n
	})
	if !slices.Equal(seen, ids) {
		t.Fatalf("stored %d events, not the %d emitted in order", len(seen), n)
	}
}
