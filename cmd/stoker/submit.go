package main

// Cluster-mode drivers: submit (and follow with --wait).

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

// pollInterval is how often --wait and `stoker run` look at the cluster
// (the SDK client's PollInterval; tests shorten it).
var pollInterval = 200 * time.Millisecond

type submitOptions struct {
	url  natsTarget
	wait bool
	req  schemas.SubmitDriver
}

func init() {
	register(&command{
		name: "submit", group: "Clients", summary: "submit a driver to run on a worker (cluster mode)",
		usage: "[flags] -- CMD [ARGS...]",
		details: `Prints the driver id. The driver runs as a child process of a worker's agent,
with STOKER_NATS_URL and STOKER_DRIVER_ID set, in <work>/<driver-id>/ with its
stdout and stderr files (see stoker logs). With --supervise, a driver that
exits non-zero is started again. With --wait, follows the driver's state and
exits 0 only if it ends FINISHED.`,
		examples: []string{
			"stoker submit -- sleep 30",
			"stoker submit --wait --name pi -- /usr/local/bin/pi --slices 4",
			"stoker submit --supervise --driver-cores 2 --driver-memory 1g --env MODE=prod -- ./server",
		},
		setup: setupWith(bindSubmit, submit),
	})
}

// bindSubmit declares submit's flags on fs and returns the function that
// completes and validates o from the positional arguments.
func bindSubmit(fs *flag.FlagSet, o *submitOptions) func(args []string) error {
	url := natsFlag(fs)
	name := fs.String("name", "", "driver name (default: the command's base name)")
	supervise := fs.Bool("supervise", false, "restart the driver if it exits non-zero")
	cores := fs.Int("driver-cores", 1, "cores the driver holds on its worker")
	memory := sizeVar(fs, "driver-memory", 512, "memory the driver holds on its worker, e.g. 512m, 1g")
	var envs listFlag
	fs.Var(&envs, "env", "environment entry `K=V` for the driver (repeatable)")
	wait := fs.Bool("wait", false, "follow the driver's state; exit 0 only if it ends FINISHED")
	return func(args []string) error {
		if len(args) == 0 {
			return usagef("no command given: stoker submit [flags] -- CMD [ARGS...]")
		}
		if err := positive("driver-cores", *cores); err != nil {
			return err
		}
		if err := needSize("driver-memory", memory); err != nil {
			return err
		}
		env, err := envList(envs)
		if err != nil {
			return err
		}
		o.url, o.wait = url.target(auth.RoleAdmin), *wait
		o.req = schemas.SubmitDriver{
			Name: *name, Command: args, Env: env, Cores: *cores, MemoryMB: int64(*memory), Supervise: *supervise,
		}
		if o.req.Name == "" {
			o.req.Name = filepath.Base(args[0])
		}
		if err := o.req.Validate(); err != nil {
			return usagef("%v", err)
		}
		return nil
	}
}

func submit(ctx context.Context, e *env, o *submitOptions) error {
	return withClient(o.url, func(c *sdk.Client) error {
		reply, err := c.Submit(ctx, o.req)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, reply.DriverID)
		if reply.Warning != "" {
			fmt.Fprintf(e.stderr, "warning: %s\n", reply.Warning)
		}
		if !o.wait {
			return nil
		}
		id := reply.DriverID
		final, err := c.FollowDriver(ctx, id, func(f sdk.Follow[schemas.Driver]) {
			if f.Err != nil {
				// The cluster may be failing over; keep following.
				fmt.Fprintf(e.stderr, "warning: %v\n", f.Err)
				return
			}
			fmt.Fprintln(e.stderr, driverLine(f.Value))
		})
		if err != nil {
			fmt.Fprintf(e.stderr, "stopped waiting; %s keeps running (stoker kill %s)\n", id, id)
			return &exitError{code: exitFailure}
		}
		if final.State != schemas.DriverFinished {
			return &exitError{code: exitFailure}
		}
		return nil
	})
}

// driverLine is one change of a followed driver: "<id> <state> on <worker>
// (exit N): message".
func driverLine(d *schemas.Driver) string {
	line := fmt.Sprintf("%s %s", d.ID, d.State)
	if d.WorkerID != "" && !d.State.Terminal() {
		line += " on " + d.WorkerID
	}
	if d.ExitCode != nil && d.State.Terminal() {
		line += fmt.Sprintf(" (exit %d)", *d.ExitCode)
	}
	if d.Message != "" {
		line += ": " + d.Message
	}
	return line
}
