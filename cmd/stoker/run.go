package main

// Client-mode applications: `stoker run` registers an app whose executors
// run a plain command and holds it.

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

type runOptions struct {
	url natsTarget
	req schemas.RegisterApp
}

func init() {
	register(&command{
		name: "run", group: "Clients", summary: "run an application whose executors run CMD (client mode)",
		usage: "[flags] -- CMD [ARGS...]",
		details: `Registers an application from this process (the driver lives here, as in
Spark's client mode), asks the cluster for executors that each run CMD with
STOKER_APP_ID, STOKER_EXECUTOR_ID, STOKER_CORES and STOKER_MEMORY_MB set, and
prints them as they start. Each executor runs CMD once: one that exits 0 is
done and not replaced, one that fails is replaced (up to the scheduler's
--max-executor-retries in a row). --max-cores says how many run: 4 with
--executor-cores 1 is four copies of CMD; the default is one. It holds the
application until every executor has exited 0 (the app ends FINISHED),
Ctrl-C (KILLED), stoker kill, or the app fails; exit 0 only if FINISHED.`,
		examples: []string{
			"stoker run -- sleep 600",
			"stoker run --executor-cores 2 --executor-memory 1g --max-cores 4 -- ./my-executor",
		},
		setup: setupWith(bindRun, runApp),
	})
}

func bindRun(fs *flag.FlagSet, o *runOptions) func(args []string) error {
	url := natsFlag(fs)
	name := fs.String("name", "", "application name (default: the command's base name)")
	cores := fs.Int("executor-cores", 1, "cores per executor")
	memory := sizeVar(fs, "executor-memory", 256, "memory per executor, e.g. 256m, 2g")
	maxCores := fs.Int("max-cores", 0, "cores of all executors together: how many copies of CMD run (default: one executor's cores)")
	var envs listFlag
	fs.Var(&envs, "env", "environment entry `K=V` for each executor (repeatable)")
	return func(args []string) error {
		if len(args) == 0 {
			return usagef("no command given: stoker run [flags] -- CMD [ARGS...]")
		}
		if err := positive("executor-cores", *cores); err != nil {
			return err
		}
		if err := needSize("executor-memory", memory); err != nil {
			return err
		}
		if *maxCores < 0 {
			return usagef("--max-cores must be >= 0, got %d", *maxCores)
		}
		env, err := envList(envs)
		if err != nil {
			return err
		}
		o.url = url.target(auth.RoleAdmin)
		if *maxCores == 0 {
			*maxCores = *cores
		}
		o.req = schemas.RegisterApp{
			Name:     *name,
			Executor: schemas.ExecutorSpec{Command: args, Env: env, Cores: *cores, MemoryMB: int64(*memory)},
			MaxCores: *maxCores,
			RunOnce:  true,
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

func runApp(ctx context.Context, e *env, o *runOptions) error {
	nc, err := connectClient(o.url)
	if err != nil {
		return err
	}
	defer nc.Close()
	app, err := sdk.RegisterApp(ctx, nc, o.req)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, app.ID)
	if app.Warning != "" {
		fmt.Fprintf(e.stderr, "warning: %s\n", app.Warning)
	}

	seen := map[int]schemas.ExecutorState{}
	var lastState schemas.AppState
	v, err := newClient(nc).FollowApp(ctx, app.ID, func(f sdk.Follow[schemas.AppView]) {
		if f.Err != nil {
			fmt.Fprintf(e.stderr, "warning: %v\n", f.Err)
			return
		}
		if f.Value.State != lastState {
			fmt.Fprintf(e.stderr, "%s %s\n", app.ID, f.Value.State)
			lastState = f.Value.State
		}
		for _, x := range f.Value.Executors {
			if seen[x.ID] == x.State {
				continue
			}
			seen[x.ID] = x.State
			line := fmt.Sprintf("executor %s %s on %s (%s, %s)", schemas.ExecutorKey(app.ID, x.ID), x.State,
				x.WorkerID, schemas.FormatCores(x.Cores), schemas.FormatMemoryMB(x.MemoryMB))
			if x.ExitCode != nil {
				line += fmt.Sprintf(" exit %d", *x.ExitCode)
			}
			if x.Error != "" {
				line += ": launch failed: " + x.Error
			}
			fmt.Fprintln(e.stdout, line)
		}
	})
	if err != nil { // interrupted
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := app.CloseWithMessage(cctx, schemas.AppKilled, "stoker run interrupted")
		cancel()
		if err != nil {
			fmt.Fprintf(e.stderr, "warning: %v\n", err)
		}
		fmt.Fprintf(e.stderr, "%s KILLED (interrupted)\n", app.ID)
		return &exitError{code: exitFailure}
	}
	app.Release()
	if v.Message != "" {
		fmt.Fprintf(e.stderr, "%s: %s\n", app.ID, v.Message)
	}
	if v.State == schemas.AppFinished {
		return nil
	}
	return &exitError{code: exitFailure}
}
