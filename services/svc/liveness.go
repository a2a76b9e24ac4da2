package svc

import (
	"fmt"
	"time"
)

// Liveness defaults, as Spark's worker timeout is a multiple of its
// heartbeat: agents heartbeat every second and are DEAD after five silent ones.
const (
	DefaultHeartbeatInterval = time.Second
	DefaultWorkerTimeout     = 5 * time.Second
)

// LivenessTimings fills zero values with the defaults and checks that the
// worker timeout is longer than the heartbeat interval. what names the
// caller in errors.
func LivenessTimings(what string, heartbeat, timeout *time.Duration) error {
	if *heartbeat == 0 {
		*heartbeat = DefaultHeartbeatInterval
	}
	if *timeout == 0 {
		*timeout = DefaultWorkerTimeout
	}
	if *heartbeat < 0 || *timeout < 0 {
		return fmt.Errorf("%s: durations must be positive", what)
	}
	if *timeout <= *heartbeat {
		return fmt.Errorf("%s: worker timeout %s must be longer than the heartbeat interval %s", what, *timeout, *heartbeat)
	}
	return nil
}
