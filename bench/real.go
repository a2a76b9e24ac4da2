package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

// watchWorkers delivers every update of stoker-workers.
func watchWorkers(ctx context.Context, nc *nats.Conn) (<-chan schemas.Worker, func(), error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, err
	}
	kv, err := js.KeyValue(ctx, bus.BucketWorkers)
	if err != nil {
		return nil, nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	w, err := kv.WatchAll(wctx, jetstream.UpdatesOnly())
	if err != nil {
		cancel()
		return nil, nil, err
	}
	out := make(chan schemas.Worker, 4096)
	go func() {
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			var x schemas.Worker
			if bus.DecodeRecord(e.Value(), &x) == nil {
				select {
				case out <- x:
				case <-wctx.Done():
					return
				}
			}
		}
	}()
	return out, func() { cancel(); _ = w.Stop() }, nil
}

// realProcesses runs N `sleep` executors on 2 real agents (stoker agent
// processes) and times submit → all RUNNING in KV: the figure compared
// with Nomad's 36.4 s for 500.
func realProcesses(ctx context.Context, c *Cluster, o Options, res *Result) {
	n := o.RealProcesses
	tr, err := newTracker(ctx, c.Admin)
	if err != nil {
		res.fail("real processes: %v", err)
		return
	}
	defer tr.stop()
	var pids []int
	for i := 1; i <= 2; i++ {
		wid := fmt.Sprintf("real-%d", i)
		pid, stop, err := c.RealAgent(ctx, wid, n/2+n%2+1)
		if err != nil {
			res.fail("real processes: agent %s: %v", wid, err)
			return
		}
		defer stop()
		pids = append(pids, pid)
	}
	// Wait for both to be ALIVE (a registration shows in stoker-workers)
	// and settled: 0.5 s after start caught the start's garbage, and two
	// builds differed by 1.2 MB there and not at all 3 s after.
	time.Sleep(3 * time.Second)
	idle, anon := 0.0, 0.0
	for _, p := range pids {
		idle = max(idle, float64(rss(p))/1024)
		anon = max(anon, float64(rssAnon(p))/1024)
	}
	res.add(Row{Scenario: "real", Figure: "real agent RSS, idle (max of 2)", Value: idle, Unit: "MB", Note: "goal ≤ 20 MB"})
	res.add(Row{Scenario: "real", Figure: "real agent anonymous RSS, idle (heap, stacks; the rest is the executable's shared pages)", Value: anon, Unit: "MB"})
	// The floor, in this run: the same number of `sleep`s started by two
	// bare spawners in this process (fork/exec and nothing else), as the
	// two agents start theirs. On a VM it varies by the hour (2026-12-03:
	// a shell loop started 500 in 0.35 s in the morning; one Go spawner
	// took 1.5-2.2 s at night).
	floor, err := spawnFloor(n, "")
	if err != nil {
		res.fail("real processes: bare spawn: %v", err)
		return
	}
	res.add(Row{Scenario: "real", Figure: fmt.Sprintf("reference: %d bare `sleep` fork/execs, 2 spawners in this process", n), Value: ms(floor), Unit: "ms",
		Note: "the floor on this machine now"})
	// And with the files every executor has (its work dir, credential and
	// two logs) on the agents' filesystem: on this VM's ext4 a create cost
	// 0.25-0.6 ms of CPU against 4 µs on tmpfs, four times the fork/exec,
	// so that floor is the one an agent can approach.
	files := time.Duration(0)
	if c.RealDir != "" {
		files, err = spawnFloor(n, filepath.Join(c.RealDir, "floor"))
		if err != nil {
			res.fail("real processes: spawn with files: %v", err)
			return
		}
		res.add(Row{Scenario: "real", Figure: "reference: the same, each with an executor's files (work dir, credential, stdout, stderr)", Value: ms(files), Unit: "ms",
			Note: "on the agents' work dir filesystem"})
	}
	start := time.Now()
	app, err := sdk.RegisterApp(ctx, c.Admin, schemas.RegisterApp{Name: "real-sleep", MaxCores: n,
		Executor: schemas.ExecutorSpec{Command: []string{"sleep", "600"}, Cores: 1, MemoryMB: 1}})
	if err != nil {
		res.fail("real processes: register: %v", err)
		return
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		_ = app.Close(cctx, schemas.AppFinished)
		cancel()
		waitFor(ctx, tr.wait(app.ID, 0), 30*time.Second)
	}()
	ok := waitFor(ctx, tr.wait(app.ID, n), placementTimeout(n))
	d := time.Since(start)
	running, _, created := tr.counts(app.ID)
	if !ok || created != n {
		res.fail("real processes: %d RUNNING, %d executor records, want %d and %d", running, created, n, n)
		return
	}
	note := fmt.Sprintf("%.2f × the bare fork/execs", d.Seconds()/floor.Seconds())
	if files > 0 {
		note += fmt.Sprintf(", %.2f × with their files", d.Seconds()/files.Seconds())
	}
	res.add(Row{Scenario: "real", Figure: fmt.Sprintf("%d real `sleep` executors on 2 agents, submit → all RUNNING", n), Value: ms(d), Unit: "ms",
		Note: note + "; goal ≤ 500 ms for 500; Nomad 36.4 s"})
	busy := 0.0
	for _, p := range pids {
		busy = max(busy, float64(rss(p))/1024)
	}
	res.add(Row{Scenario: "real", Figure: fmt.Sprintf("real agent RSS with %d children (max of 2)", n/2), Value: busy, Unit: "MB"})
}

// spawnFloor starts n `sleep 600`s from two goroutines of this process,
// each a bare exec.Command Start, and returns how long the starts took
// (the children are killed and reaped after). With dir set, each start
// first creates what the agent's launcher creates for an executor: its
// work dir under dir, a credential readable by the owner, and its stdout
// and stderr, which the child gets (dir is removed after).
func spawnFloor(n int, dir string) (time.Duration, error) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return 0, err
	}
	var (
		mu   sync.Mutex
		kids []*exec.Cmd
		errs []error
		wg   sync.WaitGroup
	)
	start := time.Now()
	for s := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n/2 + s*(n%2) {
				cmd := exec.Command(sleep, "600")
				err := withFiles(cmd, dir, fmt.Sprintf("%d-%d", s, i), cmd.Start)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					kids = append(kids, cmd)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	for _, k := range kids {
		_ = k.Process.Kill()
		_ = k.Wait()
	}
	if dir != "" {
		errs = append(errs, os.RemoveAll(dir))
	}
	return took, errors.Join(errs...)
}

// withFiles runs start with cmd's executor files made under dir/name (as
// services/agent's ProcessLauncher makes them); an empty dir makes none.
func withFiles(cmd *exec.Cmd, dir, name string, start func() error) error {
	if dir == "" {
		return start()
	}
	wd := filepath.Join(dir, name)
	if err := os.MkdirAll(wd, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(wd, "nats.creds"), []byte("-----BEGIN NATS USER JWT-----\n"), 0o600); err != nil {
		return err
	}
	var logs []*os.File
	defer func() {
		for _, f := range logs {
			_ = f.Close()
		}
	}()
	for _, name := range []string{"stdout", "stderr"} {
		f, err := os.OpenFile(filepath.Join(wd, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		logs = append(logs, f)
	}
	cmd.Dir, cmd.Stdout, cmd.Stderr = wd, logs[0], logs[1]
	return start()
}
