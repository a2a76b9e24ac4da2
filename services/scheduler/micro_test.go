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
	"github.com/stoker/stoker/services/svc"
)

// schedulerInfos asks every stoker-scheduler instance for its micro info,
// as `nats micro info stoker-scheduler` does, keyed by the "id" metadata.
func schedulerInfos(t *testing.T, nc *nats.Conn) map[string]micro.Info {
	t.Helper()
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	subj, err := micro.ControlSubject(micro.InfoVerb, bus.ServiceScheduler, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest(subj, inbox, nil); err != nil {
		t.Fatal(err)
	}
	out := map[string]micro.Info{}
	for {
		m, err := sub.NextMsg(300 * time.Millisecond)
		if err != nil {
			return out
		}
		var info micro.Info
		if err := json.Unmarshal(m.Data, &info); err != nil {
			t.Fatalf("info reply: %v", err)
		}
		out[info.Metadata["id"]] = info
	}
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
