package agent

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/bus"
)

// TestService_BadPayloads_AnsweredAndServing sends malformed msgpack,
// malformed JSON, a wrong type name and invalid fields to every subject the
// agent answers: each gets a 400 error reply and the agent keeps serving.
func TestService_BadPayloads_AnsweredAndServing(t *testing.T) {
	e := newEnv(t)
	s := startAgent(t, e.srv.URL(), nil)
	waitRegistered(t, s)
	subjects := []string{
		bus.WorkerCmdLaunchSubject(testWID), bus.WorkerCmdLaunchExecutorsSubject(testWID), bus.WorkerCmdLaunchDriverSubject(testWID),
		bus.WorkerCmdKillSubject(testWID), bus.WorkerCmdKillExecutorsSubject(testWID), bus.WorkerCmdMasterSubject(testWID), bus.WorkerLogsSubject(testWID),
	}
	payloads := []struct {
		name string
		data []byte
		json bool
	}{
		{"garbage msgpack", []byte{0xc1, 0x00, 0xff}, false},
		{"truncated msgpack", []byte{0x85, 0xa4, 't'}, false},
		{"garbage json", []byte(`{"epoch":`), true},
		{"wrong type", []byte(`{"type":"io.stoker.v1.heartbeat"}`), true},
		{"invalid fields", []byte(`{"epoch":0,"app_id":"nope","driver_id":"nope","id":"x"}`), true},
	}
	for _, subj := range subjects {
		for _, p := range payloads {
			m := &nats.Msg{Subject: subj, Data: p.data, Header: nats.Header{}}
			if p.json {
				m.Header.Set(bus.ContentType, bus.ContentTypeJSON)
			}
			r, err := e.nc.RequestMsg(m, 5*time.Second)
			if err != nil {
				t.Fatalf("%s / %s: no reply: %v", subj, p.name, err)
			}
			if code := r.Header.Get(bus.ErrorCodeHeader); code != "400" {
				t.Fatalf("%s / %s: code %q (%s), want 400", subj, p.name, code, r.Header.Get(bus.ErrorHeader))
			}
		}
	}
	// Still serving: a real launch runs.
	app := newAppID()
	if ack := launchExecutor(t, e.nc, app, 0, "exit 0"); !ack.OK {
		t.Fatalf("launch after bad input: %+v", ack)
	}
	e.c.waitReport(app+".0", "EXITED")
}
