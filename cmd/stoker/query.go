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
		// "context deadline exceeded" while the bus has no quorum says
		// nothing: say so, with how many nodes the client can reach.
		err = bus.ExplainQuorum(context.Background(), nc, err)
	}
	return err
}

// quorumWait bounds how long a read command retries while the bus has no
// quorum.
const quorumWait = 10 * time.Second

// retryNoQuorum runs fn, and again with backoff while it fails because the
// bus has no quorum, for up to wait (0: until ctx ends), saying once on
// stderr why it waits. Only for requests safe to repeat.
func retryNoQuorum(ctx context.Context, stderr io.Writer, nc *nats.Conn, wait time.Duration, fn func() error) error {
	return retryWhile(ctx, stderr, nc, wait, false, fn)
}

// retryWhile is retryNoQuorum; with unavailable, it also retries any
// error that says the bus did not answer (a timeout, a 503, a service's
// 500 while streams elect leaders after the quorum is back).
func retryWhile(ctx context.Context, stderr io.Writer, nc *nats.Conn, wait time.Duration, unavailable bool, fn func() error) error {
	backoff := 250 * time.Millisecond
	var deadline time.Time
	if wait > 0 {
		deadline = time.Now().Add(wait)
	}
	said := ""
	for {
		err := bus.ExplainQuorum(ctx, nc, fn())
		again := errors.Is(err, bus.ErrNoQuorum) || (unavailable && bus.Unavailable(err))
		if !again || ctx.Err() != nil || (!deadline.IsZero() && time.Now().Add(backoff).After(deadline)) {
			return err
		}
		if msg := strings.SplitN(err.Error(), ":", 2)[0]; msg != said {
			said = msg
			fmt.Fprintf(stderr, "%s; retrying\n", msg)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// withReader is withClient for requests that only read: retried while the
// bus has no quorum, for up to quorumWait.
func withReader(ctx context.Context, stderr io.Writer, t natsTarget, fn func(c *sdk.Client) error) error {
	return withConn(t, func(nc *nats.Conn) error {
		c := newClient(nc)
		return retryNoQuorum(ctx, stderr, nc, quorumWait, func() error { return fn(c) })
	})
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
		usage:    "[ID] [--all] [--state S,...] [--json] [--nats URL]",
		details:  listDetails,
		examples: []string{"stoker workers", "stoker workers --json | jq '.[] | select(.state==\"ALIVE\") | .id'", "stoker workers vm-1-3f2a", "stoker workers --state dead"},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url, asJSON := natsFlag(fs), jsonFlag(fs)
			lf := bindListFilter(fs)
			return func(ctx context.Context, args []string) error {
				id, err := optionalID("workers", args)
				if err != nil {
					return err
				}
				return withReader(ctx, e.stderr, url.target(auth.RoleAdmin, auth.RoleViewer), func(c *sdk.Client) error {
					if id != "" {
						d, err := c.Worker(ctx, id)
						if err != nil {
							return err
						}
						return printWorker(e.stdout, d, *asJSON)
					}
					ws, err := c.WorkersWhere(ctx, lf.request())
					if err != nil {
						return err
					}
					ws, hidden := trimEnded(lf, *asJSON, ws, func(w schemas.WorkerView) bool { return w.State.Gone() })
					if err := printWorkers(e.stdout, ws, *asJSON); err != nil {
						return err
					}
					return hiddenNote(e.stdout, hidden, "DEAD or DECOMMISSIONED workers")
				})
			}
		},
	})
	register(&command{
		name: "drivers", group: "Clients", interspersed: true, summary: "list submitted drivers and their state, or show one in detail",
		usage:    "[ID] [--all] [--state S,...] [--json] [--nats URL]",
		details:  listDetails,
		examples: []string{"stoker drivers", "stoker drivers --json", "stoker drivers driver-20260101120000-1a2b3c", "stoker drivers --state failed,error"},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url, asJSON := natsFlag(fs), jsonFlag(fs)
			lf := bindListFilter(fs)
			return func(ctx context.Context, args []string) error {
				id, err := optionalID("drivers", args)
				if err != nil {
					return err
				}
				return withReader(ctx, e.stderr, url.target(auth.RoleAdmin, auth.RoleViewer), func(c *sdk.Client) error {
					if id != "" {
						d, err := c.DriverDetail(ctx, id)
						if err != nil {
							return err
						}
						return printDriver(e.stdout, d, *asJSON)
					}
					ds, err := c.DriversWhere(ctx, lf.request())
					if err != nil {
						return err
					}
					ds, hidden := trimEnded(lf, *asJSON, ds, func(d schemas.Driver) bool { return d.State.Terminal() })
					if err := printDrivers(e.stdout, ds, *asJSON); err != nil {
						return err
					}
					return hiddenNote(e.stdout, hidden, "ended drivers")
				})
			}
		},
	})
	register(&command{
		name: "apps", group: "Clients", interspersed: true, summary: "list applications and their executors, or show one in detail",
		usage:    "[ID] [--all] [--state S,...] [--json] [--nats URL]",
		details:  listDetails,
		examples: []string{"stoker apps", "stoker apps --json | jq '.[].executors'", "stoker apps app-20260101120000-1a2b3c --json", "stoker apps --state running", "stoker apps --all"},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url, asJSON := natsFlag(fs), jsonFlag(fs)
			lf := bindListFilter(fs)
			return func(ctx context.Context, args []string) error {
				id, err := optionalID("apps", args)
				if err != nil {
					return err
				}
				return withReader(ctx, e.stderr, url.target(auth.RoleAdmin, auth.RoleViewer), func(c *sdk.Client) error {
					if id != "" {
						a, err := c.App(ctx, id)
						if err != nil {
							return err
						}
						return printApp(e.stdout, a, *asJSON)
					}
					as, err := c.AppsWhere(ctx, lf.request())
					if err != nil {
						return err
					}
					as, hidden := trimEnded(lf, *asJSON, as, func(a schemas.AppView) bool { return a.State.Terminal() })
					if err := printApps(e.stdout, as, *asJSON); err != nil {
						return err
					}
					return hiddenNote(e.stdout, hidden, "ended apps")
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
				return withReader(ctx, e.stderr, url.target(auth.RoleAdmin, auth.RoleViewer), func(c *sdk.Client) error {
					st, err := c.Status(ctx)
					if err != nil {
						return err
					}
					if *asJSON {
						return writeJSON(e.stdout, st)
					}
					// The leader's pace; a cluster with no leader (or
					// one that does not answer in time) shows without it.
					sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					ss, _ := c.SchedulerStatus(sctx)
					cancel()
					printStatus(e.stdout, st, ss)
					return nil
				})
			}
		},
	})
}

