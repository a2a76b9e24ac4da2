package scheduler

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// gather publishes a request on subj and returns every answer that comes
// within 300 ms of the one before.
func gather(t *testing.T, nc *nats.Conn, subj string, data []byte) []*nats.Msg {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subj, inbox, data); err != nil {
		t.Fatal(err)
	}
	var out []*nats.Msg
	for {
		m, err := sub.NextMsg(300 * time.Millisecond)
		if err != nil {
			return out
		}
		out = append(out, m)
	}
}

// schedulerInfos asks every stoker-scheduler instance for its micro info,
// as `nats micro info stoker-scheduler` does, keyed by the "id" metadata.
func schedulerInfos(t *testing.T, nc *nats.Conn) map[string]micro.Info {
	t.Helper()
	subj, err := micro.ControlSubject(micro.InfoVerb, bus.ServiceScheduler, "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]micro.Info{}
	for _, m := range gather(t, nc, subj, nil) {
		var info micro.Info
		if err := json.Unmarshal(m.Data, &info); err != nil {
			t.Fatalf("info reply: %v", err)
		}
		out[info.Metadata["id"]] = info
	}
	return out
}

func TestService_Micro_MetadataFollowsLeadership(t *testing.T) {
	c := newCluster(t)
	s1 := c.scheduler("s1", nil)
	bustest.Eventually(t, 10*time.Second, "s1 leads", s1.IsLeader)
	s2 := c.scheduler("s2", nil)

	want := func(id string, leader bool, epoch uint64) func() bool {
		return func() bool {
			info, ok := schedulerInfos(t, c.nc)[id]
			return ok && info.Version == svc.Version &&
				info.Metadata["leader"] == fmt.Sprint(leader) && info.Metadata["epoch"] == fmt.Sprint(epoch)
		}
	}
	epoch1 := s1.Epoch()
	bustest.Eventually(t, 10*time.Second, "s1 announces leader=true with its epoch", want("s1", true, epoch1))
	bustest.Eventually(t, 10*time.Second, "s2 announces leader=false, epoch 0", want("s2", false, 0))

	s1.Stop()
	bustest.Eventually(t, 10*time.Second, "s2 leads", s2.IsLeader)
	bustest.Eventually(t, 10*time.Second, "s2 announces leader=true with the new epoch", want("s2", true, s2.Epoch()))
	bustest.Eventually(t, 10*time.Second, "s1's micro service is gone", func() bool {
		_, ok := schedulerInfos(t, c.nc)["s1"]
		return !ok
	})
	if infos := schedulerInfos(t, c.nc); len(infos) != 1 {
		t.Fatalf("want one scheduler instance answering, got %d: %v", len(infos), infos)
	}
}

// schedulerStatuses asks bus.SchedulerStatus and gathers every answer.
func schedulerStatuses(t *testing.T, nc *nats.Conn) []schemas.SchedulerStatus {
	t.Helper()
	b, err := bus.Encode(&schemas.ListRequest{}, bus.Msgpack)
	if err != nil {
		t.Fatal(err)
	}
	var out []schemas.SchedulerStatus
	for _, m := range gather(t, nc, bus.SchedulerStatus, b) {
		var st schemas.SchedulerStatus
		if err := bus.Decode(m.Data, bus.FormatOf(m.Header), &st); err != nil {
			t.Fatalf("status reply: %v (%s)", err, m.Data)
		}
		out = append(out, st)
	}
	return out
}

// The leader, and only the leader, says its pace: the window, what is in
// flight, its epoch; a standby that takes over answers in its place.
func TestService_Status_LeaderOnly(t *testing.T) {
	c := newCluster(t)
	c.agent("w1")
	c.worker("w1", 4)
	c.app("app-1", schemas.AppWaiting, 3)
	s1 := c.scheduler("s1", nil)
	bustest.Eventually(t, 10*time.Second, "s1 leads", s1.IsLeader)
	s2 := c.scheduler("s2", nil)
	var st []schemas.SchedulerStatus
	bustest.Eventually(t, 10*time.Second, "the leader's status counts 3 executors launching", func() bool {
		st = schedulerStatuses(t, c.nc)
		return len(st) == 1 && st[0].Launching == 3
	})
	got := st[0]
	if got.ID != "s1" || got.Epoch != s1.Epoch() || got.Window != MinInFlight || got.MaxInFlight != DefaultMaxInFlight ||
		got.FlowTargetMS != DefaultFlowTarget.Milliseconds() || got.Passes == 0 || got.Killing != 0 {
		t.Fatalf("status %+v, want s1 at epoch %d, window %d of %d, target %s, passes run", got, s1.Epoch(), MinInFlight, DefaultMaxInFlight, DefaultFlowTarget)
	}
	s1.Stop()
	bustest.Eventually(t, 10*time.Second, "s2 leads", s2.IsLeader)
	bustest.Eventually(t, 10*time.Second, "s2 answers the status alone", func() bool {
		st = schedulerStatuses(t, c.nc)
		return len(st) == 1 && st[0].ID == "s2" && st[0].Epoch == s2.Epoch()
	})
}

// With a constant window (a negative flow target) the window is
// --max-in-flight and no target is reported.
func TestService_Status_ConstantWindow(t *testing.T) {
	c := newCluster(t)
	s := c.scheduler("s1", func(cfg *Config) { cfg.FlowTarget, cfg.MaxInFlight = -1, 100 })
	bustest.Eventually(t, 10*time.Second, "s1 leads", s.IsLeader)
	var st []schemas.SchedulerStatus
	bustest.Eventually(t, 10*time.Second, "the leader answers", func() bool {
		st = schedulerStatuses(t, c.nc)
		return len(st) == 1
	})
	if got := st[0]; got.Window != 100 || got.MaxInFlight != 100 || got.FlowTargetMS != 0 || got.WindowRounds != 0 {
		t.Fatalf("status %+v, want a constant window of 100", got)
	}
}
