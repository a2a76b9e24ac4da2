package heartbeat

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

const (
	testTimeout  = 300 * time.Millisecond
	testInterval = 100 * time.Millisecond
)

// env is a bus, its buckets and the fake clock every service of the test
// runs its deadlines on: time moves only when the test advances it, so a
// check that something did not happen before a timeout is exact.
type env struct {
	srv   *bustest.Server
	nc    *nats.Conn
	st    *bus.Store
	clock *svc.FakeClock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.URL())
	return &env{srv: srv, nc: nc, st: bustest.Store(t, nc), clock: svc.NewFakeClock(time.Now().UTC())}
}

func (e *env) start(t *testing.T, id string) *Service {
	t.Helper()
	s, err := New(Config{NC: bustest.Conn(t, e.srv.URL()), ID: id, Log: zerolog.Nop(),
		WorkerTimeout: testTimeout, HeartbeatInterval: testInterval, Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func put[T any](t *testing.T, kv jetstream.KeyValue, key string, v *T) {
	t.Helper()
	if _, _, err := bus.Mutate(ctxT(t), kv, key, func(*T) (*T, error) { return v, nil }); err != nil {
		t.Fatalf("put %s/%s: %v", kv.Bucket(), key, err)
	}
}

// alive is an ALIVE worker record written at now (the fake clock's time).
func alive(now time.Time, id, instance string) *schemas.Worker {
	return &schemas.Worker{ID: id, Instance: instance, Cores: 4, MemoryMB: 1024,
		State: schemas.WorkerAlive, RegisteredAt: now, UpdatedAt: now}
}

func workerState(t *testing.T, e *env, id string) schemas.WorkerState {
	t.Helper()
	w, _, err := bus.Get[schemas.Worker](ctxT(t), e.st.Workers, id)
	if err != nil {
		t.Fatalf("get worker %s: %v", id, err)
	}
	return w.State
}

// gen is the generation of a worker's (or, with app, an app's) deadline:
// it grows each time the deadline is armed, so a test can wait for a
// heartbeat to have been handled.
func gen(s *Service, id string, app bool) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if app {
		if a := s.apps[id]; a != nil {
			return a.gen
		}
		return 0
	}
	if w := s.workers[id]; w != nil {
		return w.gen
	}
	return 0
}

// checkNotFired fails if any deadline fired: what a timer never fired for
// cannot have been judged.
func checkNotFired(t *testing.T, e *env, want int, what string) {
	t.Helper()
	if n := e.clock.Fired(); n != want {
		t.Fatalf("%s: %d deadlines fired, want %d", what, n, want)
	}
}

// seen reports whether the service's watcher has applied a worker state.
func seen(s *Service, id string, st schemas.WorkerState) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.workers[id]
	return w != nil && w.state == st
}

func beat(t *testing.T, nc *nats.Conn, wid, instance, reply string) {
	t.Helper()
	if err := bus.PublishRequest(nc, bus.WorkerHeartbeatSubject(wid), reply, &schemas.Heartbeat{WorkerID: wid, Instance: instance}); err != nil {
		t.Fatal(err)
	}
}

func TestService_Worker_DeadAfterTimeout(t *testing.T) {
	e := newEnv(t)
	events, err := e.nc.SubscribeSync(bus.EventSubject("worker", "w1"))
	if err != nil {
		t.Fatal(err)
	}
	s := e.start(t, "hb-1")
	put(t, e.st.Workers, "w1", alive(e.clock.Now(), "w1", "i1"))
	bustest.Eventually(t, 5*time.Second, "watcher sees w1", func() bool { return seen(s, "w1", schemas.WorkerAlive) })
	e.clock.Advance(testTimeout - time.Millisecond)
	checkNotFired(t, e, 0, "just before the timeout")
	if st := workerState(t, e, "w1"); st != schemas.WorkerAlive {
		t.Fatalf("w1 is %s before its timeout", st)
	}
	e.clock.Advance(time.Millisecond)
	bustest.Eventually(t, 5*time.Second, "w1 DEAD", func() bool { return workerState(t, e, "w1") == schemas.WorkerDead })
	w, _, _ := bus.Get[schemas.Worker](ctxT(t), e.st.Workers, "w1")
	if w.Reason != "no heartbeat for 300ms" || w.Instance != "i1" {
		t.Fatalf("record = %+v", w)
	}
	m, err := events.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no event: %v", err)
	}
	var ev schemas.Event
	if err := bus.DecodeMsg(m, &ev); err != nil || ev.State != "DEAD" || ev.Kind != "worker" {
		t.Fatalf("event = %+v %v", ev, err)
	}
	bustest.Eventually(t, 5*time.Second, "service sees DEAD", func() bool { return seen(s, "w1", schemas.WorkerDead) })
}

