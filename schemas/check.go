package schemas

import (
	"errors"
	"fmt"
	"slices"
)

// ErrImpossible is wrapped by every invariant a stored record breaks. Such a
// record was written by something other than the services (a `nats kv put`,
// a bug, a disk): readers skip it, report it, and never act on it.
var ErrImpossible = errors.New("impossible record")

func impossible(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrImpossible, fmt.Sprintf(format, args...))
}

// Checker is a KV record that can tell whether it is possible under key.
// Each record type's Check lives here, next to the validation of the
// requests that create it: the one place the invariants of stored state
// are written.
type Checker interface {
	Check(key string) error
}

// checkKnown reports a state outside the record's state machine.
func checkKnown[S ~string](what string, s S, states []S) error {
	if !slices.Contains(states, s) {
		return impossible("%s state %q is not one of %v", what, s, states)
	}
	return nil
}

// checkID reports an id that is invalid or differs from the record's key.
func checkID(valid func(string) error, key, id string) error {
	if err := valid(id); err != nil {
		return impossible("%v", err)
	}
	if key != id {
		return impossible("key %q holds the record of %q", key, id)
	}
	return nil
}

// checkResources wraps ValidResources as an impossible record.
func checkResources(what string, cores int, memoryMB int64) error {
	if err := ValidResources(what, cores, memoryMB); err != nil {
		return impossible("%v", err)
	}
	return nil
}

// checkWorkerRef reports an invalid worker id (empty is allowed when
// optional: a driver not yet placed).
func checkWorkerRef(id string, optional bool) error {
	if id == "" && optional {
		return nil
	}
	if err := ValidID("worker", id); err != nil {
		return impossible("%v", err)
	}
	return nil
}

// Check is the worker record's invariants: its key is its id, its state is
// known, it has cores and memory.
func (w *Worker) Check(key string) error {
	if err := checkID(func(s string) error { return ValidID("worker", s) }, key, w.ID); err != nil {
		return err
	}
	if err := checkKnown("worker", w.State, WorkerStates()); err != nil {
		return err
	}
	if err := w.Resources.Validate(); err != nil {
		return impossible("%v", err)
	}
	return checkResources("worker", w.Cores, w.MemoryMB)
}

// Check is the driver record's invariants.
func (d *Driver) Check(key string) error {
	if err := checkID(ValidDriverID, key, d.ID); err != nil {
		return err
	}
	if err := checkKnown("driver", d.State, DriverStates()); err != nil {
		return err
	}
	if err := checkResources("driver", d.Cores, d.MemoryMB); err != nil {
		return err
	}
	if d.Attempts < 0 {
		return impossible("driver attempts %d < 0", d.Attempts)
	}
	return checkWorkerRef(d.WorkerID, !d.State.Holds())
}

// Check is the application record's invariants.
func (a *App) Check(key string) error {
	if err := checkID(ValidAppID, key, a.ID); err != nil {
		return err
	}
	if err := checkKnown("app", a.State, AppStates()); err != nil {
		return err
	}
	if err := checkResources("executor", a.Executor.Cores, a.Executor.MemoryMB); err != nil {
		return err
	}
	switch {
	case a.MaxCores < 0:
		return impossible("app max cores %d < 0", a.MaxCores)
	case a.ConsecutiveFailures < 0:
		return impossible("app consecutive failures %d < 0", a.ConsecutiveFailures)
	case a.NextExecutorID < 0:
		return impossible("app next executor id %d < 0", a.NextExecutorID)
	}
	return nil
}

// Check is the executor record's invariants: its key parses and names it.
func (x *Executor) Check(key string) error {
	app, id, err := ParseExecutorKey(key)
	if err != nil {
		return impossible("%v", err)
	}
	if app != x.AppID || id != x.ID {
		return impossible("key %q holds the record of %q", key, ExecutorKey(x.AppID, x.ID))
	}
	if err := checkKnown("executor", x.State, ExecutorStates()); err != nil {
		return err
	}
	if err := checkResources("executor", x.Cores, x.MemoryMB); err != nil {
		return err
	}
	return checkWorkerRef(x.WorkerID, false)
}

// Check is the cluster record's invariants: a known phase.
func (c *Cluster) Check(string) error {
	return checkKnown("cluster", c.State, []ClusterState{ClusterRecovering, ClusterAlive, ClusterStandby})
}

// Check is the lease's invariant: a holder.
func (l *Lease) Check(string) error {
	if l.Holder == "" {
		return impossible("lease has no holder")
	}
	return nil
}

// CheckPlaced is the invariant across buckets: an executor or a driver that
// holds resources is on a worker that has a record. known says whether
// workerID has one. Ended ones may outlive their worker's record.
func CheckPlaced(holds bool, workerID string, known bool) error {
	if holds && !known {
		return impossible("holds resources on worker %q, which has no record", workerID)
	}
	return nil
}
