// Package bustest starts real embedded NATS servers with JetStream for
// tests: random port, store in t.TempDir(), shut down by t.Cleanup.
package bustest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
)

// Server is a test server and what tests usually need from it.
type Server struct {
	*bus.Server
	Dir string
	// Keys signs credentials on a secured server (StartSecure); nil on an
	// insecure one. CA is the file of the CA its TLS certificate chains to.
	Keys *auth.Keys
	CA   string
}

// Start runs an embedded server WITHOUT authentication on a random port and
// waits until JetStream answers: for unit tests where auth is irrelevant.
// Tests of permissions, and end-to-end tests, use StartSecure.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartIn(t, t.TempDir(), -1)
}

// StartIn runs an insecure server with the store in dir on port (-1
// random); used to restart a server on the same data and port.
func StartIn(t testing.TB, dir string, port int) *Server {
	t.Helper()
	s, err := bus.StartServer(bus.ServerConfig{Name: "test", Port: port, Host: "127.0.0.1", StoreDir: dir})
	if err != nil {
		t.Fatalf("start embedded NATS: %v", err)
	}
	t.Cleanup(s.Stop)
	return &Server{Server: s, Dir: dir}
}

// StartSecure runs a server in operator mode with TLS, as `stoker up`
// does: every connection needs a credential minted with s.Creds and to
// trust s.CA.
func StartSecure(t testing.TB) *Server {
	t.Helper()
	keys, err := auth.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return StartSecureIn(t, t.TempDir(), -1, keys)
}

// StartSecureIn runs a secured server trusting keys with the store in dir
// on port (-1 random).
func StartSecureIn(t testing.TB, dir string, port int, keys *auth.Keys) *Server {
	t.Helper()
	trust, err := keys.Trust()
	if err != nil {
		t.Fatal(err)
	}
	files, err := auth.EnsureTLS(dir, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := auth.ServerTLS(files)
	if err != nil {
		t.Fatal(err)
	}
	s, err := bus.StartServer(bus.ServerConfig{Name: "test", Port: port, Host: "127.0.0.1", StoreDir: dir, Auth: trust,
		ClientTLS: clientTLS})
	if err != nil {
		t.Fatalf("start embedded NATS: %v", err)
	}
	t.Cleanup(s.Stop)
	return &Server{Server: s, Dir: dir, Keys: keys, CA: files.CA}
}

// Creds mints a credential for name in role (nil on an insecure server:
// connecting without one works there).
func (s *Server) Creds(t testing.TB, role auth.Role, name string) []byte {
	t.Helper()
	if s.Keys == nil {
		return nil
	}
	c, err := s.Keys.Mint(role, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ConnAs connects to s as name in role (a plain connection on an insecure
// server), closed by t.Cleanup.
func (s *Server) ConnAs(t testing.TB, role auth.Role, name string) *nats.Conn {
	t.Helper()
	nc, err := bus.Connect(s.URL(), bus.ConnectOptions{Name: t.Name() + "-" + name,
		ReconnectWait: 50 * time.Millisecond, CredsData: s.Creds(t, role, name), CA: s.CA})
	if err != nil {
		t.Fatalf("connect as %s %s: %v", role, name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Port is the server's client port.
func (s *Server) Port() int { return s.Addr().(*net.TCPAddr).Port }

// Conn connects a client that is closed by t.Cleanup.
func Conn(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := bus.Connect(url, bus.ConnectOptions{Name: t.Name(), ReconnectWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Store provisions the buckets and stream with the defaults, as their
// owner does, and returns them.
func Store(t testing.TB, nc *nats.Conn) *bus.Store {
	t.Helper()
	return StoreWith(t, nc, bus.StoreConfig{})
}

// StoreWith provisions the store with cfg and returns it.
func StoreWith(t testing.TB, nc *nats.Conn, cfg bus.StoreConfig) *bus.Store {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := bus.Provision(ctx, js, cfg, zerolog.Nop())
	if err != nil {
		t.Fatalf("provision the store: %v", err)
	}
	return st
}

// Eventually polls cond every 10ms until it is true or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !cond() {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// Buffer is a bytes.Buffer safe for concurrent writers and a reader: a log
// sink or an output that goroutines under test write to.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Node is one server of a test cluster, with what restarting it needs.
type Node struct {
	*Server
	Name               string
	ClientPort, Routes int
	Cluster            []string
}

// StartCluster runs n insecure embedded servers joined in one JetStream
// cluster on random local ports, each with its store in its own temp dir,
// and waits until JetStream answers through the first. Stopped by
// t.Cleanup; a stopped node can be started again with RestartNode.
func StartCluster(t testing.TB, n int) []*Node {
	t.Helper()
	nodes := make([]*Node, n)
	var routes []string
	for i := range nodes {
		nodes[i] = &Node{Name: fmt.Sprintf("n%d", i+1), ClientPort: freePort(t), Routes: freePort(t)}
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", nodes[i].Routes))
	}
	dir := t.TempDir()
	for _, nd := range nodes {
		nd.Cluster = routes
		nd.Server = &Server{Dir: filepath.Join(dir, nd.Name)}
	}
	// Together: each waits for a JetStream meta leader, which needs a
	// majority of them.
	StartNodes(t, nodes...)
	nc := Conn(t, nodes[0].ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, "a JetStream meta leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	})
	return nodes
}

// StartNodes starts nodes (again) on their ports and stores, at once:
// each returns once JetStream answers, which needs a majority up.
func StartNodes(t testing.TB, nodes ...*Node) {
	t.Helper()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, nd := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := bus.StartServer(bus.ServerConfig{Name: nd.Name, Port: nd.ClientPort, Host: "127.0.0.1", StoreDir: nd.Dir,
				ClusterName: "test", ClusterHost: "127.0.0.1", ClusterPort: nd.Routes, Routes: nd.Cluster})
			if err != nil {
				errs[i] = fmt.Errorf("start cluster node %s: %w", nd.Name, err)
				return
			}
			nd.Server.Server = s
		}()
	}
	wg.Wait()
	for i, nd := range nodes {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		t.Cleanup(nd.Server.Server.Stop)
	}
}

// URLs is the client URL list of nodes, comma separated.
func URLs(nodes []*Node) string {
	var us []string
	for _, nd := range nodes {
		us = append(us, fmt.Sprintf("nats://127.0.0.1:%d", nd.ClientPort))
	}
	return strings.Join(us, ",")
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