func TestService_Worker_AliveWhileHeartbeating(t *testing.T) {
	e := newEnv(t)
	s := e.start(t, "hb-1")
	put(t, e.st.Workers, "w1", alive(e.clock.Now(), "w1", "i1"))
	bustest.Eventually(t, 5*time.Second, "watcher sees w1", func() bool { return seen(s, "w1", schemas.WorkerAlive) })

	agent := bustest.Conn(t, e.srv.URL())
	inbox := agent.NewRespInbox()
	replies, err := agent.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	// Heartbeat for several timeouts, each heartbeat handled before time
	// moves on.
	for i := 0; i < 6; i++ {
		e.clock.Advance(testTimeout / 2)
		g := gen(s, "w1", false)
		beat(t, agent, "w1", "i1", inbox)
		bustest.Eventually(t, 5*time.Second, "heartbeat handled", func() bool { return gen(s, "w1", false) > g })
	}
	checkNotFired(t, e, 0, "while heartbeating")
	if st := workerState(t, e, "w1"); st != schemas.WorkerAlive {
		t.Fatalf("a heartbeating worker became %s", st)
	}
	// Each beat is acknowledged (the service hears a quorum: one node),
	// never answered with a re-register.
	acks := 0
	for {
		m, err := replies.NextMsg(100 * time.Millisecond)
		if err != nil {
			break
		}
		var ack schemas.HeartbeatAck
		if err := bus.DecodeMsg(m, &ack); err != nil || ack.WorkerID != "w1" {
			t.Fatalf("a known worker was answered %s %v (%v), want a heartbeat_ack", m.Data, m.Header, err)
		}
		acks++
	}
	if acks != 6 {
		t.Fatalf("%d heartbeats acknowledged, want 6", acks)
	}
	// Silence: DEAD.
	e.clock.Advance(testTimeout)
	bustest.Eventually(t, 5*time.Second, "w1 DEAD after silence", func() bool { return workerState(t, e, "w1") == schemas.WorkerDead })
}

func TestService_Heartbeat_Reregister(t *testing.T) {
	e := newEnv(t)
	s := e.start(t, "hb-1")
	put(t, e.st.Workers, "dead", &schemas.Worker{ID: "dead", Instance: "i1", Cores: 1, MemoryMB: 64, State: schemas.WorkerDead})
	put(t, e.st.Workers, "gone", &schemas.Worker{ID: "gone", Instance: "i1", Cores: 1, MemoryMB: 64, State: schemas.WorkerDecommissioned})
	put(t, e.st.Workers, "alive", alive(e.clock.Now(), "alive", "i1"))
	put(t, e.st.Workers, "recovering", &schemas.Worker{ID: "recovering", Instance: "i1", Cores: 1, MemoryMB: 64, State: schemas.WorkerUnknown, UpdatedAt: e.clock.Now()})
	bustest.Eventually(t, 5*time.Second, "watcher sees all", func() bool {
		return seen(s, "dead", schemas.WorkerDead) && seen(s, "gone", schemas.WorkerDecommissioned) &&
			seen(s, "alive", schemas.WorkerAlive) && seen(s, "recovering", schemas.WorkerUnknown)
	})
	agent := bustest.Conn(t, e.srv.URL())
	cases := []struct {
		name, wid, instance string
		want                string // "" = no answer
	}{
		{"unknown worker", "nobody", "i1", "not registered"},
		{"dead worker", "dead", "i1", "is DEAD"},
		// A restarted agent (another instance) of a DECOMMISSIONED worker
		// registers again; the instance that was drained stays out.
		{"decommissioned worker, new instance", "gone", "i2", "is DECOMMISSIONED"},
		{"decommissioned worker, same instance", "gone", "i1", ""},
		{"other instance", "alive", "i2", "another agent instance"},
		{"alive, same instance", "alive", "i1", ""},
		{"recovering", "recovering", "i2", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inbox := agent.NewRespInbox()
			sub, err := agent.SubscribeSync(inbox)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
			beat(t, agent, c.wid, c.instance, inbox)
			// A probe that is always answered, sent after: heartbeats are
			// handled in order, so the first reply tells whether the case
			// itself was answered.
			beat(t, agent, "probe", "p", inbox)
			m, err := sub.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			rr := reregisterOf(t, m, c.wid)
			switch {
			case c.want == "" && rr.WorkerID != "probe" && rr.WorkerID != "":
				t.Fatalf("want no answer, got %+v", rr)
			case c.want != "" && (rr.WorkerID != c.wid || !strings.Contains(rr.Reason, c.want)):
				t.Fatalf("got %+v, want re-register with %q", rr, c.want)
			}
		})
	}
}

