package registration

import (
	"sort"

	"github.com/stoker/stoker/schemas"
)

// This file is pure: it derives what clients see from KV records, with no
// NATS. The scheduler and the CLI reason the same way: used cores and memory
// are never stored, they are the sum over what holds resources on a worker.

// Usage derives each worker's usage from the executors and drivers placed on
// it (schemas.Usages: only those whose state Holds()). Workers with nothing
// placed are absent from the map (their usage is the zero value).
func Usage(executors []schemas.Executor, drivers []schemas.Driver) schemas.Usages {
	out := schemas.Usages{}
	for i := range executors {
		out.AddExecutor(&executors[i])
	}
	for i := range drivers {
		out.AddDriver(&drivers[i])
	}
	return out
}

// WorkerViews joins worker records with their derived usage, sorted by id.
func WorkerViews(workers []schemas.Worker, usage schemas.Usages) []schemas.WorkerView {
	out := make([]schemas.WorkerView, 0, len(workers))
	for _, w := range workers {
		u := usage[w.ID]
		out = append(out, schemas.WorkerView{
			ID: w.ID, Host: w.Host, State: w.State, Cores: w.Cores, MemoryMB: w.MemoryMB,
			CoresUsed: u.Cores, MemoryUsedMB: u.MemoryMB, Executors: u.Executors, Drivers: u.Drivers,
			RegisteredAt: w.RegisteredAt, UpdatedAt: w.UpdatedAt, Epoch: w.Epoch,
			PID: w.PID, Since: w.Since, WorkDir: w.WorkDir,
			Resources: w.Resources, ResourcesUsed: u.Resources, Labels: w.Labels,
			Cordoned: w.Cordoned, Drain: w.Drain,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// AppViews joins application records with their executors, oldest app
// first. CoresGranted is the sum of cores over executors that hold them.
func AppViews(apps []schemas.App, executors []schemas.Executor) []schemas.AppView {
	byApp := map[string][]schemas.ExecutorView{}
	granted := map[string]int{}
	for _, e := range executors {
		var code *int
		if e.ExitCode != nil {
			c := *e.ExitCode
			code = &c
		}
		byApp[e.AppID] = append(byApp[e.AppID], schemas.ExecutorView{
			ID: e.ID, WorkerID: e.WorkerID, Cores: e.Cores, MemoryMB: e.MemoryMB,
			State: e.State, ExitCode: code, PID: e.PID, Message: e.Message, Error: e.Error,
			CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt, Resources: e.Resources,
		})
		if e.State.Holds() {
			granted[e.AppID] += e.Cores
		}
	}
	out := make([]schemas.AppView, 0, len(apps))
	for _, a := range apps {
		ex := byApp[a.ID]
		if ex == nil {
			ex = []schemas.ExecutorView{}
		}
		sort.Slice(ex, func(i, j int) bool { return ex[i].ID < ex[j].ID })
		out = append(out, schemas.AppView{
			ID: a.ID, Name: a.Name, DriverID: a.DriverID, State: a.State,
			CoresGranted: granted[a.ID], MaxCores: a.MaxCores,
			ExecutorCores: a.Executor.Cores, ExecutorMemoryMB: a.Executor.MemoryMB,
			ConsecutiveFailures: a.ConsecutiveFailures, SubmittedAt: a.SubmittedAt,
			Message: a.Message, Executors: ex, Artifacts: a.Executor.Artifacts,
		})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].SubmittedAt.Equal(out[j].SubmittedAt) {
			return out[i].SubmittedAt.Before(out[j].SubmittedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// SortDrivers orders drivers by submission time, then id.
func SortDrivers(drivers []schemas.Driver) {
	sort.SliceStable(drivers, func(i, j int) bool {
		if !drivers[i].SubmittedAt.Equal(drivers[j].SubmittedAt) {
			return drivers[i].SubmittedAt.Before(drivers[j].SubmittedAt)
		}
		return drivers[i].ID < drivers[j].ID
	})
}

// CanHold reports whether some ALIVE worker has at least cores and memoryMB
// in total (not free: busy workers free up, a too-small one never will).
func CanHold(workers []schemas.Worker, cores int, memoryMB int64) bool {
	for _, w := range workers {
		if w.State.Usable() && w.Cores >= cores && w.MemoryMB >= memoryMB {
			return true
		}
	}
	return false
}

// Snapshot is every record a status summary needs.
type Snapshot struct {
	// Lease is stoker-leader/scheduler (nil if no leader), LeaseRevision
	// the revision of its entry.
	Lease         *schemas.Lease
	LeaseRevision uint64
	// Cluster is stoker-cluster/state (nil if never written).
	Cluster   *schemas.Cluster
	Workers   []schemas.Worker
	Apps      []schemas.App
	Drivers   []schemas.Driver
	Executors []schemas.Executor
	// Usage, when set, is the usage already derived (from an index);
	// else it is derived from Executors and Drivers.
	Usage schemas.Usages
	// Poisoned names the records left out of the lists above, by bucket.
	Poisoned map[string][]string
}

// Summarize builds the cluster status: leader, phase, counts by state, and
// cores and memory over ALIVE workers with usage derived as in Usage.
func Summarize(s Snapshot) *schemas.Status {
	st := &schemas.Status{
		State:   schemas.ClusterStandby,
		Workers: map[string]int{}, Apps: map[string]int{}, Drivers: map[string]int{},
	}
	if s.Lease != nil {
		epoch := s.Lease.EpochOf(s.LeaseRevision)
		st.Leader = &schemas.LeaderView{ID: s.Lease.Holder, Term: schemas.LeaderTerm(s.Cluster, epoch), Epoch: epoch, Since: s.Lease.Since}
		st.State = schemas.ClusterRecovering
		if s.Cluster != nil && s.Cluster.State != "" {
			st.State = s.Cluster.State
		}
	}
	for b, keys := range s.Poisoned {
		if st.Poisoned == nil {
			st.Poisoned, st.PoisonedKeys = map[string]int{}, map[string][]string{}
		}
		st.Poisoned[b], st.PoisonedKeys[b] = len(keys), keys
	}
	usage := s.Usage
	if usage == nil {
		usage = Usage(s.Executors, s.Drivers)
	}
	for _, w := range s.Workers {
		st.Workers[string(w.State)]++
		if !w.State.Usable() {
			continue
		}
		u := usage[w.ID]
		st.CoresTotal += w.Cores
		st.MemoryTotalMB += w.MemoryMB
		st.CoresUsed += u.Cores
		st.MemoryUsedMB += u.MemoryMB
	}
	for _, a := range s.Apps {
		st.Apps[string(a.State)]++
	}
	for _, d := range s.Drivers {
		st.Drivers[string(d.State)]++
	}
	return st
}
