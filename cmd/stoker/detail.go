package main

// `stoker workers|drivers|apps ID`: one thing in detail.

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

// when is a time for a person: RFC 3339 and how long ago.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339) + " (" + ago(t) + ")"
}

// executorEnd is an executor's state with how its process ended. A KILLED
// one that exited 0 was told to stop (its app ended, or stoker kill) and
// stopped cleanly: "KILLED (exit 0)" read as a contradiction (pi's
// executors at the end of every run).
func executorEnd(st schemas.ExecutorState, code *int) string {
	switch {
	case code == nil:
		return string(st)
	case st == schemas.ExecutorKilled && *code == 0:
		return string(st) + " (stopped cleanly when told to)"
	case st == schemas.ExecutorKilled && *code > 128:
		return fmt.Sprintf("%s (ended by signal %d)", st, *code-128)
	}
	return fmt.Sprintf("%s (exit %d)", st, *code)
}

func exitOf(code *int) string {
	if code == nil {
		return "-"
	}
	return fmt.Sprint(*code)
}

func printWorker(w io.Writer, d *sdk.WorkerDetail, asJSON bool) error {
	if asJSON {
		return writeJSON(w, d)
	}
	v := d.Worker
	t := newTable(w)
	fmt.Fprintf(t, "Worker:\t%s\n", v.ID)
	fmt.Fprintf(t, "State:\t%s\n", v.Phase())
	if d := v.Drain; d != nil {
		fmt.Fprintf(t, "Drain:\tsince %s, deadline %s (by %s)\n", when(d.Since), when(d.Deadline), orDash(d.By))
	}
	if v.Cordoned {
		fmt.Fprintf(t, "Cordoned:\tyes (no new placements; stoker uncordon %s)\n", v.ID)
	}
	fmt.Fprintf(t, "Host:\t%s\n", orDash(v.Host))
	if v.PID != 0 {
		fmt.Fprintf(t, "Agent:\tpid %d, started %s\n", v.PID, when(v.Since))
	}
	fmt.Fprintf(t, "Work dir:\t%s\n", orDash(v.WorkDir))
	fmt.Fprintf(t, "Cores:\t%d used of %d\n", v.CoresUsed, v.Cores)
	fmt.Fprintf(t, "Memory:\t%s used of %s\n", mem(v.MemoryUsedMB), mem(v.MemoryMB))
	fmt.Fprintf(t, "Registered:\t%s\n", when(v.RegisteredAt))
	fmt.Fprintf(t, "Updated:\t%s\n", when(v.UpdatedAt))
	if err := t.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nExecutors (%d):\n", len(d.Executors))
	t = newTable(w)
	fmt.Fprintln(t, "  ID\tSTATE\tEXIT\tCORES\tMEMORY\tPID\tUPDATED\tMESSAGE")
	for _, x := range d.Executors {
		fmt.Fprintf(t, "  %s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", schemas.ExecutorKey(x.AppID, x.ID), x.State, exitOf(x.ExitCode),
			x.Cores, mem(x.MemoryMB), pidOf(x.PID), ago(x.UpdatedAt), executorNote(x.ExecutorView))
	}
	if err := t.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nDrivers (%d):\n", len(d.Drivers))
	t = newTable(w)
	fmt.Fprintln(t, "  ID\tSTATE\tEXIT\tATTEMPTS\tCORES\tMEMORY\tUPDATED\tMESSAGE")
	for _, dr := range d.Drivers {
		fmt.Fprintf(t, "  %s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", dr.ID, dr.State, exitOf(dr.ExitCode), dr.Attempts,
			dr.Cores, mem(dr.MemoryMB), ago(dr.UpdatedAt), dr.Message)
	}
	return t.Flush()
}

func pidOf(pid int) string {
	if pid == 0 {
		return "-"
	}
	return fmt.Sprint(pid)
}

// executorNote is an executor's launch error, else its message.
func executorNote(x schemas.ExecutorView) string {
	if x.Error != "" {
		return "launch failed: " + x.Error
	}
	return x.Message
}

func printDriver(w io.Writer, d *sdk.DriverDetail, asJSON bool) error {
	if asJSON {
		return writeJSON(w, d)
	}
	v := d.Driver
	t := newTable(w)
	fmt.Fprintf(t, "Driver:\t%s\n", v.ID)
	fmt.Fprintf(t, "Name:\t%s\n", orDash(v.Name))
	fmt.Fprintf(t, "State:\t%s\n", v.State)
	fmt.Fprintf(t, "Worker:\t%s\n", orDash(v.WorkerID))
	fmt.Fprintf(t, "Attempts:\t%d (supervise: %v)\n", v.Attempts, v.Supervise)
	fmt.Fprintf(t, "Exit code:\t%s\n", exitOf(v.ExitCode))
	fmt.Fprintf(t, "PID:\t%s\n", pidOf(v.PID))
	fmt.Fprintf(t, "Resources:\t%s, %s\n", schemas.FormatCores(v.Cores), mem(v.MemoryMB))
	fmt.Fprintf(t, "Command:\t%s\n", strings.Join(v.Command, " "))
	fmt.Fprintf(t, "Message:\t%s\n", orDash(v.Message))
	fmt.Fprintf(t, "Submitted:\t%s\n", when(v.SubmittedAt))
	fmt.Fprintf(t, "Updated:\t%s\n", when(v.UpdatedAt))
	if err := t.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nApplications (%d):\n", len(d.Apps))
	t = newTable(w)
	for _, a := range d.Apps {
		fmt.Fprintf(t, "  %s\t%s\t%s\t%d executors\n", a.ID, orDash(a.Name), a.State, len(a.Executors))
	}
	return t.Flush()
}

func printApp(w io.Writer, a *schemas.AppView, asJSON bool) error {
	if a.Executors == nil {
		a.Executors = []schemas.ExecutorView{}
	}
	if asJSON {
		return writeJSON(w, a)
	}
	t := newTable(w)
	fmt.Fprintf(t, "Application:\t%s\n", a.ID)
	fmt.Fprintf(t, "Name:\t%s\n", orDash(a.Name))
	fmt.Fprintf(t, "State:\t%s\n", a.State)
	fmt.Fprintf(t, "Driver:\t%s\n", orDash(a.DriverID))
	maxC := "no cap"
	if a.MaxCores > 0 {
		maxC = fmt.Sprintf("cap %d", a.MaxCores)
	}
	fmt.Fprintf(t, "Cores:\t%d granted (%s)\n", a.CoresGranted, maxC)
	fmt.Fprintf(t, "Executor:\t%s, %s each\n", schemas.FormatCores(a.ExecutorCores), mem(a.ExecutorMemoryMB))
	fmt.Fprintf(t, "Failures:\t%d in a row\n", a.ConsecutiveFailures)
	fmt.Fprintf(t, "Message:\t%s\n", orDash(a.Message))
	fmt.Fprintf(t, "Submitted:\t%s\n", when(a.SubmittedAt))
	if err := t.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nExecutors (%d):\n", len(a.Executors))
	t = newTable(w)
	fmt.Fprintln(t, "  ID\tSTATE\tEXIT\tWORKER\tPID\tSTARTED\tUPDATED\tMESSAGE")
	for _, x := range a.Executors {
		fmt.Fprintf(t, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", schemas.ExecutorKey(a.ID, x.ID), x.State, exitOf(x.ExitCode),
			orDash(x.WorkerID), pidOf(x.PID), ago(x.CreatedAt), ago(x.UpdatedAt), executorNote(x))
	}
	return t.Flush()
}