// TestService_Heartbeat_AfterFreshRegistration: a heartbeat racing ahead of
// the watcher is checked against KV before the agent is sent back.
func TestService_Heartbeat_AfterFreshRegistration(t *testing.T) {
	e := newEnv(t)
	s := e.start(t, "hb-1")
	put(t, e.st.Workers, "w1", alive(e.clock.Now(), "w1", "i1"))
	bustest.Eventually(t, 5*time.Second, "watcher sees w1", func() bool { return seen(s, "w1", schemas.WorkerAlive) })
	// Forget it, as if the watcher had not delivered it yet.
	s.mu.Lock()
	drop(s.workers, "w1")
	s.mu.Unlock()
	agent := bustest.Conn(t, e.srv.URL())
	inbox := agent.NewRespInbox()
	sub, _ := agent.SubscribeSync(inbox)
	beat(t, agent, "w1", "i1", inbox)
	beat(t, agent, "probe", "p", inbox)
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rr schemas.Reregister
	if err := bus.DecodeMsg(m, &rr); err != nil || rr.WorkerID != "probe" {
		t.Fatalf("registered worker told to re-register: %+v %v", rr, err)
	}
	if !seen(s, "w1", schemas.WorkerAlive) {
		t.Fatal("KV read did not refresh the service's view")
	}
}

func TestService_TwoInstances_OneDeadTransition(t *testing.T) {
	e := newEnv(t)
	a := e.start(t, "hb-a")
	b := e.start(t, "hb-b")
	put(t, e.st.Workers, "w1", alive(e.clock.Now(), "w1", "i1"))
	bustest.Eventually(t, 5*time.Second, "both see w1", func() bool {
		return seen(a, "w1", schemas.WorkerAlive) && seen(b, "w1", schemas.WorkerAlive)
	})
	e.clock.Advance(testTimeout)
	bustest.Eventually(t, 5*time.Second, "both see DEAD", func() bool {
		return seen(a, "w1", schemas.WorkerDead) && seen(b, "w1", schemas.WorkerDead)
	})
	h, err := e.st.Workers.History(ctxT(t), "w1")
	if err != nil {
		t.Fatal(err)
	}
	dead := 0
	for _, en := range h {
		var w schemas.Worker
		if err := bus.DecodeRecord(en.Value(), &w); err != nil {
			t.Fatal(err)
		}
		if w.State == schemas.WorkerDead {
			dead++
		}
	}
	if dead != 1 || len(h) != 2 {
		t.Fatalf("history has %d revisions, %d DEAD; want 2 and exactly 1", len(h), dead)
	}
}

