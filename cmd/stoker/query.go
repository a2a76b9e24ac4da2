package main

// Read-only client commands: workers, drivers, apps, status.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

// connectClient dials NATS for a one-shot client command: no retry, so a
// missing cluster is a clear error at once.
func connectClient(t natsTarget) (*nats.Conn, error) {
	return t.connect(bus.ConnectOptions{Name: "stoker-cli"})
}

// withConn runs fn with a connection that is closed afterwards.
func withConn(t natsTarget, fn func(nc *nats.Conn) error) error {
	nc, err := connectClient(t)
	if err != nil {
		return err
	}
	defer nc.Close()
	start := time.Now()
	err = fn(nc)
	if err != nil && !errors.Is(err, bus.ErrDenied) {
		// A denied JetStream request shows only as a timeout (trap 7).
		if perr := bus.LastPermissionError(nc, start); perr != nil {
			return fmt.Errorf("%w (%v)", perr, err)
		}
	}
	return err
}

// withClient runs fn with an SDK client on a connection closed afterwards.
func withClient(t natsTarget, fn func(c *sdk.Client) error) error {
	return withConn(t, func(nc *nats.Conn) error { return fn(newClient(nc)) })
}

// newClient is the SDK client the commands use, polling at pollInterval.
func newClient(nc *nats.Conn) *sdk.Client {
	c := sdk.NewClient(nc)
	c.PollInterval = pollInterval
	return c
}

func noArgs(name string, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", name, strings.Join(args, " "))
	}
	return nil
}

// optionalID is the one ID argument of `stoker workers|drivers|apps [ID]`, "" for none.
func optionalID(name string, args []string) (string, error) {
	switch len(args) {
	case 0:
		return "", nil
	case 1:
		return args[0], nil
	}
	return "", usagef("%s takes at most one ID, got %q", name, strings.Join(args, " "))
}

func init() {
	register(&command{
		name: "workers", group: "Clients", interspersed: true, summary: "list workers with their cores and memory in use, or show one in detail",
		usage:    "[ID] [--json] [--nats URL]",
		examples: []string{"stoker workers", "stoker workers --json | jq '.[] | select(.state==\"ALIVE\") | .id'", "stoker workers vm-1-3f2a"},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url, asJSON := natsFlag(fs), jsonFlag(fs)
			return func(ctx context.Context, args []string) error {
				id, err := optionalID("workers", args)
				if err != nil {
					return err
				}
				return withClient(url.target(auth.RoleAdmin, auth.RoleViewer), func(c *sdk.Client) error {
					if id != "" {
						d, err := c.Worker(ctx, id)
						if err != nil {
							return err
						}
						return printWorker(e.stdout, d, *asJSON)
					}
					ws, err := c.Workers(ctx)
					if err != nil {
						return err
					}
					return printWorkers(e.stdout, ws, *asJSON)
				})
			}
		},
	})
	register(&command{
		name: "drivers", group: "Clients", interspersed: true, summary: "list submitted drivers and their state, or show one in detail",
		usage:    "[ID] [--json] [--nats URL]",
		examples: []string{"stoker drivers", "stoker drivers --json", "stoker drivers driver-20260101120000-1a2b3c"},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url, asJSON := natsFlag(fs), jsonFlag(fs)
			return func(ctx context.Context, args []string) error {
				id, err := optionalID("drivers", args)
				if err != nil {
					return err
				}
				return withClient(url.target(auth.RoleAdmin, auth.RoleViewer), func(c *sdk.Client) error {
					if id != "" {
						d, err := c.DriverDetail(ctx, id)
						if err != nil {
							return err
						}
						return printDriver(e.stdout, d, *asJSON)
					}
					ds, err := c.Drivers(ctx)
					if err != nil {
						return err
					}
					return printDrivers(e.stdout, ds, *asJSON)
				})
			}
		},
	})
	register(&command{
		name: "apps", group: "Clients", interspersed: true, summary: "list applications and their executors, or show one in detail",
		usage:    "[ID] [--json] [--nats URL]",
		examples: []string{"stoker apps", "stoker apps --json | jq '.[].executors'", "stoker apps app-20260101120000-1a2b3c --json"},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url, asJSON := natsFlag(fs), jsonFlag(fs)
			return func(ctx context.Context, args []string) error {
				id, err := optionalID("apps", args)
				if err != nil {
					return err
				}
				return withClient(url.target(auth.RoleAdmin, auth.RoleViewer), func(c *sdk.Client) error {
					if id != "" {
						a, err := c.App(ctx, id)
						if err != nil {
							return err
						}
						return printApp(e.stdout, a, *asJSON)
					}
					as, err := c.Apps(ctx)
					if err != nil {
						return err
					}
					return printApps(e.stdout, as, *asJSON)
				})
			}
		},
	})
	register(&command{
		name: "status", group: "Clients", summary: "show the cluster: leader, epoch, phase, totals",
		usage:    "[--json] [--nats URL]",
		examples: []string{"stoker status", "stoker status --json | jq .leader"},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url, asJSON := natsFlag(fs), jsonFlag(fs)
			return func(ctx context.Context, args []string) error {
				if err := noArgs("status", args); err != nil {
					return err
				}
				return withClient(url.target(auth.RoleAdmin, auth.RoleViewer), func(c *sdk.Client) error {
					st, err := c.Status(ctx)
					if err != nil {
						return err
					}
					if *asJSON {
						return writeJSON(e.stdout, st)
					}
					printStatus(e.stdout, st)
					return nil
				})
			}
		},
	})
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func mem(mb int64) string { return schemas.FormatMemoryMB(mb) }

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printWorkers(w io.Writer, ws []schemas.WorkerView, asJSON bool) error {
	if ws == nil {
		ws = []schemas.WorkerView{}
	}
	if asJSON {
		return writeJSON(w, ws)
	}
	sort.SliceStable(ws, func(i, j int) bool { return ws[i].ID < ws[j].ID })
	t := newTable(w)
	fmt.Fprintln(t, "ID\tHOST\tSTATE\tCORES\tMEMORY\tEXECUTORS\tDRIVERS\tREGISTERED")
	for _, v := range ws {
		fmt.Fprintf(t, "%s\t%s\t%s\t%d/%d\t%s/%s\t%d\t%d\t%s\n", v.ID, orDash(v.Host), v.State,
			v.CoresUsed, v.Cores, mem(v.MemoryUsedMB), mem(v.MemoryMB), v.Executors, v.Drivers, ago(v.RegisteredAt))
	}
	if len(ws) == 0 {
		fmt.Fprintln(t, "(no workers registered)")
	}
	return t.Flush()
}

