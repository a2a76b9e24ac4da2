package agent

// One worker id, one live agent (docs/contract.md). A starting agent answers
// stoker.worker.<wid>.ping and asks it before acting on commands: an older
// live instance that answers keeps the id and this one refuses to start. An
// instance that was replaced while it could not be reached (a partition)
// learns it when it registers again: registration refuses an instance older
// than the ALIVE one, and the agent stops acting on commands at once.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// WorkerIDFile, in the work dir, keeps a default worker id across restarts.
const WorkerIDFile = "worker-id"

// DefaultPingWait is how long a starting agent collects answers to its ping.
const DefaultPingWait = 300 * time.Millisecond

// DefaultWorkerID is the worker id kept in workDir/worker-id, or, the first
// time, the hostname plus a short random suffix written there: two agents
// on one host (with two work dirs) never share an id, and a restart keeps it.
func DefaultWorkerID(workDir string) (string, error) {
	path := filepath.Join(workDir, WorkerIDFile)
	if b, err := os.ReadFile(path); err == nil {
		id := strings.TrimSpace(string(b))
		if err := schemas.ValidID("worker", id); err != nil {
			return "", fmt.Errorf("%s: %w (delete the file or pass --id)", path, err)
		}
		return id, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	host, _ := os.Hostname()
	base := schemas.SanitizeID(host)
	suffix := "-" + schemas.NewInstance()[:4]
	if len(base)+len(suffix) > schemas.MaxIDLen {
		base = base[:schemas.MaxIDLen-len(suffix)]
	}
	id := base + suffix
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return "", fmt.Errorf("work dir: %w", err)
	}
	if err := os.WriteFile(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("keep the worker id: %w", err)
	}
	return id, nil
}

// HeldError is Start's error when another live agent holds the worker id,
// and the agent's Err when the cluster says a newer instance replaced it.
type HeldError struct {
	WorkerID string
	Holder   *schemas.AgentPresence // nil when only the cluster's message is known
	Message  string                 // the cluster's refusal, when Holder is nil
	Replaced bool                   // this instance was replaced (it was running)
}

func (e *HeldError) Error() string {
	who := e.Message
	if e.Holder != nil {
		who = "a live agent " + e.Holder.String()
	}
	if e.Replaced {
		return fmt.Sprintf("worker id %q was taken over by %s; this agent stopped its executors and drivers", e.WorkerID, who)
	}
	return fmt.Sprintf("worker id %q is held by %s; start this agent with another id (--id NAME, or a work dir of its own for a default id) or stop that one first",
		e.WorkerID, who)
}

// claimID answers pings from now on, then asks whether an older live agent
// holds the worker id (a *HeldError if so).
func (s *Service) claimID(ctx context.Context) error {
	sub, err := s.nc.Subscribe(bus.WorkerPingSubject(s.wid), s.onPing)
	if err != nil {
		return fmt.Errorf("agent: subscribe %s: %w", bus.WorkerPingSubject(s.wid), err)
	}
	s.mu.Lock()
	s.subs = append(s.subs, sub)
	s.mu.Unlock()
	if !s.nc.IsConnected() {
		// No bus yet (Retry): registration refuses this instance later if
		// a newer one holds the id by then.
		return nil
	}
	if err := s.nc.FlushTimeout(5 * time.Second); err != nil {
		return fmt.Errorf("agent: flush %s: %w", bus.WorkerPingSubject(s.wid), err)
	}
	holder, err := s.olderHolder(ctx)
	if err != nil {
		return fmt.Errorf("agent: ask whether worker id %q is held: %w", s.wid, err)
	}
	if holder != nil {
		return &HeldError{WorkerID: s.wid, Holder: holder}
	}
	return nil
}

// presence is this instance, as it answers a ping.
func (s *Service) presence() *schemas.AgentPresence {
	return &schemas.AgentPresence{WorkerID: s.wid, Instance: s.instance, Host: s.cfg.Host,
		PID: s.cfg.PID, Since: s.since, WorkDir: s.cfg.WorkDir}
}

// onPing answers stoker.worker.<wid>.ping while the agent is live.
func (s *Service) onPing(m *nats.Msg) {
	s.mu.Lock()
	live := !s.stopping
	s.mu.Unlock()
	if !live || m.Reply == "" {
		return
	}
	if b, err := bus.Encode(s.presence(), bus.Msgpack); err == nil {
		out := &nats.Msg{Subject: m.Reply, Data: b, Header: nats.Header{}}
		out.Header.Set(bus.ContentType, bus.ContentTypeMsgpack)
		_ = s.nc.PublishMsg(out)
	}
}

// olderHolder asks stoker.worker.<wid>.ping and returns the oldest other
// instance that answers within PingWait if it is older than this one (it
// keeps the id), else nil. Two agents starting together both answer both
// pings, and only the younger one steps back.
func (s *Service) olderHolder(ctx context.Context) (*schemas.AgentPresence, error) {
	inbox := s.nc.NewInbox()
	ch := make(chan *nats.Msg, 16)
	sub, err := s.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.nc.PublishRequest(bus.WorkerPingSubject(s.wid), inbox, nil); err != nil {
		return nil, err
	}
	me := s.presence()
	var oldest *schemas.AgentPresence
	timer := time.NewTimer(s.cfg.PingWait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			if oldest != nil && oldest.OlderThan(me) {
				return oldest, nil
			}
			return nil, nil
		case m := <-ch:
			var p schemas.AgentPresence
			if len(m.Data) == 0 || bus.DecodeMsg(m, &p) != nil || p.Instance == s.instance {
				continue
			}
			if oldest == nil || p.OlderThan(oldest) {
				oldest = &p
			}
		}
	}
}

// replacedBy stops acting on commands at once (unsubscribes, kills the
// children) after the cluster refused this instance's registration because
// a newer one holds the worker id; Done is closed and Err says why.
func (s *Service) replacedBy(msg string) {
	err := &HeldError{WorkerID: s.wid, Message: msg, Replaced: true}
	s.failOnce.Do(func() {
		s.fatal = err
		s.log.Error().Err(err).Msg("replaced by a newer agent instance; stopping")
		s.mu.Lock()
		subs := s.subs
		s.subs = nil
		s.mu.Unlock()
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
		// "At once" means the server has dropped the subscriptions when
		// Done closes: a command sent after that finds no responder
		// instead of a subscription the UNSUB has not reached yet.
		_ = s.nc.FlushTimeout(time.Second)
		close(s.done)
		// Stop waits for the registration loop this runs in.
		go s.Stop()
	})
}

// Done is closed when the agent stopped on its own (replaced); Err says why.
func (s *Service) Done() <-chan struct{} { return s.done }

// Err is why Done was closed (a *HeldError), nil before.
func (s *Service) Err() error {
	select {
	case <-s.done:
		return s.fatal
	default:
		return nil
	}
}