// listDetails explains the list filters of workers, drivers and apps.
const listDetails = `Work that has not ended comes first (ALIVE and UNKNOWN workers; drivers and
apps not FINISHED, FAILED, KILLED or ERROR), then what has ended. The table
shows the ` + "10" + ` most recent ended items; --all shows every one the cluster
keeps (registration's --retained-apps, --retained-drivers and
--dead-worker-ttl bound that). --json lists every one unless --state is
given. --state lists only those states (comma-separated, any case).`

// shownEnded is how many ended items a table shows without --all.
const shownEnded = 10

// listFilter is the --all and --state flags of a list command.
type listFilter struct {
	all    *bool
	states *string
}

func bindListFilter(fs *flag.FlagSet) listFilter {
	return listFilter{
		all:    fs.Bool("all", false, "list every item kept, ended ones too (the table shows the newest 10 ended otherwise)"),
		states: fs.String("state", "", "only items in these states, comma-separated (e.g. running,waiting)"),
	}
}

// request is the list request the flags make.
func (f listFilter) request() schemas.ListRequest {
	var r schemas.ListRequest
	for _, s := range strings.Split(*f.states, ",") {
		if s = strings.TrimSpace(s); s != "" {
			r.States = append(r.States, strings.ToUpper(s))
		}
	}
	return r
}

