package main

// Client-mode applications: `stoker run` registers an app whose executors
// run a plain command and holds it.

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

type runOptions struct {
	url    natsTarget
	req    schemas.RegisterApp
	upload *uploadFlags
	// note says how the number of executors was derived, when it was.
	note string
}

// maxRunExecutors bounds --executors (a typo guard, far above any cluster).
const maxRunExecutors = 100000

func init() {
	register(&command{
		name: "run", group: "Clients", summary: "run an application whose executors run CMD (client mode)",
		usage: "[flags] -- CMD [ARGS...]",
		details: `Registers an application from this process (the driver lives here, as in
Spark's client mode), asks the cluster for executors that each run CMD with
STOKER_APP_ID, STOKER_EXECUTOR_ID, STOKER_CORES and STOKER_MEMORY_MB set, and
prints them as they start. Each executor runs CMD once: one that exits 0 is
done and not replaced, one that fails is replaced (up to the scheduler's
--max-executor-retries in a row). --executors N runs N copies of CMD
(default one). --max-cores (Spark's --total-executor-cores, also accepted)
caps the cores of all executors together, as everywhere in Stoker and Spark:
given alone, it sets how many run, --max-cores / --executor-cores, and says
so; given with --executors, the executors must fit under it. It holds the
application until every executor has exited 0 (the app ends FINISHED),
Ctrl-C (KILLED), stoker kill, or the app fails; exit 0 only if FINISHED.`,
		examples: []string{
			"stoker run -- sleep 600",
			"stoker run --executors 4 -- sleep 600",
			"stoker run --executor-cores 2 --executor-memory 1g --executors 2 -- ./my-executor",
			"stoker run --total-executor-cores 4 -- ./my-executor   # 4 executors of 1 core",
			"stoker run --file ./my-tool --executors 4 -- my-tool --part all",
		},
		setup: setupWith(bindRun, runApp),
	})
}

func bindRun(fs *flag.FlagSet, o *runOptions) func(args []string) error {
	url := natsFlag(fs)
	name := fs.String("name", "", "application name (default: the command's base name)")
	cores := fs.Int("executor-cores", 1, "cores per executor")
	memory := sizeVar(fs, "executor-memory", 256, "memory per executor, e.g. 256m, 2g")
	executors := fs.Int("executors", 0, "how many copies of CMD run, each once (default: --max-cores / --executor-cores, else 1)")
	maxCores := fs.Int("max-cores", 0, "cap on the cores of all executors together, Spark's spark.cores.max (default: --executors × --executor-cores)")
	fs.IntVar(maxCores, "total-executor-cores", 0, "Spark's name for --max-cores")
	var envs listFlag
	fs.Var(&envs, "env", "environment entry `K=V` for each executor (repeatable)")
	var res amountsFlag
	fs.Var(&res, "executor-resource", "custom resource each executor needs, NAME=COUNT, e.g. gpu=1 (repeatable; Spark's spark.executor.resource.NAME.amount)")
	var cons constraintsFlag
	fs.Var(&cons, "constraint", "place executors only on workers whose labels match, KEY=VALUE or KEY!=VALUE (repeatable)")
	o.upload = bindUpload(fs)
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
		if *executors < 0 || *executors > maxRunExecutors {
			return usagef("--executors must be between 1 and %d, got %d", maxRunExecutors, *executors)
		}
		n, note, err := runExecutors(*executors, *maxCores, *cores)
		if err != nil {
			return err
		}
		o.note = note
		env, err := envList(envs)
		if err != nil {
			return err
		}
		o.url = url.target(auth.RoleAdmin)
		args = slices.Clone(args)
		var pathNote string
		args[0], pathNote = resolveCommand(args[0])
		o.note = strings.TrimSpace(o.note + "\n" + pathNote)
		o.req = schemas.RegisterApp{
			Name: *name,
			Executor: schemas.ExecutorSpec{Command: args, Env: env, Cores: *cores, MemoryMB: int64(*memory),
				Resources: schemas.Amounts(res)},
			// A run-once app finishes when executors worth its cap have
			// exited 0: the cap is the executors' cores.
			MaxCores:    n * *cores,
			RunOnce:     true,
			Constraints: cons,
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

// runExecutors is how many executors `stoker run` starts from --executors,
// --max-cores (the cap on all cores, Spark's meaning) and --executor-cores,
// with a note when the count was derived from the cap.
func runExecutors(executors, maxCores, cores int) (n int, note string, err error) {
	switch {
	case executors > 0 && maxCores > 0 && executors*cores > maxCores:
		return 0, "", usagef("--executors %d of %s need %d cores, more than --max-cores %d",
			executors, schemas.FormatCores(cores), executors*cores, maxCores)
	case executors > 0:
		return executors, "", nil
	case maxCores == 0:
		return 1, "", nil
	case maxCores < cores:
		return 0, "", usagef("--max-cores %d is less than the cores of one executor (--executor-cores %d)", maxCores, cores)
	}
	n = maxCores / cores
	note = fmt.Sprintf("--max-cores %d with %s per executor: %d executor(s) run CMD once each (--executors sets the count)",
		maxCores, schemas.FormatCores(cores), n)
	return n, note, nil
}

func runApp(ctx context.Context, e *env, o *runOptions) error {
	if o.note != "" {
		fmt.Fprintln(e.stderr, o.note)
	}
	nc, err := connectClient(o.url)
	if err != nil {
		return err
	}
	defer nc.Close()
	if o.req.Executor.Artifacts, err = o.upload.upload(ctx, e, nc); err != nil {
		return err
	}
	// Retried while the bus has no quorum or does not answer, until
	// interrupted: an app whose
	// registration went through unseen has no driver heartbeat and is
	// ended after the worker timeout.
	var app *sdk.App
	err = retryWhile(ctx, e.stderr, nc, 0, true, func() error {
		var err error
		app, err = sdk.RegisterApp(ctx, nc, o.req)
		return err
	})
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
			switch {
			case x.ExitCode == nil:
			case x.State == schemas.ExecutorKilled && *x.ExitCode == 0:
				line += " stopped cleanly when told to"
			default:
				line += fmt.Sprintf(" exit %d", *x.ExitCode)
			}
			switch {
			case x.Error != "":
				line += ": launch failed: " + x.Error
			case x.Message != "" && x.State != schemas.ExecutorRunning && x.State != schemas.ExecutorLaunching:
				line += ": " + x.Message // e.g. killed: exceeded its memory grant
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
