package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

func TestDefaultWorkerID_UniquePerWorkDirAndKept(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	idA, err := DefaultWorkerID(a)
	if err != nil {
		t.Fatal(err)
	}
	idB, err := DefaultWorkerID(b)
	if err != nil {
		t.Fatal(err)
	}
	if idA == idB {
		t.Fatalf("two work dirs on one host got the same default id %q", idA)
	}
	host, _ := os.Hostname()
	if !strings.HasPrefix(idA, schemas.SanitizeID(host)+"-") || schemas.ValidID("worker", idA) != nil {
		t.Fatalf("default id %q: want the hostname plus a suffix, valid", idA)
	}
	again, err := DefaultWorkerID(a)
	if err != nil || again != idA {
		t.Fatalf("restart in the same work dir: id %q (%v), want %q kept", again, err, idA)
	}
	if err := os.WriteFile(filepath.Join(a, WorkerIDFile), []byte("a.b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := DefaultWorkerID(a); err == nil || !strings.Contains(err.Error(), "--id") {
		t.Fatalf("an invalid kept id: %v, want an error that says how to fix it", err)
	}
}

// A second live agent under an id already held is refused at Start, with
// the first named (host, pid, since), and never subscribes to commands.
func TestService_Start_SecondLiveInstanceRefused(t *testing.T) {
	e := newEnv(t)
	first := startAgent(t, e.srv.URL(), func(c *Config) { c.PID = 4242 })
	waitRegistered(t, first)

	second, err := New(Config{NC: bustest.Conn(t, e.srv.URL()), Log: zerolog.New(zerolog.NewTestWriter(t)),
		NATSURL: e.srv.URL(), WorkerID: testWID, Host: "other-host", Cores: 1, MemoryMB: 512,
		WorkDir: t.TempDir(), PingWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	err = second.Start(context.Background())
	t.Cleanup(second.Stop)
	var held *HeldError
	if !errors.As(err, &held) || held.Holder == nil {
		t.Fatalf("second Start: %v, want a *HeldError naming the first", err)
	}
	if held.Holder.Instance != first.Instance() || held.Holder.PID != 4242 || held.Holder.Host != "test-host" {
		t.Fatalf("holder %+v, want the first instance %s (pid 4242, test-host)", held.Holder, first.Instance())
	}
	for _, want := range []string{"test-host", "pid 4242", "since", "--id"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// Only the first answers a launch: one responder, one reply.
	sub, err := e.nc.SubscribeSync(e.nc.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := bus.Encode(&schemas.LaunchExecutor{AppID: newAppID(), ExecutorID: 0, Command: sh("sleep 30"), Cores: 1, MemoryMB: 256}, bus.Msgpack)
	m := &nats.Msg{Subject: bus.WorkerCmdLaunchSubject(testWID), Reply: sub.Subject, Data: req, Header: nats.Header{}}
	m.Header.Set(bus.ContentType, bus.ContentTypeMsgpack)
	if err := e.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("the first agent did not answer the launch: %v", err)
	}
	if extra, err := sub.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatalf("a second agent answered the launch: %s", extra.Data)
	}
	if len(e.c.registrations()) != 1 {
		t.Fatalf("%d registrations, want only the first agent's", len(e.c.registrations()))
	}
}

// An instance the cluster says was replaced (registration answers 409)
// stops acting on commands at once: its children are killed, it answers
// no launch, and Done/Err say why.
func TestService_Replaced_StopsActingAtOnce(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	app := newAppID()
	launchExecutor(t, e.nc, app, 0, "sleep 30")
	running := e.c.waitReport(schemas.ExecutorKey(app, 0), "RUNNING")

	e.c.set(func(c *cluster) {
		c.refuseReg = "a newer agent instance on host h2 (pid 7) registered worker w1"
		c.hbReply = func(hb *schemas.Heartbeat) *schemas.Reregister {
			return &schemas.Reregister{WorkerID: hb.WorkerID, Reason: "another instance holds the worker"}
		}
	})
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the replaced agent did not stop")
	}
	var held *HeldError
	if !errors.As(s.Err(), &held) || !held.Replaced || !strings.Contains(s.Err().Error(), "h2") {
		t.Fatalf("Err %v, want a replaced *HeldError naming the newer instance", s.Err())
	}
	bustest.Eventually(t, 10*time.Second, "the executor killed", func() bool { return !alive(running.PID) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var ack schemas.Ack
	err := bus.Call(ctx, e.nc, bus.WorkerCmdLaunchSubject(testWID),
		&schemas.LaunchExecutor{AppID: app, ExecutorID: 1, Command: sh("sleep 30"), Cores: 1, MemoryMB: 256}, &ack)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("a launch to the replaced agent: %v, want no responders", err)
	}
}
