// Package bench measures a Stoker cluster (stoker bench): the bus's own
// request/reply and KV put rates as the reference, placements per second
// end to end with simulated agents, submit-to-running latency, scheduler
// failover, dead-worker detection and replacement, CPU and memory. It
// checks what it measures: an executor lost or running twice, or a count
// that is not the one asked for, is a failure (Result.Failures); time
// never is.
package bench

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/services/agent"
)

// Cluster is what the scenarios run against: a bus with the services,
// brought up by the caller (cmd/stoker wires stoker up's code).
type Cluster struct {
	URL string
	// Admin is an admin connection: apps are registered and KV read on it.
	Admin *nats.Conn
	// ConnectAgent opens the connection of agent wid, on its own credential.
	ConnectAgent func(ctx context.Context, wid string) (*nats.Conn, error)
	// Agent is the template config of a simulated agent (NATSURL, reply
	// prefixes, heartbeat interval); Launcher is set by the scenarios.
	Agent agent.Config
	// WorkerTimeout is the silence after which the cluster marks a worker DEAD.
	WorkerTimeout time.Duration
	// StartScheduler starts one more scheduler instance; fail makes it fall
	// silent as a SIGKILL would (its connection closes, its lease is not
	// released). Nil: no failover scenario.
	StartScheduler func(ctx context.Context) (id string, fail func(), err error)
	// FailScheduler makes the scheduler with that id fall silent (the one
	// the cluster started with included). Nil: no failover scenario.
	FailScheduler func(id string) error
	// RealAgent starts a real `stoker agent` process for wid; stop ends it.
	// Nil: no real-process scenario.
	RealAgent func(ctx context.Context, wid string, cores int) (pid int, stop func(), err error)
	// RealDir is a directory on the filesystem of the real agents' work
	// dirs: the floor that creates each executor's files creates them there.
	RealDir string
	// PIDs are the other processes whose CPU and RSS are reported, by
	// name (nil or empty: everything runs in this process).
	PIDs func() map[string]int
	// BusMsgs gives the messages the bus has received from its clients
	// and delivered to them since it started (NATS's varz in_msgs and
	// out_msgs). Nil: the bus's messages are not counted.
	BusMsgs func() (in, out int64, err error)
	// Self says what runs in this process ("bench process: bus, services,
	// agents"), the label of its CPU and RSS.
	Self string
	Log  zerolog.Logger
}

// Options are the sizes.
type Options struct {
	Agents, Executors, Apps int
	// RealProcesses: N `sleep` executors on 2 real agents (0: skipped).
	RealProcesses int
	// LatencyRuns: how many 4-executor apps the latency scenario times.
	LatencyRuns int
	// DeadFraction of the agents falls silent in the dead-worker scenario.
	DeadFraction float64
	// Scenarios to run, by name (nil: all).
	Only map[string]bool
	// Steady is how long CPU is sampled during steady heartbeats.
	Steady time.Duration
}

// Row is one figure.
type Row struct {
	Scenario string  `json:"scenario"`
	Figure   string  `json:"figure"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	// Samples, when the figure is a distribution (p50 in Value).
	P99 float64 `json:"p99,omitempty"`
	Min float64 `json:"min,omitempty"`
	Max float64 `json:"max,omitempty"`
	N   int     `json:"n,omitempty"`
	// Note says what the figure is compared with.
	Note string `json:"note,omitempty"`
}

// Result is a run's figures and the failures found.
type Result struct {
	Agents    int      `json:"agents"`
	Executors int      `json:"executors"`
	Apps      int      `json:"apps"`
	Load      string   `json:"load"`
	Rows      []Row    `json:"rows"`
	Failures  []string `json:"failures"`
	Started   string   `json:"started"`
}

func (r *Result) add(row Row) { r.Rows = append(r.Rows, row) }

func (r *Result) fail(format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

// dist fills a row's p50, p99, min and max from samples in ms.
func dist(row Row, samples []float64) Row {
	if len(samples) == 0 {
		return row
	}
	s := append([]float64(nil), samples...)
	sort.Float64s(s)
	pct := func(p float64) float64 {
		i := int(p*float64(len(s)-1) + 0.5)
		return s[i]
	}
	row.Value, row.P99, row.Min, row.Max, row.N = pct(0.5), pct(0.99), s[0], s[len(s)-1], len(s)
	return row
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Run runs the scenarios against c.
func Run(ctx context.Context, c *Cluster, o Options) *Result {
	res := &Result{Agents: o.Agents, Executors: o.Executors, Apps: o.Apps, Load: loadAvg(),
		Started: time.Now().UTC().Format(time.RFC3339)}
	want := func(name string) bool { return o.Only == nil || o.Only[name] }
	if want("reference") {
		reference(ctx, c, res)
	}
	if want("real") && o.RealProcesses > 0 && c.RealAgent != nil {
		realProcesses(ctx, c, o, res)
	}
	if o.Agents > 0 && (want("latency") || want("placements") || want("failover") || want("dead") || want("resources")) {
		fleetScenarios(ctx, c, o, res, want)
	}
	return res
}
