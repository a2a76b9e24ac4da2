package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/services/registration"
)

// TestClients_NoQuorum_SayWhy stops two of a three-node bus's nodes:
// stoker status, workers and run say the bus has no quorum and how many
// nodes they reach (old main: "context deadline exceeded"); run keeps
// retrying until the nodes are back, then registers.
func TestClients_NoQuorum_SayWhy(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node bus")
	}
	nodes := bustest.StartCluster(t, 3)
	urls := bustest.URLs(nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	nc0 := bustest.Conn(t, nodes[0].ClientURL())
	bustest.StoreWith(t, nc0, bus.StoreConfig{Replicas: 3})
	regNC, err := bus.Connect(nodes[0].ClientURL(), bus.ConnectOptions{Name: "registration", Retry: true, ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(regNC.Close)
	reg, err := registration.New(registration.Config{NC: regNC, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	// Interest in the registration's subjects reaches every node shortly.
	bustest.Eventually(t, 30*time.Second, "status on the healthy bus", func() bool {
		code, _, _ := runCmd(t, nil, "status", "--nats", urls)
		return code == exitOK
	})

	nodes[1].Stop()
	nodes[2].Stop()
	lost := time.Now()
	for _, cmd := range []string{"status", "workers"} {
		start := time.Now()
		code, out, stderr := runCmd(t, nil, cmd, "--nats", urls)
		t.Logf("stoker %s with 2 of 3 nodes stopped: exit %d after %s:\n%s", cmd, code, time.Since(start).Round(time.Millisecond), stderr)
		if code == exitOK {
			t.Fatalf("stoker %s succeeded without quorum:\n%s", cmd, out)
		}
		if !strings.Contains(stderr, "the bus has no quorum (1 of 3 nodes reachable)") {
			t.Fatalf("stoker %s without quorum says:\n%s", cmd, stderr)
		}
		if !strings.Contains(stderr, "retrying") {
			t.Fatalf("stoker %s did not retry:\n%s", cmd, stderr)
		}
	}

	// stoker run retries until the bus has a quorum again.
	var out, errb bustest.Buffer
	e := &env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	done := make(chan int, 1)
	rctx, rcancel := context.WithCancel(ctx)
	t.Cleanup(rcancel)
	go func() { done <- run(rctx, e, []string{"run", "--nats", urls, "--executors", "1", "--", "sleep", "30"}) }()
	time.Sleep(4 * time.Second)
	select {
	case code := <-done:
		t.Fatalf("stoker run gave up without quorum: exit %d\n%s", code, errb.String())
	default:
	}
	bustest.StartNodes(t, nodes[1], nodes[2])
	t.Logf("quorum back %s after the loss", time.Since(lost).Round(time.Millisecond))
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "app-") {
		select {
		case code := <-done:
			t.Fatalf("stoker run ended with exit %d before registering:\n%s", code, errb.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("stoker run did not register within 60s of the quorum's return:\n%s", errb.String())
		}
	}
	rcancel()
	<-done
}