// trimEnded keeps, for a table without --all or --state, the live items
// and the newest shownEnded ended ones (the answer lists live work first,
// ended work oldest first); it returns how many it left out.
func trimEnded[T any](f listFilter, asJSON bool, items []T, ended func(T) bool) ([]T, int) {
	if asJSON || *f.all || *f.states != "" {
		return items, 0
	}
	var live, done []T
	for _, x := range items {
		if ended(x) {
			done = append(done, x)
		} else {
			live = append(live, x)
		}
	}
	if len(done) <= shownEnded {
		return items, 0
	}
	return append(live, done[len(done)-shownEnded:]...), len(done) - shownEnded
}

// hiddenNote says what trimEnded left out.
func hiddenNote(w io.Writer, hidden int, what string) error {
	if hidden == 0 {
		return nil
	}
	_, err := fmt.Fprintf(w, "(%d older %s not shown; --all lists them)\n", hidden, what)
	return err
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
	sort.SliceStable(ws, func(i, j int) bool {
		if gi, gj := ws[i].State.Gone(), ws[j].State.Gone(); gi != gj {
			return gj // live workers first
		}
		return ws[i].ID < ws[j].ID
	})
	// RESOURCES and LABELS appear only on a cluster that has some.
	extra := false
	for _, v := range ws {
		extra = extra || len(v.Resources) > 0 || len(v.Labels) > 0
	}
	t := newTable(w)
	head := "ID\tHOST\tSTATE\tCORES\tMEMORY\tEXECUTORS\tDRIVERS\tREGISTERED"
	if extra {
		head += "\tRESOURCES (FREE/TOTAL)\tLABELS"
	}
	fmt.Fprintln(t, head)
	for _, v := range ws {
		state := v.Phase()
		if v.Cordoned {
			state += ",cordoned"
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%d/%d\t%s/%s\t%d\t%d\t%s", v.ID, orDash(v.Host), state,
			v.CoresUsed, v.Cores, mem(v.MemoryUsedMB), mem(v.MemoryMB), v.Executors, v.Drivers, ago(v.RegisteredAt))
		if extra {
			fmt.Fprintf(t, "\t%s\t%s", orDash(resourcesFree(v)), orDash(v.Labels.String()))
		}
		fmt.Fprintln(t)
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
			state := executorEnd(x.State, x.ExitCode)
			fmt.Fprintf(t, "  %s\t\t%s\t%d\t%s\ton %s\t\t\n", schemas.ExecutorKey(a.ID, x.ID), state, x.Cores, mem(x.MemoryMB), x.WorkerID)
		}
	}
	if len(as) == 0 {
		fmt.Fprintln(t, "(no applications)")
	}
	return t.Flush()
}

func printStatus(w io.Writer, st *schemas.Status, ss *schemas.SchedulerStatus) {
	t := newTable(w)
	if st.Leader != nil {
		fmt.Fprintf(t, "Scheduler:\t%s (term %d, since %s)\n", st.Leader.ID, st.Leader.Term, ago(st.Leader.Since))
		if ss != nil {
			fmt.Fprintf(t, "In flight:\t%s\n", inFlight(ss))
		}
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

// inFlight is the leader's pace: what is in flight against its window.
func inFlight(ss *schemas.SchedulerStatus) string {
	window := "no bound"
	switch {
	case ss.Window > 0 && ss.FlowTargetMS > 0:
		window = fmt.Sprintf("window %d of at most %d, halved when most reports take over %s (%d of %d rounds did)",
			ss.Window, ss.MaxInFlight, time.Duration(ss.FlowTargetMS)*time.Millisecond, ss.WindowCuts, ss.WindowRounds)
	case ss.Window > 0:
		window = fmt.Sprintf("window %d (constant)", ss.Window)
	}
	return fmt.Sprintf("%d launching, %d being killed; %s", ss.Launching, ss.Killing, window)
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

// resourcesFree is "gpu 2/4" (free/total) for each custom resource, names sorted.
func resourcesFree(v schemas.WorkerView) string { return v.ResourcesFree() }