func TestService_ReregisteredWorkerGetsNewTimer(t *testing.T) {
	e := newEnv(t)
	s := e.start(t, "hb-1")
	put(t, e.st.Workers, "w1", alive(e.clock.Now(), "w1", "i1"))
	bustest.Eventually(t, 5*time.Second, "watcher sees w1", func() bool { return seen(s, "w1", schemas.WorkerAlive) })
	e.clock.Advance(testTimeout)
	bustest.Eventually(t, 5*time.Second, "w1 DEAD", func() bool { return seen(s, "w1", schemas.WorkerDead) })
	// The agent restarts and registers (registration's write).
	put(t, e.st.Workers, "w1", alive(e.clock.Now(), "w1", "i2"))
	bustest.Eventually(t, 5*time.Second, "w1 ALIVE again", func() bool { return seen(s, "w1", schemas.WorkerAlive) })
	// A full timeout again, from the re-registration.
	e.clock.Advance(testTimeout - time.Millisecond)
	checkNotFired(t, e, 1, "just before the new timeout")
	e.clock.Advance(time.Millisecond)
	bustest.Eventually(t, 5*time.Second, "w1 DEAD again", func() bool { return workerState(t, e, "w1") == schemas.WorkerDead })
	w, _, _ := bus.Get[schemas.Worker](ctxT(t), e.st.Workers, "w1")
	if w.Instance != "i2" {
		t.Fatalf("record = %+v", w)
	}
}

func TestService_App_FinishedWithoutHeartbeat(t *testing.T) {
	e := newEnv(t)
	s := e.start(t, "hb-1")
	silent := schemas.NewAppID(time.Now())
	chatty := schemas.NewAppID(time.Now())
	put(t, e.st.Apps, silent, &schemas.App{ID: silent, Executor: schemas.ExecutorSpec{Cores: 1, MemoryMB: 64}, State: schemas.AppRunning})
	put(t, e.st.Apps, chatty, &schemas.App{ID: chatty, Executor: schemas.ExecutorSpec{Cores: 1, MemoryMB: 64}, State: schemas.AppWaiting})
	bustest.Eventually(t, 5*time.Second, "watcher sees the apps", func() bool {
		return gen(s, silent, true) > 0 && gen(s, chatty, true) > 0
	})
	// The chatty app heartbeats every half timeout, each heartbeat handled
	// before time moves on; the silent one's deadline comes due on the
	// second step.
	for i := 0; i < 6; i++ {
		e.clock.Advance(testTimeout / 2)
		g := gen(s, chatty, true)
		if err := bus.Publish(e.nc, bus.AppHeartbeatSubject(chatty), &schemas.AppHeartbeat{AppID: chatty}); err != nil {
			t.Fatal(err)
		}
		bustest.Eventually(t, 5*time.Second, "app heartbeat handled", func() bool { return gen(s, chatty, true) > g })
	}
	bustest.Eventually(t, 5*time.Second, "silent app FINISHED", func() bool {
		a, _, err := bus.Get[schemas.App](ctxT(t), e.st.Apps, silent)
		return err == nil && a.State == schemas.AppFinished && a.Message == AppSilentMessage
	})
	checkNotFired(t, e, 1, "only the silent app's deadline")
	a, _, err := bus.Get[schemas.App](ctxT(t), e.st.Apps, chatty)
	if err != nil || a.State != schemas.AppWaiting {
		t.Fatalf("heartbeating app = %+v %v", a, err)
	}
}

func TestService_App_UnknownIsNotJudged(t *testing.T) {
	e := newEnv(t)
	s := e.start(t, "hb-1")
	id := schemas.NewAppID(time.Now())
	put(t, e.st.Apps, id, &schemas.App{ID: id, Executor: schemas.ExecutorSpec{Cores: 1, MemoryMB: 64}, State: schemas.AppUnknown})
	bustest.Eventually(t, 5*time.Second, "watcher sees the app", func() bool { return gen(s, id, true) > 0 })
	// Each expiry finds the app in recovery and re-arms instead of judging.
	for i := 0; i < 3; i++ {
		g := gen(s, id, true)
		e.clock.Advance(testTimeout)
		bustest.Eventually(t, 5*time.Second, "timer fired and re-armed", func() bool { return gen(s, id, true) > g })
	}
	// (While a recovery runs the deadline is looked at every heartbeat
	// interval, so that an app it leaves UNKNOWN is judged right after.)
	a, _, _ := bus.Get[schemas.App](ctxT(t), e.st.Apps, id)
	if a.State != schemas.AppUnknown {
		t.Fatalf("app in recovery became %s", a.State)
	}
}

