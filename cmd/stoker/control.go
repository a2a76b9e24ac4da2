package main

// Acting on one driver or application: kill, logs.

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
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
				subject, id, err := killTarget(args)
				if err != nil {
					return err
				}
				return withClient(*url, func(nc *nats.Conn) error {
					ack, err := bus.CallAck(ctx, nc, subject, &schemas.KillRequest{ID: id})
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
				return withClient(*url, func(nc *nats.Conn) error {
					wid, err := workerOf(ctx, nc, req.ID)
					if err != nil {
						return err
					}
					var reply schemas.LogsReply
					if err := bus.Call(ctx, nc, bus.WorkerLogsSubject(wid), req, &reply); err != nil {
						return fmt.Errorf("logs from worker %s: %w", wid, err)
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

// killTarget picks the kill endpoint from the id's prefix.
func killTarget(args []string) (subject, id string, err error) {
	if len(args) != 1 {
		return "", "", usagef("expected one driver or app id, got %d arguments", len(args))
	}
	id = args[0]
	req := schemas.KillRequest{ID: id}
	if err := req.Validate(); err != nil {
		return "", "", usagef("%q is not a driver id (driver-...) or an app id (app-...)", id)
	}
	if strings.HasPrefix(id, schemas.DriverIDPrefix) {
		return bus.APIDriversKill, id, nil
	}
	return bus.APIAppsKill, id, nil
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

// workerOf finds the worker a driver or executor runs (or ran) on.
func workerOf(ctx context.Context, nc *nats.Conn, id string) (string, error) {
	if strings.HasPrefix(id, schemas.DriverIDPrefix) {
		d, err := getDriver(ctx, nc, id)
		if err != nil {
			return "", err
		}
		if d.WorkerID == "" {
			return "", fmt.Errorf("driver %s has not been placed on a worker yet (%s)", id, d.State)
		}
		return d.WorkerID, nil
	}
	appID, execID, err := schemas.ParseExecutorKey(id)
	if err != nil {
		return "", err
	}
	a, err := getApp(ctx, nc, appID)
	if err != nil {
		return "", err
	}
	for _, x := range a.Executors {
		if x.ID == execID {
			return x.WorkerID, nil
		}
	}
	return "", fmt.Errorf("app %s has no executor %d", appID, execID)
}
