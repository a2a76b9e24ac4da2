package auth_test

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
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

// deniedPub waits for the server to report nc's publish to subject denied.
func deniedPub(t *testing.T, nc *nats.Conn, subject string) {
	t.Helper()
	bustest.Eventually(t, 3*time.Second, "publish to "+subject+" denied", func() bool {
		return bus.PermissionError(nc, subject, time.Time{}) != nil
	})
}

// deniedSub subscribes nc to subject and waits for the server to refuse it.
func deniedSub(t *testing.T, nc *nats.Conn, subject string) {
	t.Helper()
	if _, err := nc.SubscribeSync(subject); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 3*time.Second, "subscription to "+subject+" denied", func() bool {
		err := bus.PermissionError(nc, subject, time.Time{})
		return err != nil && strings.Contains(err.Error(), "Subscription")
	})
}

// silent checks that sub got nothing of what senders sent before: each
// sender's Flush returns after the server handled its messages, and the
// receiver's Flush after everything routed to it was read.
func silent(t *testing.T, receiver *nats.Conn, sub *nats.Subscription, senders ...*nats.Conn) {
	t.Helper()
	for _, nc := range append(senders, receiver) {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if n, _, _ := sub.Pending(); n != 0 {
		m, _ := sub.NextMsg(0)
		t.Fatalf("%s received %d message(s), first %q on %s", sub.Subject, n, m.Data, m.Subject)
	}
}

// received waits for one message on sub.
func received(t *testing.T, sub *nats.Subscription) *nats.Msg {
	t.Helper()
	m, err := sub.NextMsg(3 * time.Second)
	if err != nil {
		t.Fatalf("%s: nothing received: %v", sub.Subject, err)
	}
	return m
}

func TestSecure_AnonymousAndForeignCredentialsRefusedWithAClearError(t *testing.T) {
	s := bustest.StartSecure(t)
	other, err := auth.Generate()
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Mint(auth.RoleAdmin, "admin", 0)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := s.Keys.Mint(auth.RoleAdmin, "admin", time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	for name, creds := range map[string][]byte{"anonymous": nil, "foreign operator": foreign, "expired": expired} {
		start := time.Now()
		nc, err := bus.Connect(s.URL(), bus.ConnectOptions{Name: name, CredsData: creds, CA: s.CA})
		if err == nil {
			nc.Close()
			t.Fatalf("%s: connected", name)
		}
		if !errors.Is(err, bus.ErrAuth) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: want one-line bus.ErrAuth, got %v", name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: refused after %s, want at once", name, d)
		}
		t.Logf("%s: %v", name, err)
	}
	// Without the CA, the TLS error says which flag fixes it.
	admin, err := s.Keys.Mint(auth.RoleAdmin, "admin", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Connect(s.URL(), bus.ConnectOptions{CredsData: admin}); err == nil || !strings.Contains(err.Error(), "STOKER_TLS_CA") {
		t.Errorf("without the CA: %v", err)
	}
	// A creds file that does not exist is a clear error too.
	if _, err := bus.Connect(s.URL(), bus.ConnectOptions{Creds: t.TempDir() + "/none.creds"}); err == nil || !strings.Contains(err.Error(), "none.creds") {
		t.Errorf("missing creds file: %v", err)
	}
}

// An in-process connection (stoker up's services, the bench's simulated
// agents) is a pipe inside the process: it carries no TLS even when given
// the CA, but the server still asks for and checks its credential, and the
// connection still reaches only what its role may.
func TestSecure_InProcessConnectionsAuthenticateWithoutTLS(t *testing.T) {
	s := bustest.StartSecure(t)
	// Refused, though not with the auth error a TCP client gets: nats.go
	// writes CONNECT and PING separately, and over the unbuffered pipe the
	// server's -ERR and the client's PING wait for each other until the
	// client's 5 s connect deadline. Only code holding the server can open
	// such a connection; stoker's own mint their credentials.
	start := time.Now()
	nc, err := bus.Connect("", bus.ConnectOptions{Name: "anonymous", Server: s.Server, CA: s.CA})
	t.Logf("anonymous: %v after %s", err, time.Since(start))
	if err == nil || !strings.Contains(err.Error(), "in-process bus") {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("anonymous in-process: %v", err)
	}
	agent, err := bus.Connect("", bus.ConnectOptions{Name: "in-process-agent", Server: s.Server,
		CredsData: s.Creds(t, auth.RoleAgent, "w-1"), CA: s.CA})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	if _, err := agent.TLSConnectionState(); !errors.Is(err, nats.ErrConnectionNotTLS) {
		t.Errorf("in-process connection: TLS state %v, want no TLS", err)
	}
	// Its role still binds it: an agent may not publish another's heartbeats.
	if err := agent.Publish(bus.WorkerHeartbeatSubject("w-2"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	deniedPub(t, agent, bus.WorkerHeartbeatSubject("w-2"))
	// Over TCP the same credential gets TLS.
	tcp, err := bus.Connect(s.URL(), bus.ConnectOptions{Name: "tcp-agent",
		CredsData: s.Creds(t, auth.RoleAgent, "w-1"), CA: s.CA})
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	if _, err := tcp.TLSConnectionState(); err != nil {
		t.Errorf("TCP connection: %v, want TLS", err)
	}
}

func TestSecure_AgentCannotActForAnotherAgentNorTouchJetStream(t *testing.T) {
	s := bustest.StartSecure(t)
	a := s.ConnAs(t, auth.RoleAgent, "wa")
	b := s.ConnAs(t, auth.RoleAgent, "wb")
	admin := s.ConnAs(t, auth.RoleAdmin, "admin")
	sched := s.ConnAs(t, auth.RoleScheduler, "sched-1")

	spy, err := admin.SubscribeSync("stoker.worker.wb.>")
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"register", "heartbeat", "state", "leave"} {
		subj := "stoker.worker.wb." + verb
		if err := a.Publish(subj, []byte("forged")); err != nil {
			t.Fatal(err)
		}
		deniedPub(t, a, subj)
	}
	silent(t, admin, spy, a)
	// wb's own heartbeat goes through (the template expands to its name).
	if err := b.Publish("stoker.worker.wb.heartbeat", []byte("real")); err != nil {
		t.Fatal(err)
	}
	if m := received(t, spy); string(m.Data) != "real" {
		t.Fatalf("got %q", m.Data)
	}

	// a cannot listen to b's commands or logs requests.
	for _, subj := range []string{"stoker.worker.wb.cmd.launch", "stoker.worker.wb.cmd.>", "stoker.worker.wb.logs", "stoker.worker.*.cmd.>", ">"} {
		deniedSub(t, a, subj)
	}
	// a cannot forge a command to b either.
	bCmd, err := b.SubscribeSync("stoker.worker.wb.cmd.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish("stoker.worker.wb.cmd.launch", []byte(`{"epoch":999999}`)); err != nil {
		t.Fatal(err)
	}
	deniedPub(t, a, "stoker.worker.wb.cmd.launch")
	silent(t, b, bCmd, a)
	// The scheduler's does arrive.
	if err := sched.Publish("stoker.worker.wb.cmd.launch", []byte("x")); err != nil {
		t.Fatal(err)
	}
	received(t, bCmd)

	// No KV, no streams, no JetStream API at all.
	js, err := jetstream.New(a)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err == nil {
		t.Error("agent read JetStream account info")
	}
	if _, err := js.KeyValue(ctx, bus.BucketWorkers); err == nil {
		t.Error("agent opened the workers bucket")
	}
	for _, subj := range []string{"$KV.stoker-workers.wa", "$JS.API.STREAM.NAMES", "$JS.API.DIRECT.GET.KV_stoker-workers"} {
		if err := a.Publish(subj, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		deniedPub(t, a, subj)
	}
}

func TestSecure_OnlySchedulerAndRecoveryCommandsReachAnAgent(t *testing.T) {
	s := bustest.StartSecure(t)
	agent := s.ConnAs(t, auth.RoleAgent, "w1")
	cmds, err := agent.SubscribeSync(bus.WorkerCmdSubjects("w1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Flush(); err != nil {
		t.Fatal(err)
	}
	subj := bus.WorkerCmdLaunchSubject("w1")
	for _, r := range auth.Roles {
		name := "w2"
		if r == auth.RoleApp {
			name = schemas.NewAppID(time.Now())
		}
		nc := s.ConnAs(t, r, name)
		if err := nc.Publish(subj, []byte(string(r))); err != nil {
			t.Fatal(err)
		}
		if r == auth.RoleScheduler || r == auth.RoleRecovery {
			if m := received(t, cmds); string(m.Data) != string(r) {
				t.Fatalf("got %q from %s", m.Data, r)
			}
			continue
		}
		deniedPub(t, nc, subj)
		silent(t, agent, cmds, nc)
	}
}

func TestSecure_ViewerReadsButCannotSubmitRunKillOrMakeJetStreamDeliver(t *testing.T) {
	s := bustest.StartSecure(t)
	admin := s.ConnAs(t, auth.RoleAdmin, "admin")
	reg := s.ConnAs(t, auth.RoleRegistration, "reg-1")
	viewer := s.ConnAs(t, auth.RoleViewer, "alice")
	agent := s.ConnAs(t, auth.RoleAgent, "w1")

	// A registration stand-in answers every API subject.
	if _, err := reg.QueueSubscribe("stoker.api.>", "q", func(m *nats.Msg) { _ = m.Respond([]byte{}) }); err != nil {
		t.Fatal(err)
	}
	if err := reg.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, subj := range []string{bus.APIWorkersList, bus.APIDriversList, bus.APIAppsList, bus.APIStatus} {
		if err := bus.Call(ctx, viewer, subj, &schemas.ListRequest{}, nil); err != nil {
			t.Errorf("viewer %s: %v", subj, err)
		}
	}
	for _, subj := range []string{bus.APIDriversSubmit, bus.APIDriversKill, bus.APIAppsKill, bus.APIAppsRegister,
		bus.APIAppsUnregister, bus.APITokensCreate} {
		start := time.Now()
		err := bus.Call(ctx, viewer, subj, &schemas.ListRequest{}, nil)
		if !errors.Is(err, bus.ErrDenied) {
			t.Errorf("viewer %s: want ErrDenied, got %v", subj, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("viewer %s: denied after %s, want at once", subj, d)
		}
	}

	// Read-only KV by direct get.
	js, _ := jetstream.New(admin)
	st, err := bus.Provision(ctx, js, bus.StoreConfig{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Workers.Put(ctx, "w1", []byte(`{"id":"w1"}`)); err != nil {
		t.Fatal(err)
	}
	vjs, _ := jetstream.New(viewer)
	kv, err := vjs.KeyValue(ctx, bus.BucketWorkers)
	if err != nil {
		t.Fatalf("viewer opens the workers bucket: %v", err)
	}
	if e, err := kv.Get(ctx, "w1"); err != nil || string(e.Value()) != `{"id":"w1"}` {
		t.Fatalf("viewer get: %v", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancelShort()
	if _, err := kv.Put(short, "w1", []byte("x")); err == nil {
		t.Error("viewer wrote the workers bucket")
	}

	// SECURITY-NOTES trap 9: a consumer's deliver subject is not checked
	// against its creator's permissions. A viewer may create none.
	cmds, err := agent.SubscribeSync(bus.WorkerCmdSubjects("w1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Flush(); err != nil {
		t.Fatal(err)
	}
	_, err = vjs.CreateConsumer(short, "KV_"+bus.BucketWorkers, jetstream.ConsumerConfig{})
	if err == nil {
		t.Error("viewer created a consumer")
	}
	// The legacy API with a push deliver subject onto the agent's commands.
	req := `{"stream_name":"KV_stoker-workers","config":{"deliver_subject":"stoker.worker.w1.cmd.launch","ack_policy":"none","deliver_policy":"all"}}`
	for _, subj := range []string{"$JS.API.CONSUMER.CREATE.KV_stoker-workers", "$JS.API.CONSUMER.CREATE.KV_stoker-workers.evil",
		"$JS.API.CONSUMER.DURABLE.CREATE.KV_stoker-workers.evil"} {
		if err := viewer.Publish(subj, []byte(req)); err != nil {
			t.Fatal(err)
		}
		deniedPub(t, viewer, subj)
	}
	silent(t, agent, cmds, viewer)
}

func TestSecure_AppConfinedToItsOwnSubjects(t *testing.T) {
	s := bustest.StartSecure(t)
	idA, idB := "app-20260101000000-aaaaaa", "app-20260101000000-bbbbbb"
	a := s.ConnAs(t, auth.RoleApp, idA)
	b := s.ConnAs(t, auth.RoleApp, idB)
	admin := s.ConnAs(t, auth.RoleAdmin, "admin")

	spy, err := admin.SubscribeSync("stoker.app." + idB + ".>")
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{bus.AppExecutorsStopSubject(idB), bus.AppHeartbeatSubject(idB),
		bus.AppUnregisterSubject(idB), bus.AppRegisterSubject(idB), bus.AppExecutorTaskSubject(idB, 0)} {
		if err := a.Publish(subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
		deniedPub(t, a, subj)
	}
	silent(t, admin, spy, a)
	for _, subj := range []string{bus.APIAppsKill, bus.APIDriversKill, bus.APIAppsUnregister, bus.APIDriversSubmit, bus.APIAppsRegister} {
		if err := a.Publish(subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
		deniedPub(t, a, subj)
	}
	for _, subj := range []string{"stoker.app." + idB + ".>", bus.AppExecutorTaskSubject(idB, 0), "stoker.app.*.>", "_INBOX_app_" + idB + ".>"} {
		deniedSub(t, a, subj)
	}
	// Its own traffic flows, executor to driver and back.
	drv, err := b.Subscribe(bus.AppExecutorsRegisterSubject(idB), func(m *nats.Msg) { _ = m.Respond([]byte("ok")) })
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Unsubscribe()
	if err := b.Flush(); err != nil { // the subscription is on the server before anyone asks
		t.Fatal(err)
	}
	exec := s.ConnAs(t, auth.RoleApp, idB)
	if _, err := exec.Request(bus.AppExecutorsRegisterSubject(idB), []byte("hi"), 3*time.Second); err != nil {
		t.Fatalf("executor → its driver: %v", err)
	}
}

func TestSecure_JoinCredentialOnlyAsksToJoin(t *testing.T) {
	s := bustest.StartSecure(t)
	j := s.ConnAs(t, auth.RoleJoin, "tok-1")
	for _, subj := range []string{bus.WorkerRegisterSubject("w1"), bus.APITokensCreate, bus.APIWorkersList, "$JS.API.INFO"} {
		if err := j.Publish(subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
		deniedPub(t, j, subj)
	}
	deniedSub(t, j, ">")
}

// The server's DISCONNECT advisories reach the scheduler and heartbeat
// roles as bus.ConnClosed, naming the closed connection as the holder saw
// it and the signed user name and role; other roles may not read them.
func TestSecure_ConnClosedEvents(t *testing.T) {
	s := bustest.StartSecure(t)
	for _, r := range []auth.Role{auth.RoleScheduler, auth.RoleHeartbeat} {
		t.Run(string(r), func(t *testing.T) {
			watcher := s.ConnAs(t, r, string(r))
			got := make(chan bus.Closed, 16)
			if _, err := bus.OnClosed(watcher, func(c bus.Closed) { got <- c }); err != nil {
				t.Fatal(err)
			}
			if err := watcher.Flush(); err != nil {
				t.Fatal(err)
			}
			agent, err := bus.Connect(s.URL(), bus.ConnectOptions{Name: "pretends-to-be-someone", CredsData: s.Creds(t, auth.RoleAgent, "w-1"), CA: s.CA})
			if err != nil {
				t.Fatal(err)
			}
			ref := bus.Ref(agent)
			if ref.Zero() {
				t.Fatal("no connection reference for a connected client")
			}
			agent.Close()
			select {
			case c := <-got:
				if c.Conn != ref || c.User != "w-1" || c.Role != string(auth.RoleAgent) {
					t.Fatalf("closed event %+v, want conn %+v user w-1 role agent", c, ref)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no DISCONNECT event for the agent's connection")
			}
		})
	}
	for _, r := range []auth.Role{auth.RoleAgent, auth.RoleViewer, auth.RoleApp, auth.RoleRecovery} {
		deniedSub(t, s.ConnAs(t, r, "app-x"+string(r)), bus.ConnClosed)
	}
}