func TestService_BadPayloads(t *testing.T) {
	e := newEnv(t)
	s := e.start(t, "hb-1")
	app := schemas.NewAppID(time.Now())
	subjects := []string{bus.WorkerHeartbeatSubject("w1"), bus.AppHeartbeatSubject(app)}
	payloads := []struct {
		name string
		data []byte
		json bool
	}{
		{"msgpack garbage", []byte{0xc1, 0xff, 0x00}, false},
		{"json garbage", []byte(`{"worker_id":`), true},
		{"invalid id", []byte(`{"worker_id":"bad id","app_id":"nope"}`), true},
		{"wrong type", []byte(`{"type":"io.stoker.v1.ack"}`), true},
	}
	for _, subj := range subjects {
		for _, p := range payloads {
			t.Run(subj+"/"+p.name, func(t *testing.T) {
				m := &nats.Msg{Subject: subj, Data: p.data, Header: nats.Header{}}
				if p.json {
					m.Header.Set(bus.ContentType, bus.ContentTypeJSON)
				}
				r, err := e.nc.RequestMsg(m, 5*time.Second)
				if err != nil {
					t.Fatalf("no reply: %v", err)
				}
				if r.Header.Get(bus.ErrorCodeHeader) != "400" || r.Header.Get(bus.ErrorHeader) == "" {
					t.Fatalf("reply headers = %v", r.Header)
				}
			})
		}
	}
	// Subject and body disagree.
	r, err := e.nc.Request(bus.WorkerHeartbeatSubject("w2"), mustEncode(t, &schemas.Heartbeat{WorkerID: "w1", Instance: "i"}), 5*time.Second)
	if err != nil || r.Header.Get(bus.ErrorCodeHeader) != "400" {
		t.Fatalf("mismatched subject: %v %v", err, r)
	}
	// Without a reply subject: nothing to answer, nothing breaks.
	if err := e.nc.Publish(bus.WorkerHeartbeatSubject("w1"), []byte{0xc1}); err != nil {
		t.Fatal(err)
	}
	if s.Counters.BadInput.Load() < int64(len(subjects)*len(payloads)) {
		t.Fatalf("bad input counted %d times", s.Counters.BadInput.Load())
	}
	// Still serving.
	var rr schemas.Reregister
	if err := bus.Call(ctxT(t), e.nc, bus.WorkerHeartbeatSubject("w9"), &schemas.Heartbeat{WorkerID: "w9", Instance: "i"}, &rr); err != nil || rr.WorkerID != "w9" {
		t.Fatalf("after bad input: %+v %v", rr, err)
	}
}

func mustEncode(t *testing.T, v any) []byte {
	t.Helper()
	b, err := bus.Encode(v, bus.Msgpack)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestService_Stop_StopsTimers(t *testing.T) {
	e := newEnv(t)
	s := e.start(t, "hb-1")
	put(t, e.st.Workers, "w1", alive(e.clock.Now(), "w1", "i1"))
	bustest.Eventually(t, 5*time.Second, "watcher sees w1", func() bool { return seen(s, "w1", schemas.WorkerAlive) })
	s.Stop()
	s.Stop()
	if n := e.clock.Pending(); n != 0 {
		t.Fatalf("%d deadlines still armed after Stop", n)
	}
	e.clock.Advance(2 * testTimeout)
	checkNotFired(t, e, 0, "after Stop")
	if st := workerState(t, e, "w1"); st != schemas.WorkerAlive {
		t.Fatalf("a stopped service marked the worker %s", st)
	}
}

func TestNew_Validates(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name string
		cfg  Config
	}{
		{"no connection", Config{}},
		{"timeout equal to interval", Config{NC: e.nc, WorkerTimeout: time.Second, HeartbeatInterval: time.Second}},
		{"timeout below interval", Config{NC: e.nc, WorkerTimeout: 100 * time.Millisecond}},
		{"negative", Config{NC: e.nc, WorkerTimeout: -time.Second}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := New(c.cfg); err == nil {
				t.Fatal("want an error")
			}
		})
	}
	s, err := New(Config{NC: e.nc})
	if err != nil || s.cfg.WorkerTimeout != 5*time.Second || s.cfg.HeartbeatInterval != time.Second || s.ID() == "" {
		t.Fatalf("defaults: %+v %v", s.cfg, err)
	}
}

