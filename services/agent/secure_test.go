package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

// secureEnv is a secured bus with a registration stand-in and an agent on
// its own agent credential that trusts only scheduler and recovery inboxes.
func secureEnv(t *testing.T) (*bustest.Server, *Service) {
	t.Helper()
	srv := bustest.StartSecure(t)
	startCluster(t, srv.ConnAs(t, auth.RoleRegistration, "reg-1"))
	hb := srv.ConnAs(t, auth.RoleHeartbeat, "hb-1")
	if _, err := hb.Subscribe(bus.WorkerHeartbeat, func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	s := startAgent(t, srv.URL(), func(c *Config) {
		c.NC = srv.ConnAs(t, auth.RoleAgent, testWID)
		c.CommandReplyPrefixes = auth.CommandReplyPrefixes
	})
	waitRegistered(t, s)
	return srv, s
}

// TestService_Secure_CommandsOnlyFromSchedulerOrRecoveryInboxes: a launch
// that JetStream delivers onto the agent's command subject (a consumer's
// deliver subject is not checked against its creator's permissions,
// SECURITY-NOTES trap 9) is dropped; the scheduler's is run, and the app
// credential it carries reaches the child as a 0600 file in STOKER_CREDS.
func TestService_Secure_CommandsOnlyFromSchedulerOrRecoveryInboxes(t *testing.T) {
	srv, s := secureEnv(t)
	app := newAppID()
	admin := srv.ConnAs(t, auth.RoleAdmin, "admin")
	js, _ := jetstream.New(admin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "evil", Subjects: []string{"evil.>"}}); err != nil {
		t.Fatal(err)
	}
	forged := &schemas.LaunchExecutor{Epoch: 0, AppID: app, ExecutorID: 9, Command: sh("echo forged"), Cores: 1, MemoryMB: 1}
	b, _ := bus.Encode(forged, bus.JSON)
	if _, err := js.Publish(ctx, "evil.x", b); err != nil {
		t.Fatal(err)
	}
	// A push consumer delivering onto the agent's launch subject.
	req := `{"stream_name":"evil","config":{"deliver_subject":"` + bus.WorkerCmdLaunchSubject(testWID) + `","ack_policy":"none","deliver_policy":"all"}}`
	if _, err := admin.Request("$JS.API.CONSUMER.CREATE.evil", []byte(req), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 5*time.Second, "the JetStream-delivered launch dropped", func() bool { return s.Untrusted() >= 1 })
	if _, err := os.Stat(filepath.Join(s.cfg.WorkDir, app, "9")); err == nil {
		t.Fatal("the forged launch ran")
	}

	// The scheduler's launch runs, with the app's credential.
	sched := srv.ConnAs(t, auth.RoleScheduler, "sched-1")
	creds := srv.Creds(t, auth.RoleApp, app)
	var ack schemas.Ack
	err := bus.Call(ctx, sched, bus.WorkerCmdLaunchSubject(testWID), &schemas.LaunchExecutor{Epoch: 0, AppID: app, ExecutorID: 1,
		Command: sh(`cat "$STOKER_CREDS" > creds.copy; echo "$STOKER_CREDS" > where`), Cores: 1, MemoryMB: 1, Creds: string(creds)}, &ack)
	if err != nil || !ack.OK {
		t.Fatalf("scheduler launch: %v %+v", err, ack)
	}
	dir := filepath.Join(s.cfg.WorkDir, app, "1")
	waitFileContains(t, filepath.Join(dir, "where"), credsFile)
	fi, err := os.Stat(filepath.Join(dir, credsFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("creds file: %v mode %v", err, fi.Mode())
	}
	waitFileContains(t, filepath.Join(dir, "creds.copy"), strings.TrimSpace(strings.Split(string(creds), "\n")[1]))
}

// TestService_Secure_ForgedEpochCannotLockTheAgentOut: a scheduler-role
// message with an epoch no lease issued is refused, and the real
// scheduler's next launch in the current epoch still runs.
func TestService_Secure_ForgedEpochCannotLockTheAgentOut(t *testing.T) {
	srv, s := secureEnv(t)
	sched := srv.ConnAs(t, auth.RoleScheduler, "sched-1")
	app := newAppID()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ack schemas.Ack
	err := bus.Call(ctx, sched, bus.WorkerCmdLaunchSubject(testWID), &schemas.LaunchExecutor{Epoch: 999999, AppID: app, ExecutorID: 0,
		Command: sh("sleep 30"), Cores: 1, MemoryMB: 1}, &ack)
	if err == nil || !strings.Contains(err.Error(), "unknown epoch") {
		t.Fatalf("epoch 999999 launch: %v %+v", err, ack)
	}
	if s.Epoch() != 0 {
		t.Fatalf("epoch raised to %d by a launch", s.Epoch())
	}
	if err := bus.Call(ctx, sched, bus.WorkerCmdLaunchSubject(testWID), &schemas.LaunchExecutor{Epoch: 0, AppID: app, ExecutorID: 1,
		Command: sh("sleep 30"), Cores: 1, MemoryMB: 1}, &ack); err != nil || !ack.OK {
		t.Fatalf("real launch after the forged one: %v %+v", err, ack)
	}
	// An agent credential cannot even send it (permissions).
	other := srv.ConnAs(t, auth.RoleAgent, "w2")
	err = bus.Call(ctx, other, bus.WorkerCmdLaunchSubject(testWID), &schemas.LaunchExecutor{Epoch: 999999, AppID: app, ExecutorID: 2,
		Command: sh("sleep 30"), Cores: 1, MemoryMB: 1}, &ack)
	if err == nil || !strings.Contains(err.Error(), "permission") {
		t.Fatalf("launch from another agent: %v", err)
	}
}

// TestService_Secure_HeartbeatAnswersNeverRefused: the heartbeat service
// may answer each beat once (its response permission). Beats that shared
// one reply subject made a late second answer a permissions violation on
// the heartbeat service's connection (seen by the hundred when many agents
// registered at once); each beat now has its own reply subject.
func TestService_Secure_HeartbeatAnswersNeverRefused(t *testing.T) {
	srv := bustest.StartSecure(t)
	startCluster(t, srv.ConnAs(t, auth.RoleRegistration, "reg-1"))
	hb := srv.ConnAs(t, auth.RoleHeartbeat, "hb-1")
	violations := make(chan error, 100)
	hb.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err })
	beats := make(chan *nats.Msg, 100)
	if _, err := hb.ChanSubscribe(bus.WorkerHeartbeat, beats); err != nil {
		t.Fatal(err)
	}
	s := startAgent(t, srv.URL(), func(c *Config) {
		c.NC = srv.ConnAs(t, auth.RoleAgent, testWID)
		c.CommandReplyPrefixes = auth.CommandReplyPrefixes
	})
	waitRegistered(t, s)
	// Answer in batches of three, each answer after the next beats arrived:
	// a slow heartbeat service, as under load.
	for round := 0; round < 3; round++ {
		var batch []*nats.Msg
		for len(batch) < 3 {
			select {
			case m := <-beats:
				batch = append(batch, m)
			case <-time.After(5 * time.Second):
				t.Fatal("no heartbeat")
			}
		}
		for _, m := range batch {
			b, _ := bus.Encode(&schemas.Reregister{WorkerID: testWID, Reason: "test"}, bus.JSON)
			if err := m.Respond(b); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := hb.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-violations:
		t.Fatalf("the server refused an answer to a heartbeat: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
}
