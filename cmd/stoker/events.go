package main

// stoker events: the cluster's history from the stoker-events stream.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/sdk"
)

func init() {
	register(&command{
		name: "events", group: "Clients", summary: "print the cluster's history of state changes (stream stoker-events)",
		usage: "[--follow] [--since 10m | --last 100] [--kind K] [--json] [--nats URL]",
		details: `Every change of a worker, driver, app, executor, the cluster phase and the
scheduler lease is published on stoker.events.<kind>.<id> and kept in the
JetStream stream stoker-events (7 days or 256 MiB). Without --since the last
--last events are printed; --follow keeps printing new ones until Ctrl-C.
Lines are "time kind id state message"; --json prints one JSON object a line.`,
		examples: []string{
			"stoker events",
			"stoker events --since 1h --kind worker",
			"stoker events --follow --kind driver",
			"stoker events --since 10m --json | jq -c 'select(.state==\"FAILED\")'",
		},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url, asJSON := natsFlag(fs), jsonFlag(fs)
			follow := fs.Bool("follow", false, "keep printing new events until interrupted")
			since := fs.Duration("since", 0, "print events newer than this (e.g. 10m, 2h); default: the last --last events")
			last := fs.Int("last", 100, "without --since: how many of the latest events to print")
			kind := fs.String("kind", "", "only this kind: "+strings.Join(bus.EventKinds, ", "))
			return func(ctx context.Context, args []string) error {
				if err := noArgs("events", args); err != nil {
					return err
				}
				q := bus.EventQuery{Since: *since, Last: *last, Kind: *kind, Follow: *follow}
				if err := q.Validate(); err != nil {
					return usagef("--%v", err) // its messages start with the flag's name
				}
				return withClient(url.target(auth.RoleAdmin, auth.RoleViewer), func(c *sdk.Client) error {
					return c.Events(ctx, q, func(ev bus.StoredEvent) error { return writeEvent(e.stdout, ev, *asJSON) })
				})
			}
		},
	})
}

// writeEvent prints one event: "time kind id state message", or a JSON line.
func writeEvent(w io.Writer, l bus.StoredEvent, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(l)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintf(w, "%s  %-8s  %-28s  %-13s  %s\n",
		l.At.Local().Format("2006-01-02 15:04:05.000"), l.Kind, l.ID, l.State, l.Message)
	return err
}