// setCluster writes stoker-cluster/state and waits for s to see it.
func setCluster(t *testing.T, e *env, s *Service, st schemas.ClusterState, epoch uint64) {
	t.Helper()
	put(t, e.st.Cluster, bus.KeyClusterState, &schemas.Cluster{Epoch: epoch, State: st, Leader: "sched-1", Since: e.clock.Now()})
	bustest.Eventually(t, 5*time.Second, "watcher sees the cluster "+string(st), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.cluster.State == st && s.cluster.Epoch == epoch
	})
}

// reply sends one heartbeat (with epoch) and returns the Reregister it got,
// or nil; a probe sent after it tells "no answer" apart.
func reply(t *testing.T, agent *nats.Conn, wid, instance string, epoch uint64) *schemas.Reregister {
	t.Helper()
	inbox := agent.NewRespInbox()
	sub, err := agent.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := bus.PublishRequest(agent, bus.WorkerHeartbeatSubject(wid), inbox, &schemas.Heartbeat{WorkerID: wid, Instance: instance, Epoch: epoch}); err != nil {
		t.Fatal(err)
	}
	beat(t, agent, "probe", "p", inbox)
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rr := reregisterOf(t, m, wid)
	if rr.WorkerID == "probe" || rr.WorkerID == "" {
		return nil
	}
	return &rr
}