func printDrivers(w io.Writer, ds []schemas.Driver, asJSON bool) error {
	if ds == nil {
		ds = []schemas.Driver{}
	}
	if asJSON {
		return writeJSON(w, ds)
	}
	t := newTable(w)
	fmt.Fprintln(t, "ID\tNAME\tSTATE\tWORKER\tCORES\tMEMORY\tATTEMPTS\tSUPERVISE\tCOMMAND")
	for _, d := range ds {
		state := string(d.State)
		if d.ExitCode != nil && d.State.Terminal() {
			state += fmt.Sprintf(" (exit %d)", *d.ExitCode)
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%v\t%s\n", d.ID, orDash(d.Name), state, orDash(d.WorkerID),
			d.Cores, mem(d.MemoryMB), d.Attempts, d.Supervise, shortCommand(d.Command))
	}
	if len(ds) == 0 {
		fmt.Fprintln(t, "(no drivers)")
	}
	return t.Flush()
}

func shortCommand(argv []string) string {
	s := strings.Join(argv, " ")
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

func printApps(w io.Writer, as []schemas.AppView, asJSON bool) error {
	if as == nil {
		as = []schemas.AppView{}
	}
	for i := range as {
		if as[i].Executors == nil {
			as[i].Executors = []schemas.ExecutorView{}
		}
	}
	if asJSON {
		return writeJSON(w, as)
	}
	t := newTable(w)
	fmt.Fprintln(t, "ID\tNAME\tSTATE\tCORES\tEXECUTOR\tEXECUTORS\tDRIVER\tSUBMITTED")
	for _, a := range as {
		maxC := "-"
		if a.MaxCores > 0 {
			maxC = fmt.Sprint(a.MaxCores)
		}
		live := 0
		for _, x := range a.Executors {
			if x.State.Holds() {
				live++
			}
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%d/%s\t%dc %s\t%d live, %d total\t%s\t%s\n", a.ID, orDash(a.Name), a.State,
			a.CoresGranted, maxC, a.ExecutorCores, mem(a.ExecutorMemoryMB), live, len(a.Executors), orDash(a.DriverID), ago(a.SubmittedAt))
		for _, x := range a.Executors {
			state := string(x.State)
			if x.ExitCode != nil {
				state += fmt.Sprintf(" (exit %d)", *x.ExitCode)
			}
			fmt.Fprintf(t, "  %s\t\t%s\t%d\t%s\ton %s\t\t\n", schemas.ExecutorKey(a.ID, x.ID), state, x.Cores, mem(x.MemoryMB), x.WorkerID)
		}
	}
	if len(as) == 0 {
		fmt.Fprintln(t, "(no applications)")
	}
	return t.Flush()
}

func printStatus(w io.Writer, st *schemas.Status) {
	t := newTable(w)
	if st.Leader != nil {
		fmt.Fprintf(t, "Scheduler:\t%s (epoch %d, since %s)\n", st.Leader.ID, st.Leader.Epoch, ago(st.Leader.Since))
	} else {
		fmt.Fprintf(t, "Scheduler:\tnone (no scheduler holds the lease)\n")
	}
	fmt.Fprintf(t, "Cluster:\t%s\n", orDash(string(st.State)))
	fmt.Fprintf(t, "Cores:\t%d used of %d (alive workers)\n", st.CoresUsed, st.CoresTotal)
	fmt.Fprintf(t, "Memory:\t%s used of %s\n", mem(st.MemoryUsedMB), mem(st.MemoryTotalMB))
	fmt.Fprintf(t, "Workers:\t%s\n", counts(st.Workers))
	fmt.Fprintf(t, "Drivers:\t%s\n", counts(st.Drivers))
	fmt.Fprintf(t, "Apps:\t%s\n", counts(st.Apps))
	for _, b := range slices.Sorted(maps.Keys(st.PoisonedKeys)) {
		fmt.Fprintf(t, "Poisoned:\t%d in %s, skipped by every service: %s (stoker kv get %s KEY shows why)\n",
			st.Poisoned[b], b, strings.Join(st.PoisonedKeys[b], " "), b)
	}
	_ = t.Flush()
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}
