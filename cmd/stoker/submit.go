package main

// Cluster-mode drivers: submit (and follow with --wait).

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

// pollInterval is how often --wait and `stoker run` look at the cluster
// when no event about what they follow woke them (the SDK client's
// PollInterval; tests shorten it).
var pollInterval = sdk.DefaultPollInterval

type submitOptions struct {
	url  natsTarget
	wait bool
	req  schemas.SubmitDriver
	// note says how a relative command path was treated.
	note   string
	upload *uploadFlags
}

func init() {
	register(&command{
		name: "submit", group: "Clients", summary: "submit a driver to run on a worker (cluster mode)",
		usage: "[flags] -- CMD [ARGS...]",
		details: `Prints the driver id. The driver runs as a child process of a worker's agent,
with STOKER_NATS_URL and STOKER_DRIVER_ID set, in <work>/<driver-id>/ with its
stdout and stderr files (see stoker logs). With --supervise, a driver that
exits non-zero is started again. With --wait, follows the driver's state and
exits 0 only if it ends FINISHED. --file and --archive ship files from this
machine through the bus (see stoker artifacts): a CMD that names a --file's
base name runs the shipped copy, and a driver built on the SDK hands its
files on to its executors.`,
		examples: []string{
			"stoker submit -- sleep 30",
			"stoker submit --wait --name pi -- /usr/local/bin/pi --slices 4",
			"stoker submit --file ./bin/pi --wait -- pi --slices 8",
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
	var dres, eres amountsFlag
	fs.Var(&dres, "driver-resource", "custom resource the driver needs, NAME=COUNT, e.g. gpu=1 (repeatable; Spark's spark.driver.resource.NAME.amount)")
	fs.Var(&eres, "executor-resource", "custom resource each of the driver's executors needs, NAME=COUNT (repeatable; given to the driver as "+schemas.EnvExecutorResources+")")
	var cons, econs constraintsFlag
	fs.Var(&cons, "constraint", "place the driver only on workers whose labels match, KEY=VALUE or KEY!=VALUE (repeatable)")
	fs.Var(&econs, "executor-constraint", "the same for the driver's executors (repeatable; given to the driver as "+schemas.EnvExecutorConstraints+")")
	o.upload = bindUpload(fs)
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
		if len(eres) > 0 {
			var parts []string
			for k, n := range eres {
				parts = append(parts, fmt.Sprintf("%s=%d", k, n))
			}
			env = append(env, schemas.EnvEntry(schemas.EnvExecutorResources, strings.Join(parts, ",")))
		}
		if len(econs) > 0 {
			env = append(env, schemas.EnvEntry(schemas.EnvExecutorConstraints, strings.Join(econs, ",")))
		}
		o.url, o.wait = url.target(auth.RoleAdmin), *wait
		args = slices.Clone(args)
		args[0], o.note = resolveCommand(args[0])
		o.req = schemas.SubmitDriver{
			Name: *name, Command: args, Env: env, Cores: *cores, MemoryMB: int64(*memory), Supervise: *supervise,
			Resources: schemas.Amounts(dres), Constraints: cons,
		}
		if o.req.Name == "" {
			o.req.Name = filepath.Base(args[0])
		}
		if err := o.req.Validate(); err != nil {
			return usagef("%v", err)
		}
		return o.upload.check()
	}
}

func submit(ctx context.Context, e *env, o *submitOptions) error {
	if o.note != "" {
		fmt.Fprintln(e.stderr, o.note)
	}
	return withConn(o.url, func(nc *nats.Conn) error {
		arts, err := o.upload.upload(ctx, e, nc)
		if err != nil {
			return err
		}
		o.req.Artifacts = arts
		c := newClient(nc)
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
		var last *schemas.Driver
		final, err := c.FollowDriver(ctx, id, func(f sdk.Follow[schemas.Driver]) {
			if f.Err != nil {
				// The cluster may be failing over; keep following.
				fmt.Fprintf(e.stderr, "warning: %v\n", f.Err)
				return
			}
			last = f.Value
			fmt.Fprintln(e.stderr, driverLine(f.Value))
		})
		if err != nil {
			fmt.Fprintln(e.stderr, stoppedWaiting(id, last))
			return &exitError{code: exitFailure}
		}
		if final.State != schemas.DriverFinished {
			return &exitError{code: exitFailure}
		}
		return nil
	})
}

// stoppedWaiting is what `submit --wait` says when it stops following a
// driver last seen as last (nil: never read).
func stoppedWaiting(id string, last *schemas.Driver) string {
	if last == nil || last.State == schemas.DriverSubmitted {
		what := "the driver"
		if last != nil {
			what = fmt.Sprintf("%s and %s", schemas.FormatCores(last.Cores), schemas.FormatMemoryMB(last.MemoryMB))
		}
		return fmt.Sprintf("stopped waiting; %s was never placed: no ALIVE worker has had room for %s yet. "+
			"It stays SUBMITTED until one does (stoker workers shows free room; stoker kill %s withdraws it)", id, what, id)
	}
	return fmt.Sprintf("stopped waiting; %s keeps running, %s (stoker kill %s)", id, last.State, id)
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
	switch {
	case d.Message == "":
	case !d.State.Terminal() && d.Attempts > 1:
		// A relaunched driver keeps the message of the attempt that ended
		// ("exit code 1"): say it is the previous attempt's.
		line += fmt.Sprintf(" (attempt %d; the previous one: %s)", d.Attempts, d.Message)
	default:
		line += ": " + d.Message
	}
	return line
}

// resolveCommand makes a relative command path that exists here absolute
// (a worker runs commands from its own work dir, so "bin/pi" would not be
// found there; the absolute path works when the worker shares this
// filesystem), and says what it did. A bare name is left to the worker's
// PATH.
func resolveCommand(cmd string) (string, string) {
	if filepath.IsAbs(cmd) || !strings.Contains(cmd, "/") {
		return cmd, ""
	}
	if fi, err := os.Stat(cmd); err == nil && !fi.IsDir() {
		if abs, err := filepath.Abs(cmd); err == nil {
			return abs, fmt.Sprintf("%s is a relative path: sent as %s (a worker must see that path: same machine or a shared filesystem)", cmd, abs)
		}
	}
	return cmd, fmt.Sprintf("warning: %s is a relative path not found here: a worker resolves it in its own work dir, where it is unlikely to exist (give an absolute path)", cmd)
}
