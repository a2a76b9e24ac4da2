package main

// Acting on one driver or application: kill, logs.

import (
	"context"
	"flag"
	"fmt"

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
