package bus_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/services/svc"
)

// TestLanes_AnswersErrorsAndKeepsOrderPerSubject serves a lane endpoint
// with many requesters at once, half of them answered with an error, under
// the race detector: a lane used to answer through micro's own request,
// which micro reads after its handler returns (a data race CI caught in
// TestService_BadPayloads). Each requester checks its answer, and the
// requests on one subject must reach the handler in the order sent.
func TestLanes_AnswersErrorsAndKeepsOrderPerSubject(t *testing.T) {

	var mu sync.Mutex
	seen := map[string][]int{}
	h := micro.HandlerFunc(func(r micro.Request) {
		n, _ := strconv.Atoi(string(r.Data()))
		mu.Lock()
		seen[r.Subject()] = append(seen[r.Subject()], n)
		mu.Unlock()
		if n%2 == 1 {
			_ = r.Error("409", fmt.Sprintf("odd %d", n), nil)
			return
		}
		_ = r.Respond([]byte("ok "+r.Subject()), micro.WithHeaders(micro.Headers{"X-N": []string{strconv.Itoa(n)}}))
	})
	url := serveLanes(t, 4, h)

	cli := bustest.Conn(t, url)
	// Alone on the bus first: with no other message between micro's read
	// and the lane's answer, nothing orders the two, and the race
	// detector sees a lane that answers through micro's request.
	for n := range 6 {
		resp, err := cli.Request("lanes.alone", []byte(strconv.Itoa(n)), 5*time.Second)
		if err != nil {
			t.Fatalf("alone #%d: %v", n, err)
		}
		if n%2 == 1 && resp.Header.Get(micro.ErrorCodeHeader) != "409" {
			t.Fatalf("alone #%d: error headers %v", n, resp.Header)
		}
	}

	const subjects, per = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, subjects*per)
	for i := range subjects {
		subj := fmt.Sprintf("lanes.s%d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// In order on one subject: each request waits for its answer.
			for n := range per {
				resp, err := cli.RequestMsg(&nats.Msg{Subject: subj, Data: []byte(strconv.Itoa(n))}, 5*time.Second)
				if err != nil {
					errs <- fmt.Errorf("%s #%d: %w", subj, n, err)
					return
				}
				if n%2 == 1 {
					if got := resp.Header.Get(micro.ErrorCodeHeader); got != "409" || resp.Header.Get(micro.ErrorHeader) != fmt.Sprintf("odd %d", n) {
						errs <- fmt.Errorf("%s #%d: error headers %v", subj, n, resp.Header)
					}
					continue
				}
				if string(resp.Data) != "ok "+subj || resp.Header.Get("X-N") != strconv.Itoa(n) || resp.Header.Get(micro.ErrorCodeHeader) != "" {
					errs <- fmt.Errorf("%s #%d: answer %q headers %v", subj, n, resp.Data, resp.Header)
				}
			}
		}()
	}
	// A burst without waiting: the order on one subject still holds.
	burst := "lanes.burst"
	inbox := nats.NewInbox()
	sub, err := cli.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	for n := range per {
		if err := cli.PublishMsg(&nats.Msg{Subject: burst, Reply: inbox, Data: []byte(strconv.Itoa(2 * n))}); err != nil {
			t.Fatal(err)
		}
	}
	for range per {
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("burst answer: %v", err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for subj, ns := range seen {
		for i, n := range ns {
			want := i
			if subj == burst {
				want = 2 * i
			}
			if n != want {
				t.Fatalf("%s: handler saw %v, want requests in the order sent", subj, ns)
			}
		}
	}
	if len(seen) != subjects+2 {
		t.Fatalf("handler saw %d subjects, want %d", len(seen), subjects+2)
	}
}

// A subject whose request takes long holds up only its own later
// requests: every other subject is answered meanwhile (subjects hashed
// onto fixed lanes waited behind it), and past the queue bound a flood on
// the busy subject is answered 503 at once.
func TestLanes_ABusySubjectHoldsUpOnlyItself(t *testing.T) {
	release, held := make(chan struct{}), make(chan struct{}, 100)
	h := micro.HandlerFunc(func(r micro.Request) {
		if r.Subject() == "lanes.busy" {
			held <- struct{}{}
			<-release
		}
		_ = r.Respond([]byte("ok"))
	})
	url := serveLanes(t, 2, h)
	cli := bustest.Conn(t, url)
	inbox := nats.NewInbox()
	busy, err := cli.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	// One request handled (held), then 64 waiting, one over the bound.
	for n := range 66 {
		if err := cli.PublishMsg(&nats.Msg{Subject: "lanes.busy", Reply: inbox, Data: []byte(strconv.Itoa(n))}); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			select {
			case <-held:
			case <-time.After(5 * time.Second):
				t.Fatal("the first busy request never reached the handler")
			}
		}
	}
	over, err := busy.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("the request over the bound: %v", err)
	}
	if got := over.Header.Get(micro.ErrorCodeHeader); got != "503" {
		t.Fatalf("over the bound: code %q, want 503", got)
	}
	for i := range 32 {
		subj := fmt.Sprintf("lanes.other%d", i)
		resp, err := cli.Request(subj, nil, 5*time.Second)
		if err != nil || string(resp.Data) != "ok" {
			t.Fatalf("%s while lanes.busy is held: %v %q", subj, err, resp.Data)
		}
	}
	close(release)
	for n := range 65 {
		if n > 0 {
			<-held
		}
		resp, err := busy.NextMsg(5 * time.Second)
		if err != nil || string(resp.Data) != "ok" {
			t.Fatalf("busy answer %d after release: %v", n, err)
		}
	}
}

