package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the result as JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the result as a table, then the failures.
func (r *Result) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "stoker bench: %d agents, %d executors, %d apps; load %s; %s\n", r.Agents, r.Executors, r.Apps, r.Load, r.Started)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tFIGURE\tVALUE\tP99\tMIN\tMAX\tN\tNOTE")
	for _, row := range r.Rows {
		p99, mn, mx, n := "", "", "", ""
		if row.N > 0 {
			p99, mn, mx, n = num(row.P99), num(row.Min), num(row.Max), fmt.Sprint(row.N)
		}
		val := strings.TrimSpace(num(row.Value) + " " + row.Unit)
		if row.Unit == "" && row.Value == 0 && row.Note != "" && strings.HasPrefix(row.Note, "not measured") {
			val = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", row.Scenario, row.Figure, val, p99, mn, mx, n, row.Note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Failures) == 0 {
		fmt.Fprintln(w, "checks: no executor lost or doubled, every count as asked")
		return nil
	}
	fmt.Fprintf(w, "FAILED checks (%d):\n", len(r.Failures))
	for _, f := range r.Failures {
		fmt.Fprintln(w, "  "+f)
	}
	return nil
}

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
