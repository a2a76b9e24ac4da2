package scheduler

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/services/svc"
)

// announcer keeps the scheduler's micro service, whose metadata says
// whether this instance leads and with which epoch ({"id", "leader",
// "epoch"}; epoch 0 on a standby), and whose one endpoint, the leader's
// only, is its status (bus.SchedulerStatus). Micro metadata is fixed at AddService,
// so the service is re-created on every leadership change: otherwise
// `nats micro info stoker-scheduler` could not show one.
type announcer struct {
	nc *nats.Conn
	id string
	// status serves bus.SchedulerStatus, an endpoint of the leader's
	// service only (nil: none).
	status micro.Handler

	mu        sync.Mutex
	svc       micro.Service
	announced string // "<leader>/<epoch>" the running service says
	stopped   bool   // no re-creation after stop
}

// announce (re)creates the micro service if leadership differs from what
// it says. Callers pass the state they read now, not the state of an
// event, so calls racing around a change converge on the latest.
func (a *announcer) announce(leader bool, epoch uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := fmt.Sprintf("%t/%d", leader, epoch)
	if a.stopped || (a.svc != nil && a.announced == key) {
		return nil
	}
	if a.svc != nil {
		// micro's Stop can fail part way (a drain refused while the
		// connection reconnects) and leave the old service answering
		// beside the new one: two answers from one process, the second
		// refused by the one-reply response permission. Keep the old one
		// and let the caller try again.
		if err := a.svc.Stop(); err != nil {
			return fmt.Errorf("stop the micro service announcing %s: %w", a.announced, err)
		}
		a.svc = nil
	}
	m, err := micro.AddService(a.nc, micro.Config{
		Name:        bus.ServiceScheduler,
		Version:     svc.Version,
		Description: "Stoker scheduler: places drivers and executors while it holds the lease",
		Metadata: map[string]string{
			"id": a.id, "leader": strconv.FormatBool(leader), "epoch": strconv.FormatUint(epoch, 10),
		},
	})
	if err != nil {
		return err
	}
	if leader && a.status != nil {
		if err := m.AddEndpoint("status", a.status, micro.WithEndpointSubject(bus.SchedulerStatus)); err != nil {
			_ = m.Stop()
			return fmt.Errorf("add endpoint %s: %w", bus.SchedulerStatus, err)
		}
	}
	a.svc, a.announced = m, key
	return nil
}

// freeze stops re-creation (while stepping down on Stop), keeping the
// running service.
func (a *announcer) freeze() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopped = true
}

// stop stops the micro service for good.
func (a *announcer) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopped = true
	if a.svc != nil {
		_ = a.svc.Stop()
		a.svc = nil
	}
}