// reregisterOf decodes a heartbeat reply: a Reregister as is, a
// HeartbeatAck for wid (accepted: nothing to do) as an empty Reregister,
// and the probe's Reregister as the probe's.
func reregisterOf(t *testing.T, m *nats.Msg, wid string) schemas.Reregister {
	t.Helper()
	var rr schemas.Reregister
	err := bus.DecodeMsg(m, &rr)
	if errors.Is(err, bus.ErrWrongType) {
		var ack schemas.HeartbeatAck
		if err := bus.DecodeMsg(m, &ack); err != nil || ack.WorkerID != wid {
			t.Fatalf("heartbeat reply %s: %v, want an ack for %s", m.Data, err, wid)
		}
		return schemas.Reregister{}
	}
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

// Issue 16 item 3: a worker a recovery left UNKNOWN is judged once the
// cluster is ALIVE again: a heartbeat sends it to registration, silence
// makes it DEAD. While a recovery runs it is not judged. (Old main never
// judged UNKNOWN workers: one stayed UNKNOWN for minutes after a heal.)
func TestService_Worker_LeftUnknownIsJudged(t *testing.T) {
	e := newEnv(t)
	s := e.start(t, "hb-1")
	setCluster(t, e, s, schemas.ClusterRecovering, 7)
	unknown := func(id string) *schemas.Worker {
		return &schemas.Worker{ID: id, Instance: "i1", Cores: 1, MemoryMB: 64, State: schemas.WorkerUnknown, Epoch: 7, UpdatedAt: e.clock.Now()}
	}
	put(t, e.st.Workers, "beating", unknown("beating"))
	put(t, e.st.Workers, "silent", unknown("silent"))
	bustest.Eventually(t, 5*time.Second, "watcher sees both", func() bool {
		return seen(s, "beating", schemas.WorkerUnknown) && seen(s, "silent", schemas.WorkerUnknown)
	})
	agent := bustest.Conn(t, e.srv.URL())
	if rr := reply(t, agent, "beating", "i1", 7); rr != nil {
		t.Fatalf("during recovery: %+v, want no answer (the recovery asks it)", rr)
	}
	g := gen(s, "silent", false)
	e.clock.Advance(testTimeout)
	bustest.Eventually(t, 5*time.Second, "silent's deadline re-armed during recovery", func() bool { return gen(s, "silent", false) > g })
	if st := workerState(t, e, "silent"); st != schemas.WorkerUnknown {
		t.Fatalf("silent = %s during recovery, want UNKNOWN", st)
	}

	setCluster(t, e, s, schemas.ClusterAlive, 7)
	rr := reply(t, agent, "beating", "i1", 7)
	if rr == nil || !strings.Contains(rr.Reason, "left UNKNOWN") {
		t.Fatalf("after recovery: %+v, want re-register (left UNKNOWN)", rr)
	}
	e.clock.Advance(testInterval)
	bustest.Eventually(t, 5*time.Second, "silent DEAD after recovery", func() bool { return workerState(t, e, "silent") == schemas.WorkerDead })
	if st := workerState(t, e, "beating"); st != schemas.WorkerUnknown {
		t.Fatalf("beating = %s, want UNKNOWN until registration makes it ALIVE", st)
	}
}

// A worker a recovery marked UNKNOWN while this service's view still says
// ALIVE (its workers watch lags or stalls while the bus heals; simulated
// here by putting the view back) is judged once the recovery ends, on the
// record read at expiry. It used to be looked at again only when the watch
// caught up: its deadline was not re-armed.
func TestService_Worker_UnknownUnseenByTheWatchIsJudged(t *testing.T) {
	e := newEnv(t)
	s := e.start(t, "hb-1")
	setCluster(t, e, s, schemas.ClusterRecovering, 7)
	put(t, e.st.Workers, "w1", &schemas.Worker{ID: "w1", Instance: "i1", Cores: 1, MemoryMB: 64,
		State: schemas.WorkerUnknown, Epoch: 7, UpdatedAt: e.clock.Now()})
	bustest.Eventually(t, 5*time.Second, "watcher sees w1 UNKNOWN", func() bool { return seen(s, "w1", schemas.WorkerUnknown) })
	s.mu.Lock()
	s.workers["w1"].state = schemas.WorkerAlive // the view from before the marking
	s.mu.Unlock()

	g := gen(s, "w1", false)
	e.clock.Advance(testTimeout)
	bustest.Eventually(t, 5*time.Second, "w1's deadline re-armed while the recovery runs", func() bool { return gen(s, "w1", false) > g })
	if st := workerState(t, e, "w1"); st != schemas.WorkerUnknown {
		t.Fatalf("w1 = %s during recovery, want UNKNOWN", st)
	}
	setCluster(t, e, s, schemas.ClusterAlive, 7)
	bustest.Eventually(t, 5*time.Second, "w1 DEAD after the recovery", func() bool {
		e.clock.Advance(testInterval)
		return workerState(t, e, "w1") == schemas.WorkerDead
	})
}

// Issue 16 item 3: an agent behind the epoch the cluster recovered is
// asked to register again (registration's answer carries the epoch).
func TestService_Heartbeat_BehindEpoch(t *testing.T) {
	e := newEnv(t)
	s := e.start(t, "hb-1")
	put(t, e.st.Workers, "w1", alive(e.clock.Now(), "w1", "i1"))
	bustest.Eventually(t, 5*time.Second, "watcher sees w1", func() bool { return seen(s, "w1", schemas.WorkerAlive) })
	agent := bustest.Conn(t, e.srv.URL())
	setCluster(t, e, s, schemas.ClusterRecovering, 9)
	if rr := reply(t, agent, "w1", "i1", 4); rr != nil {
		t.Fatalf("during recovery: %+v, want no answer", rr)
	}
	setCluster(t, e, s, schemas.ClusterAlive, 9)
	for _, c := range []struct {
		epoch uint64
		want  bool
	}{{4, true}, {9, false}, {0, false}} {
		rr := reply(t, agent, "w1", "i1", c.epoch)
		if got := rr != nil; got != c.want {
			t.Errorf("agent on epoch %d: re-register %v (%+v), want %v", c.epoch, got, rr, c.want)
		}
	}
}

// Issue 16 items 2 and 3: an app a finished recovery left UNKNOWN comes
// back on its driver's heartbeat (RUNNING: an executor holds) and is
// FINISHED after silence.
func TestService_App_LeftUnknownIsJudged(t *testing.T) {
	e := newEnv(t)
	s := e.start(t, "hb-1")
	chatty, quiet := schemas.NewAppID(time.Now()), schemas.NewAppID(time.Now().Add(time.Second))
	for _, id := range []string{chatty, quiet} {
		put(t, e.st.Apps, id, &schemas.App{ID: id, Executor: schemas.ExecutorSpec{Cores: 1, MemoryMB: 64}, State: schemas.AppUnknown, UpdatedAt: e.clock.Now()})
	}
	x := &schemas.Executor{AppID: chatty, ID: 1, WorkerID: "w1", Cores: 1, MemoryMB: 64, State: schemas.ExecutorRunning}
	put(t, e.st.Executors, x.Key(), x)
	bustest.Eventually(t, 5*time.Second, "watcher sees the apps", func() bool { return gen(s, chatty, true) > 0 && gen(s, quiet, true) > 0 })
	setCluster(t, e, s, schemas.ClusterAlive, 3)
	driver := bustest.Conn(t, e.srv.URL())
	if err := bus.Publish(driver, bus.AppHeartbeatSubject(chatty), &schemas.AppHeartbeat{AppID: chatty}); err != nil {
		t.Fatal(err)
	}
	appState := func(id string) schemas.AppState {
		a, _, err := bus.Get[schemas.App](ctxT(t), e.st.Apps, id)
		if err != nil {
			t.Fatal(err)
		}
		return a.State
	}
	bustest.Eventually(t, 5*time.Second, "heartbeating app RUNNING", func() bool { return appState(chatty) == schemas.AppRunning })
	e.clock.Advance(testTimeout)
	bustest.Eventually(t, 5*time.Second, "silent app FINISHED", func() bool { return appState(quiet) == schemas.AppFinished })
}

// TestService_Heartbeat_AckOnlyWithQuorum (issue 16 item 7): a heartbeat is
// acknowledged only while the workers bucket's stream hears a majority of
// its replicas; with two of three nodes stopped the instance still receives
// beats on its node but acknowledges none (an agent behind it has lost the
// cluster), and acknowledges again once the nodes are back.
func TestService_Heartbeat_AckOnlyWithQuorum(t *testing.T) {
	nodes := bustest.StartCluster(t, 3)
	nc := bustest.Conn(t, nodes[0].ClientURL())
	st := bustest.StoreWith(t, nc, bus.StoreConfig{Replicas: 3})
	s, err := New(Config{NC: bustest.Conn(t, nodes[0].ClientURL()), ID: "hb-1", Log: zerolog.Nop(),
		WorkerTimeout: testTimeout, HeartbeatInterval: testInterval, Clock: svc.NewFakeClock(time.Now().UTC())})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	put(t, st.Workers, "w1", alive(time.Now().UTC(), "w1", "i1"))
	bustest.Eventually(t, 10*time.Second, "watcher sees w1", func() bool { return seen(s, "w1", schemas.WorkerAlive) })
	agent := bustest.Conn(t, nodes[0].ClientURL())
	acked := func() bool {
		inbox := agent.NewRespInbox()
		sub, err := agent.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = sub.Unsubscribe() }()
		beat(t, agent, "w1", "i1", inbox)
		m, err := sub.NextMsg(time.Second)
		if err != nil {
			return false
		}
		var ack schemas.HeartbeatAck
		return bus.DecodeMsg(m, &ack) == nil && ack.WorkerID == "w1"
	}
	bustest.Eventually(t, 10*time.Second, "a heartbeat acknowledged", acked)
	for _, nd := range nodes[1:] {
		nd.Server.Server.Stop()
	}
	// Three beats in a row unacknowledged (one alone may be lost to the
	// stopped nodes' churn).
	bustest.Eventually(t, 60*time.Second, "no acknowledgement without a quorum", func() bool {
		return !acked() && !acked() && !acked()
	})
	bustest.StartNodes(t, nodes[1:]...)
	bustest.Eventually(t, 60*time.Second, "acknowledged again after the nodes are back", acked)
}
