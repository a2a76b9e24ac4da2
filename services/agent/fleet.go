package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
)

// Fleet is N agents in one process (stoker agent --simulate, stoker bench):
// each a full agent on its own NATS connection, under its own identity when
// the bus is secured, with a launcher that is usually a SimLauncher.
type Fleet struct {
	mu     sync.Mutex
	agents []*Service
	conns  []*nats.Conn
	silent []bool
}

// FleetConfig configures StartFleet.
type FleetConfig struct {
	// IDs are the worker ids, one agent each.
	IDs []string
	// Connect opens the connection of the agent with worker id wid (its own
	// credential on a secured bus). The fleet closes it.
	Connect func(ctx context.Context, wid string) (*nats.Conn, error)
	// Agent is the template of every agent's Config; NC, ID and WorkerID are set per agent.
	Agent Config
	// Parallel agents start at once (each waits PingWait for a holder of its
	// id). Default 256.
	Parallel int
}

// StartFleet connects and starts every agent; on error it stops those it started.
func StartFleet(ctx context.Context, cfg FleetConfig) (*Fleet, error) {
	par := cfg.Parallel
	if par <= 0 {
		par = 256
	}
	n := len(cfg.IDs)
	f := &Fleet{agents: make([]*Service, n), conns: make([]*nats.Conn, n), silent: make([]bool, n)}
	sem := make(chan struct{}, par)
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	for i, wid := range cfg.IDs {
		sem <- struct{}{}
		errMu.Lock()
		failed := first != nil
		errMu.Unlock()
		if failed {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f.start(ctx, i, wid, cfg); err != nil {
				errMu.Lock()
				if first == nil {
					first = fmt.Errorf("agent %s: %w", wid, err)
				}
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		f.Stop()
		return nil, first
	}
	return f, nil
}

func (f *Fleet) start(ctx context.Context, i int, wid string, cfg FleetConfig) error {
	nc, err := cfg.Connect(ctx, wid)
	if err != nil {
		return err
	}
	c := cfg.Agent
	c.NC, c.ID, c.WorkerID = nc, wid, wid
	a, err := New(c)
	if err != nil {
		nc.Close()
		return err
	}
	f.mu.Lock()
	f.agents[i], f.conns[i] = a, nc
	f.mu.Unlock()
	return a.Start(ctx)
}

// Agents are the fleet's agents, in the order of FleetConfig.IDs.
func (f *Fleet) Agents() []*Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Service(nil), f.agents...)
}

// WaitRegistered returns once every agent is registered, or ctx's error.
func (f *Fleet) WaitRegistered(ctx context.Context) error {
	for _, a := range f.Agents() {
		select {
		case <-a.Registered():
		case <-ctx.Done():
			return errors.New("agents not registered: " + ctx.Err().Error())
		}
	}
	return nil
}

// Silence is SIGKILL as the cluster sees it, for the agents at the given
// indexes: each stops acting and its connection closes, with no leaving
// notice, so the cluster learns it only from the missing heartbeats.
func (f *Fleet) Silence(idx ...int) {
	f.mu.Lock()
	var stop []int
	for _, i := range idx {
		if i >= 0 && i < len(f.agents) && f.agents[i] != nil && !f.silent[i] {
			f.silent[i] = true
			stop = append(stop, i)
		}
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, i := range stop {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.conns[i].Close()
			f.agents[i].Stop()
		}()
	}
	wg.Wait()
}

// Shutdown makes every live agent leave (DECOMMISSIONED at once), then
// closes the connections. It returns the first leave error.
func (f *Fleet) Shutdown(ctx context.Context) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, 256)
	for i, a := range f.Agents() {
		f.mu.Lock()
		skip := a == nil || f.silent[i]
		f.silent[i] = true
		f.mu.Unlock()
		if skip {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := a.Shutdown(ctx); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("%s: %w", a.WorkerID(), err)
				}
				mu.Unlock()
			}
			_ = f.conns[i].Drain()
		}()
	}
	wg.Wait()
	return first
}

// Stop stops every agent without a leaving notice and closes the connections.
func (f *Fleet) Stop() {
	idx := make([]int, 0, len(f.agents))
	for i := range f.Agents() {
		idx = append(idx, i)
	}
	f.Silence(idx...)
}

// ExecutorKeys are the keys ("<appid>.<execid>") of the executors the agent runs.
func (s *Service) ExecutorKeys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.executors))
	for k := range s.executors {
		out = append(out, k)
	}
	return out
}

// ReportRetries is how many state reports were sent again after an attempt
// was not acknowledged, since the agent started.
func (s *Service) ReportRetries() int64 { return s.reports.retries.Load() }
