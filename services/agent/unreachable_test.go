package agent

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// An agent given a --nats where nothing listens says it cannot reach the
// bus there, not "headers not supported by this server" (issue 9 item 8).
func TestAgent_WrongNATS_SaysCannotReachTheBus(t *testing.T) {
	const url = "nats://user:secret@127.0.0.1:1"
	nc, err := bus.Connect(url, bus.ConnectOptions{Name: "test-agent", Retry: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var logs lockedBuffer
	startAgent(t, url, func(c *Config) {
		c.NC = nc
		c.Log = zerolog.New(&logs)
	})
	bustest.Eventually(t, 5*time.Second, "the unreachable-bus warning", func() bool {
		return strings.Contains(logs.String(), "cannot reach the bus at nats://user:xxxxx@127.0.0.1:1")
	})
	if s := logs.String(); strings.Contains(s, "headers not supported") || strings.Contains(s, "secret") {
		t.Errorf("logs mislead or show the password:\n%s", s)
	}
}
