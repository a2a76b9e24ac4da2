package tests

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stoker/stoker/schemas"
)

// TestBusCluster_ThreeNodes_SurvivesNodeLoss runs the bus as three clustered
// `stoker bus` processes with --replicas 3 (each provisions the store,
// idempotently), every service with the full URL list, and checks that the cluster keeps serving when one node is killed.
func TestBusCluster_ThreeNodes_SurvivesNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("three-node bus: skipped in -short mode")
	}
	c := NewCluster(t, ClusterOptions{NoBus: true})
	type node struct{ name, client, route string }
	var nodes []node
	for i := 1; i <= 3; i++ {
		nodes = append(nodes, node{fmt.Sprintf("n%d", i),
			fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))})
	}
	var routes, urls []string
	for _, n := range nodes {
		routes = append(routes, "nats://"+n.route)
		urls = append(urls, "nats://"+n.client)
	}
	procs := map[string]*Proc{}
	for _, n := range nodes {
		_, cport, _ := net.SplitHostPort(n.client)
		_, rport, _ := net.SplitHostPort(n.route)
		procs[n.name] = c.Start("bus-"+n.name, "bus", "--server-name", n.name, "--host", "127.0.0.1",
			"--port", cport, "--data", filepath.Join(c.Dir, n.name),
			"--cluster-name", "stoker-test", "--cluster-port", rport, "--routes", strings.Join(routes, ","), "--replicas", "3",
			"--auth-dir", c.AuthDir)
	}
	c.URL = strings.Join(urls, ",")
	for _, svc := range []string{"registration", "heartbeat", "recovery", "scheduler"} {
		c.StartService(svc)
	}
	c.StartAgent("a", 2, "1g")
	c.StartAgent("b", 2, "1g")
	c.Eventually(120*time.Second, "cluster ALIVE with two workers on a 3-node bus", func() bool {
		out, _, err := c.CLI("status", "--json")
		var st schemas.Status
		return err == nil && jsonInto(out, &st) == nil && st.State == schemas.ClusterAlive && st.Workers["ALIVE"] == 2
	})
	for _, b := range []string{"stoker-workers", "stoker-apps", "stoker-leader"} {
		s, err := c.Store().JS.Stream(t.Context(), "KV_"+b)
		if err != nil {
			t.Fatal(err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Fatalf("bucket %s has %d replicas, want 3", b, r)
		}
	}
	// Lose one node; the other two keep a quorum.
	var err error
	procs["n2"].Signal(syscall.SIGKILL)
	_ = procs["n2"].Wait(5 * time.Second)
	// Streams that had their leader on n2 elect a new one (a few seconds);
	// until then a request may time out, as with any quorum system.
	var out, errOut string
	lost := time.Now()
	c.Eventually(60*time.Second, "a submission accepted and finished on the bus missing a node", func() bool {
		out, errOut, err = c.CLI("submit", "--wait", "--", "/bin/sh", "-c", "echo survived")
		return err == nil
	})
	t.Logf("serving again %s after losing a node (last error: %s)", time.Since(lost).Round(time.Millisecond), strings.TrimSpace(errOut))
	id := strings.Fields(out)[0]
	// The logs request reads the driver's record first: like the submission
	// it may time out while a stream's leader is being re-elected.
	var logs, logsErr string
	c.Eventually(30*time.Second, "the driver's logs on the bus missing a node", func() bool {
		logs, logsErr, err = c.CLI("logs", id)
		return err == nil && strings.Contains(logs, "survived")
	})
	if logsErr != "" {
		t.Logf("logs of %s answered after: %s", id, strings.TrimSpace(logsErr))
	}
	// Every bucket's stream must elect a leader among the two survivors
	// before a read that spans them all answers.
	var workers []schemas.WorkerView
	c.Eventually(60*time.Second, "stoker workers answering on the bus missing a node", func() bool {
		out, _, err := c.CLI("workers", "--json")
		workers = nil
		return err == nil && jsonInto(out, &workers) == nil
	})
	if len(workers) != 2 {
		t.Fatalf("%d workers after losing a bus node, want 2", len(workers))
	}
	for _, w := range workers {
		if w.State != schemas.WorkerAlive {
			t.Fatalf("worker %s is %s after losing a bus node", w.ID, w.State)
		}
	}
}
