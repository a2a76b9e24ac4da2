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
	s := bustest.Start(t)
	srv := bustest.Conn(t, s.URL())
	g := svc.NewGroup(context.Background())
	t.Cleanup(g.Stop)

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
	m, err := micro.AddService(srv, micro.Config{Name: "lanes", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	if err := m.AddEndpoint("e", bus.Lanes(srv, g.Go, 4, h), micro.WithEndpointSubject("lanes.*")); err != nil {
		t.Fatal(err)
	}
	if err := srv.Flush(); err != nil {
		t.Fatal(err)
	}

	cli := bustest.Conn(t, s.URL())
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
	s := bustest.Start(t)
	srv := bustest.Conn(t, s.URL())
	g := svc.NewGroup(context.Background())
	t.Cleanup(g.Stop)
	release, held := make(chan struct{}), make(chan struct{}, 100)
	h := micro.HandlerFunc(func(r micro.Request) {
		if r.Subject() == "lanes.busy" {
			held <- struct{}{}
			<-release
		}
		_ = r.Respond([]byte("ok"))
	})
	m, err := micro.AddService(srv, micro.Config{Name: "lanes", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	if err := m.AddEndpoint("e", bus.Lanes(srv, g.Go, 2, h), micro.WithEndpointSubject("lanes.*")); err != nil {
		t.Fatal(err)
	}
	if err := srv.Flush(); err != nil {
		t.Fatal(err)
	}
	cli := bustest.Conn(t, s.URL())
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
