// Command stoker runs and uses a Stoker cluster: `stoker up` starts a whole
// cluster in one process; `stoker bus|registration|heartbeat|scheduler|
// recovery|agent` run its parts separately; the other commands are clients.
//
// This package only parses flags and wires parts together; every piece of
// behaviour lives in bus, schemas, sdk and services/*.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/services/svc"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// env is what a command needs from its surroundings, so tests can run
// commands without touching the process's own stdout or environment.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

func osEnv() *env { return &env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv} }

// command is one `stoker <name>`.
type command struct {
	name     string
	group    string
	summary  string
	usage    string // after "stoker <name> "
	details  string
	examples []string
	// setup declares the command's flags on fs and returns what runs once
	// they are parsed, with the remaining positional arguments.
	setup func(fs *flag.FlagSet, e *env) func(ctx context.Context, args []string) error
	// interspersed lets flags follow positional arguments (stoker logs ID
	// --stderr); commands that take a command line after -- leave it false.
	interspersed bool
}

// usageError makes the command exit 2 (bad flags or arguments, nothing done).
type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// exitError ends a command with a code and no further message (the command
// already said what happened).
type exitError struct{ code int }

func (x *exitError) Error() string { return fmt.Sprintf("exit %d", x.code) }

var commands []*command

func register(c *command) { commands = append(commands, c) }

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	endProfile := cpuProfileFromEnv(os.Args[1:])
	code := run(ctx, osEnv(), os.Args[1:])
	endProfile()
	stop()
	os.Exit(code)
}

// cpuProfileFromEnv starts a CPU profile of this process when
// STOKER_CPUPROFILE names a directory: <dir>/<command>-<pid>.pprof, for
// `go tool pprof` (how stoker bench --processes profiles each service).
// The returned func stops it; a profile that cannot start is said on
// stderr and skipped.
func cpuProfileFromEnv(args []string) func() {
	dir := os.Getenv("STOKER_CPUPROFILE")
	if dir == "" || len(args) == 0 {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", filepath.Base(args[0]), os.Getpid())))
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "stoker: STOKER_CPUPROFILE: %v (no profile)\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// run dispatches args to a command and turns its error into an exit code.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		printHelp(e.stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "--help", "-help":
		if len(args) > 1 && name == "help" {
			c := lookup(args[1])
			if c == nil {
				fmt.Fprintf(e.stderr, "stoker: unknown command %q\n", args[1])
				return exitUsage
			}
			printCommandHelp(e.stdout, c, nil)
			return exitOK
		}
		printHelp(e.stdout)
		return exitOK
	case "--version", "-version":
		name = "version"
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(e.stderr, "stoker: unknown command %q (see `stoker help`)\n", name)
		return exitUsage
	}
	err := c.exec(ctx, e, args[1:])
	var ue *usageError
	var xe *exitError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &xe):
		return xe.code
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "stoker %s: %s\n", c.name, ue.msg)
		fmt.Fprintf(e.stderr, "usage: stoker %s %s (see `stoker %s --help`)\n", c.name, c.usage, c.name)
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "stoker %s: %v\n", c.name, err)
		return exitFailure
	}
}

func printHelp(w io.Writer) {
	fmt.Fprint(w, `stoker runs a Spark-standalone-like cluster on NATS.

Usage: stoker <command> [flags] [args]

`)
	groups := []string{"Cluster", "Clients", "Services", "Other"}
	for _, g := range groups {
		fmt.Fprintf(w, "%s:\n", g)
		var cs []*command
		for _, c := range commands {
			if c.group == g {
				cs = append(cs, c)
			}
		}
		for _, c := range cs {
			fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprint(w, `Quick start:
  stoker up                          # bus, services and 2 workers in one process
  stoker workers                     # in another terminal
  stoker submit --wait -- sleep 5    # run a driver on the cluster
  go run ./examples/pi --slices 10   # a client-mode application

Client commands find the cluster with --nats or STOKER_NATS_URL (default
`+bus.DefaultURL+`). Exit codes: 0 ok, 1 failure, 2 usage error.
Run `+"`stoker <command> --help`"+` for a command's flags and examples.

Every flag can also be set in the environment: --nats by STOKER_NATS_URL,
--log-level by STOKER_LOG_LEVEL, any other flag of `+"`stoker <command>`"+` by
STOKER_<COMMAND>_<FLAG> in upper case with dashes as underscores (e.g.
STOKER_AGENT_CORES=8 for `+"`stoker agent --cores 8`"+`, STOKER_UP_LEASE_TTL=5s).
The command line wins; repeatable flags (--env) have no variable.
`)
}

// printCommandHelp writes a command's usage, flags and examples.
func printCommandHelp(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: stoker %s %s\n\n%s\n", c.name, c.usage, c.summary)
	if c.details != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(c.details, "\n"))
	}
	if fs == nil {
		fs = flag.NewFlagSet(c.name, flag.ContinueOnError)
		c.setup(fs, &env{stdout: io.Discard, stderr: io.Discard, getenv: os.Getenv})
	}
	has := false
	fs.VisitAll(func(*flag.Flag) { has = true })
	if has {
		fmt.Fprintln(w, "\nFlags (each falls back to the [$VARIABLE] shown; the command line wins):")
		printFlags(w, c.name, fs)
	}
	if len(c.examples) > 0 {
		fmt.Fprintln(w, "\nExamples:")
		for _, ex := range c.examples {
			fmt.Fprintf(w, "  %s\n", ex)
		}
	}
}

// exec parses args (environment fallbacks first, then the command line)
// and runs the command.
func (c *command) exec(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("stoker "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	runFn := c.setup(fs, e)
	if err := applyEnv(fs, c.name, e.getenv); err != nil {
		return err
	}
	pos, err := parseArgs(fs, args, c.interspersed)
	if errors.Is(err, flag.ErrHelp) {
		printCommandHelp(e.stdout, c, fs)
		return err
	}
	if err != nil {
		return &usageError{err.Error()}
	}
	return runFn(ctx, pos)
}

// buildVersion is svc.Version (the one micro services announce), with the
// VCS revision when the binary was built from a checkout.
func buildVersion() string {
	v := svc.Version
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = ", modified"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += " (" + rev + dirty + ")"
	}
	return v
}

func init() {
	register(&command{
		name: "version", group: "Other", summary: "print the version",
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			return func(_ context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("version takes no arguments")
				}
				gov := ""
				if bi, ok := debug.ReadBuildInfo(); ok {
					gov = bi.GoVersion
				}
				fmt.Fprintf(e.stdout, "stoker %s %s\n", buildVersion(), gov)
				return nil
			}
		},
	})
}

// setupWith builds a command's setup from a bind function (declares flags on
// fs and returns the function that completes and validates the options from
// the positional arguments) and the function that runs the command.
func setupWith[O any](bind func(*flag.FlagSet, *O) func([]string) error,
	run func(context.Context, *env, *O) error) func(*flag.FlagSet, *env) func(context.Context, []string) error {
	return func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		o := new(O)
		complete := bind(fs, o)
		return func(ctx context.Context, args []string) error {
			if err := complete(args); err != nil {
				return err
			}
			return run(ctx, e, o)
		}
	}
}
