package bustest

import (
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP proxy in front of a server, for tests of a link that goes
// silent: Cut stops forwarding in both directions without closing anything
// (the half-open socket of a partition: the client still thinks it is
// connected, its requests time out), Heal forwards again, delivering what
// queued meanwhile.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	open  chan struct{} // closed while forwarding
	conns []net.Conn
}

// StartProxy listens on a random local port and forwards to target
// (host:port). It is closed by t.Cleanup.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, target: target, open: make(chan struct{})}
	close(p.open)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// URL is the nats:// URL clients use to go through the proxy.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Cut stops forwarding; bytes already read wait for Heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default:
	}
}

// Heal forwards again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

// Drop closes every connection through the proxy: clients see a
// disconnect and reconnect (through the proxy, so not while it is cut).
func (p *Proxy) Drop() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

func (p *Proxy) gate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go p.pipe(c, s)
		go p.pipe(s, c)
	}
}

// pipe copies src to dst, holding each chunk while the proxy is cut.
func (p *Proxy) pipe(src, dst net.Conn) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = dst.Close()
			return
		}
	}
}

func (p *Proxy) close() {
	_ = p.ln.Close()
	p.Heal()
	p.Drop()
}
