package main

// Acting on one driver or application: kill, logs.

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

func init() {
	register(&command{
		name: "kill", group: "Clients", summary: "kill a driver or an application (and its executors)",
		usage:        "ID [--nats URL]",
		details:      "ID is a driver id (driver-...) or an application id (app-...).",
		examples:     []string{"stoker kill driver-20260101120000-1a2b3c", "stoker kill app-20260101120000-4d5e6f"},
		interspersed: true,
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url := natsFlag(fs)
			return func(ctx context.Context, args []string) error {
				id, err := killTarget(args)
				if err != nil {
					return err
				}
				return withClient(url.target(auth.RoleAdmin, auth.RoleViewer), func(c *sdk.Client) error {
					ack, err := c.Kill(ctx, id)
					if err != nil {
						return err
					}
					msg := "kill requested for " + id
					if ack.Message != "" {
						msg = ack.Message
					}
					fmt.Fprintln(e.stdout, msg)
					return nil
				})
			}
		},
	})
	for _, cordon := range []bool{true, false} {
		name, summary, details := "cordon", "stop new placements on a worker (what runs there keeps running)",
			"WORKER is a worker id (see stoker workers). The scheduler places no new executor or driver on a cordoned "+
				"worker; its executors and drivers keep running. The flag is kept when the agent restarts and across "+
				"scheduler failovers until stoker uncordon. stoker workers shows the worker as STATE,cordoned."
		if !cordon {
			name, summary, details = "uncordon", "allow new placements on a cordoned worker again",
				"WORKER is a worker id (see stoker workers)."
		}
		register(&command{
			name: name, group: "Clients", summary: summary,
			usage: "WORKER [--nats URL]", details: details,
			examples:     []string{"stoker " + name + " worker-1"},
			interspersed: true,
			setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
				url := natsFlag(fs)
				return func(ctx context.Context, args []string) error {
					if len(args) != 1 {
						return fmt.Errorf("%s expects one worker id, got %d argument(s)", name, len(args))
					}
					return withClient(url.target(auth.RoleAdmin, auth.RoleViewer), func(c *sdk.Client) error {
						ack, err := c.Cordon(ctx, args[0], cordon)
						if err != nil {
							return err
						}
						fmt.Fprintln(e.stdout, ack.Message)
						return nil
					})
				}
			},
		})
	}
	register(&command{
		name: "drain", group: "Clients", summary: "decommission a worker: replace its executors elsewhere, then stop them there",
		usage: "WORKER [--deadline 5m] [--wait] [--nats URL]",
		details: `WORKER is a worker id (see stoker workers). The worker is DECOMMISSIONING: nothing new
is placed on it; each executor is first replaced on another worker, and killed
on WORKER once its replacement is RUNNING (an executor that exits by itself is
not replaced there); supervised drivers are relaunched elsewhere; at the
deadline whatever is left is killed. Once nothing runs on it the worker is
DECOMMISSIONED (the agent keeps running, idle, until it is stopped; a restarted
agent registers a fresh worker). The drain is kept in the worker's record, so
it goes on across scheduler failovers; each step is an event (stoker events).
Spark: spark.decommission.enabled and SIGPWR; Nomad: node drain -deadline;
Kubernetes: kubectl drain. --wait waits until the worker is DECOMMISSIONED.`,
		examples:     []string{"stoker drain worker-1", "stoker drain worker-1 --deadline 30m --wait"},
		interspersed: true,
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url := natsFlag(fs)
			deadline := fs.Duration("deadline", schemas.DefaultDrainDeadline, "kill what is still on the worker after this long")
			wait := fs.Bool("wait", false, "wait until the worker is DECOMMISSIONED")
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("drain expects one worker id, got %d argument(s)", len(args))
				}
				if *deadline <= 0 || *deadline > schemas.MaxDrainDeadline {
					return usagef("--deadline must be > 0 and at most %s, got %s", schemas.MaxDrainDeadline, *deadline)
				}
				return withClient(url.target(auth.RoleAdmin, auth.RoleViewer), func(c *sdk.Client) error {
					ack, err := c.Drain(ctx, args[0], *deadline)
					if err != nil {
						return err
					}
					fmt.Fprintln(e.stdout, ack.Message)
					if !*wait {
						return nil
					}
					for {
						ws, err := c.Workers(ctx)
						if err != nil {
							return err
						}
						for _, w := range ws {
							if w.ID == args[0] && w.State.Gone() {
								fmt.Fprintf(e.stdout, "worker %s %s\n", w.ID, w.State)
								return nil
							}
						}
						select {
						case <-ctx.Done():
							return ctx.Err()
						case <-time.After(time.Second):
						}
					}
				})
			}
		},
	})
	register(&command{
		name: "logs", group: "Clients", summary: "print a driver's or an executor's stdout (or stderr)",
		usage: "ID [--stderr] [--max-bytes N] [--nats URL]",
		details: `ID is a driver id (driver-...) or an executor as <appid>.<execid> (see
stoker apps). The log is read from the agent of the worker it ran on, which
must still be up; the last --max-bytes bytes are printed.`,
		examples: []string{
			"stoker logs driver-20260101120000-1a2b3c",
			"stoker logs app-20260101120000-4d5e6f.0 --stderr",
		},
		interspersed: true,
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url := natsFlag(fs)
			stderr := fs.Bool("stderr", false, "print stderr instead of stdout")
			maxBytes := fs.Int("max-bytes", 0, "print at most the last N bytes (0: the agent's default, 1 MiB)")
			return func(ctx context.Context, args []string) error {
				req, err := logsRequest(args, *stderr, *maxBytes)
				if err != nil {
					return err
				}
				return withClient(url.target(auth.RoleAdmin, auth.RoleViewer), func(c *sdk.Client) error {
					reply, err := c.Logs(ctx, *req)
					if err != nil {
						return err
					}
					if reply.Truncated {
						fmt.Fprintf(e.stderr, "(showing the last %d bytes)\n", len(reply.Data))
					}
					_, err = e.stdout.Write(reply.Data)
					return err
				})
			}
		},
	})
}

// killTarget checks the one id kill takes.
func killTarget(args []string) (string, error) {
	if len(args) != 1 {
		return "", usagef("expected one driver or app id, got %d arguments", len(args))
	}
	req := schemas.KillRequest{ID: args[0]}
	if err := req.Validate(); err != nil {
		return "", usagef("%q is not a driver id (driver-...) or an app id (app-...)", args[0])
	}
	return args[0], nil
}

func logsRequest(args []string, stderr bool, maxBytes int) (*schemas.LogsRequest, error) {
	if len(args) != 1 {
		return nil, usagef("expected one driver id or <appid>.<execid>, got %d arguments", len(args))
	}
	if maxBytes < 0 {
		return nil, usagef("--max-bytes must be >= 0")
	}
	req := &schemas.LogsRequest{ID: args[0], Stderr: stderr, MaxBytes: maxBytes}
	if err := req.Validate(); err != nil {
		return nil, usagef("%q is not a driver id or <appid>.<execid>: %v", args[0], err)
	}
	return req, nil
}