// A request that waited in the queue longer than its requester waits
// (bus.TimeoutHeader) is dropped unserved; one without the header, or
// still within its time, is served.
func TestLanes_DropsWhatTheRequesterGaveUpOn(t *testing.T) {
	release, held := make(chan struct{}), make(chan struct{}, 1)
	var mu sync.Mutex
	var served []string
	h := micro.HandlerFunc(func(r micro.Request) {
		mu.Lock()
		served = append(served, string(r.Data()))
		mu.Unlock()
		if string(r.Data()) == "first" {
			held <- struct{}{}
			<-release
		}
		_ = r.Respond([]byte("ok"))
	})
	url := serveLanes(t, 4, h)
	cli := bustest.Conn(t, url)
	inbox := nats.NewInbox()
	answers, err := cli.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	send := func(data, timeout string) {
		m := &nats.Msg{Subject: "lanes.one", Reply: inbox, Data: []byte(data), Header: nats.Header{}}
		if timeout != "" {
			m.Header.Set(bus.TimeoutHeader, timeout)
		}
		if err := cli.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	send("first", "")
	<-held
	send("gave up", "50ms")
	send("patient", "1h")
	send("no header", "")
	if err := cli.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	close(release)
	for range 3 {
		if _, err := answers.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("answers: %v", err)
		}
	}
	if m, err := answers.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("a fourth answer: %q", m.Data)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := fmt.Sprint(served); got != "[first patient no header]" {
		t.Fatalf("served %s, want [first patient no header]", got)
	}
}

// serveLanes serves h on lanes.* through bus.Lanes with n at once, on a
// bus of its own, and returns the bus's URL.
func serveLanes(t *testing.T, n int, h micro.Handler) string {
	t.Helper()
	s := bustest.Start(t)
	srv := bustest.Conn(t, s.URL())
	g := svc.NewGroup(context.Background())
	t.Cleanup(g.Stop)
	m, err := micro.AddService(srv, micro.Config{Name: "lanes", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	if err := m.AddEndpoint("e", bus.Lanes(srv, g.Go, n, h), micro.WithEndpointSubject("lanes.*")); err != nil {
		t.Fatal(err)
	}
	if err := srv.Flush(); err != nil {
		t.Fatal(err)
	}
	return s.URL()
}
