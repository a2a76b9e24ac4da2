package main

// stoker bench --processes: the bus and each service as its own process,
// as a deployment runs them, so that CPU and RSS are measured per service.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/stoker/stoker/bus/auth"
)

// procCluster is a bus and its services, each a `stoker <name>` child
// process of the bench (killed with it: Pdeathsig).
type procCluster struct {
	self, data, url, ca string
	hb, wt              time.Duration
	maxInFlight         int           // the scheduler's --max-in-flight
	flowTarget          time.Duration // the scheduler's --flow-target
	keys                *auth.Keys
	monitor             int // the bus's HTTP monitoring port (loopback)

	mu    sync.Mutex
	procs map[string]*exec.Cmd // by instance id ("bus", "registration-1", …)
}

// benchServices are the services started once each, in this order.
var benchServices = []string{"registration", "heartbeat", "recovery", "scheduler"}

// startProcCluster starts `stoker bus` on a free loopback port with its
// store in data, then one instance of each service on its role's
// credential, and returns once the bus answers with its store provisioned.
func startProcCluster(ctx context.Context, data string, o *benchOptions) (*procCluster, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	pc := &procCluster{self: self, data: data, url: fmt.Sprintf("tls://127.0.0.1:%d", port), hb: o.hb, wt: o.wt,
		maxInFlight: o.maxInFlight, flowTarget: o.flowTarget,
		procs: map[string]*exec.Cmd{}}
	if pc.monitor, err = freePort(); err != nil {
		return nil, err
	}
	busData := filepath.Join(data, "nats")
	if err := pc.start("bus", "bus", "--data", busData, "--auth-dir", data, "--host", "127.0.0.1",
		"--port", strconv.Itoa(port), "--monitor-port", strconv.Itoa(pc.monitor)); err != nil {
		return nil, err
	}
	pc.ca = filepath.Join(data, "tls", "ca.pem") // made by the bus beside --auth-dir's creds
	admin := filepath.Join(data, "creds", "admin.creds")
	if err := pc.waitBus(ctx, admin); err != nil {
		pc.stop()
		return nil, err
	}
	if pc.keys, err = auth.Load(filepath.Join(data, auth.KeysDir)); err != nil {
		pc.stop()
		return nil, err
	}
	for _, s := range benchServices {
		if _, err := pc.startService(s, s+"-1"); err != nil {
			pc.stop()
			return nil, err
		}
	}
	return pc, nil
}

// waitBus waits until the bus answers on the admin credential with the
// store provisioned (a minute at most).
func (pc *procCluster) waitBus(ctx context.Context, admin string) error {
	deadline := time.Now().Add(time.Minute)
	var last error
	for time.Now().Before(deadline) {
		if _, err := os.Stat(admin); err == nil {
			// `stoker health`'s checks: JetStream answers, the store exists.
			if _, err = healthChecks(ctx, natsTarget{URL: pc.url, Creds: admin, CA: pc.ca}, false); err == nil {
				return nil
			}
			last = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("the bus did not answer within a minute (log: %s): %v", pc.logFile("bus"), last)
}

// startService starts `stoker <role> --id id` on the role's credential.
func (pc *procCluster) startService(role, id string) (int, error) {
	args := []string{"--nats", pc.url, "--creds", filepath.Join(pc.data, "creds", role+".creds"),
		"--tls-ca", pc.ca, "--id", id}
	switch role {
	case "registration", "heartbeat":
		args = append(args, "--heartbeat-interval", pc.hb.String(), "--worker-timeout", pc.wt.String())
	case "scheduler":
		args = append(args, "--max-in-flight", strconv.Itoa(pc.maxInFlight), "--flow-target", pc.flowTarget.String())
	}
	if err := pc.start(id, role, args...); err != nil {
		return 0, err
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.procs[id].Process.Pid, nil
}

func (pc *procCluster) logFile(id string) string { return filepath.Join(pc.data, "logs", id+".log") }

// start runs `stoker <command> args…` as instance id, its output in
// <data>/logs/<id>.log.
func (pc *procCluster) start(id, command string, args ...string) error {
	if err := os.MkdirAll(filepath.Join(pc.data, "logs"), 0o755); err != nil {
		return err
	}
	f, err := os.Create(pc.logFile(id))
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(pc.self, append([]string{command, "--log-level", "warn"}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", id, err)
	}
	pc.mu.Lock()
	pc.procs[id] = cmd
	pc.mu.Unlock()
	return nil
}

// kill ends instance id with SIGKILL (a failover's dead leader).
func (pc *procCluster) kill(id string) error {
	pc.mu.Lock()
	cmd := pc.procs[id]
	delete(pc.procs, id)
	pc.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("no process %q", id)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return nil
}

// busMsgs reads the bus's message counters from its monitoring
// endpoint (/varz).
func (pc *procCluster) busMsgs() (in, out int64, err error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/varz", pc.monitor))
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("bus /varz: %s", resp.Status)
	}
	var v struct {
		InMsgs  int64 `json:"in_msgs"`
		OutMsgs int64 `json:"out_msgs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return 0, 0, fmt.Errorf("bus /varz: %w", err)
	}
	return v.InMsgs, v.OutMsgs, nil
}

// pids are the running processes by instance id.
func (pc *procCluster) pids() map[string]int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	out := make(map[string]int, len(pc.procs))
	for id, cmd := range pc.procs {
		out[id] = cmd.Process.Pid
	}
	return out
}

// stop ends the services with SIGTERM, then the bus (each within 15 s,
// SIGKILL after).
func (pc *procCluster) stop() {
	pc.mu.Lock()
	var svcs []*exec.Cmd
	var busCmd *exec.Cmd
	for id, cmd := range pc.procs {
		if id == "bus" {
			busCmd = cmd
		} else {
			svcs = append(svcs, cmd)
		}
	}
	pc.procs = map[string]*exec.Cmd{}
	pc.mu.Unlock()
	var wg sync.WaitGroup
	for _, cmd := range svcs {
		wg.Add(1)
		go func() { defer wg.Done(); terminate(cmd) }()
	}
	wg.Wait()
	if busCmd != nil {
		terminate(busCmd)
	}
}

// terminate sends SIGTERM and waits 15 s, then SIGKILL.
func terminate(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}
