package main

// stoker health: an exit code for container health checks (images are
// FROM scratch: no shell, no curl, only this binary).

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
)

// setCounter is a string flag that counts how often it was set: once from
// the environment and once more from the command line tells them apart.
type setCounter struct {
	v    string
	sets int
}

func (s *setCounter) String() string {
	if s == nil {
		return ""
	}
	return s.v
}

func (s *setCounter) Set(v string) error {
	s.v = v
	s.sets++
	return nil
}

func init() {
	register(&command{
		name: "health", group: "Other", summary: "check that the bus and the cluster's store answer (exit 0 healthy, 1 not)",
		usage: "[--bus] [--timeout 2s] [--nats URL]",
		details: `Prints one line and exits 0 when healthy, 1 otherwise: a container health
check that needs no shell.

Without --bus: connects to --nats, checks that JetStream answers (account
info) and that every stoker bucket and the stoker-events stream exist, i.e.
the store's owner (stoker up, stoker bus or stoker init) has provisioned it.

With --bus: checks only that this NATS node answers JetStream requests (in a
cluster: that it has a meta leader), for a bus container's own health check.
--nats then defaults to ` + bus.DefaultURL + `, not $` + envNATSURL + `. With --monitor
HOST:PORT it asks the node's monitoring endpoint (/healthz) instead, which
needs no credentials (` + "`stoker bus --monitor-port`" + ` serves it on 127.0.0.1).

A bus with authentication needs a credential for the client checks: --creds
or $` + envCreds + ` (any role that may read the store: viewer will do).`,
		examples: []string{
			"stoker health",
			"stoker health --bus                # in a bus container",
			`healthcheck: {test: ["CMD", "/stoker", "health", "--bus"], interval: 2s}`,
		},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url := &setCounter{v: bus.DefaultURL}
			fs.Var(url, "nats", "NATS server `URL`(s), comma separated [$"+envNATSURL+"]")
			busOnly := fs.Bool("bus", false, "check only that this NATS node answers JetStream (not the stoker store)")
			monitor := fs.String("monitor", "", "with --bus: ask this node's monitoring endpoint HOST:PORT (no credentials needed)")
			creds := fs.String("creds", "", "credentials file [$"+envCreds+"]")
			ca := fs.String("tls-ca", "", "CA certificate of the bus [$"+envTLSCA+"]")
			timeout := fs.Duration("timeout", 2*time.Second, "give up and report unhealthy after this long")
			return func(ctx context.Context, args []string) error {
				if err := noArgs("health", args); err != nil {
					return err
				}
				if *timeout <= 0 {
					return usagef("--timeout must be positive, got %s", *timeout)
				}
				var (
					msg string
					err error
				)
				if *busOnly && *monitor != "" {
					msg, err = monitorHealth(ctx, *monitor, *timeout)
				} else {
					t := natsTarget{URL: healthTarget(url, *busOnly, e.getenv(envNATSURL)), Creds: *creds, CA: *ca}
					if t.CA == "" && t.Creds != "" {
						t.CA = caNextTo(t.Creds)
					}
					msg, err = checkHealth(ctx, t, *busOnly, *timeout)
				}
				if err != nil {
					fmt.Fprintf(e.stderr, "unhealthy: %v\n", err)
					return &exitError{code: exitFailure}
				}
				fmt.Fprintf(e.stdout, "healthy: %s\n", msg)
				return nil
			}
		},
	})
}

// healthTarget is the URL to check. With --bus, a --nats set only by
// $STOKER_NATS_URL (which names the whole cluster) gives way to this node's
// own default URL; an explicit --nats always wins.
func healthTarget(url *setCounter, busOnly bool, envURL string) string {
	if busOnly && url.sets == 1 && envURL != "" && envURL == url.v {
		return bus.DefaultURL
	}
	return url.v
}

// checkHealth runs the checks within timeout and says what it found.
func checkHealth(ctx context.Context, t natsTarget, busOnly bool, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		msg string
		err error
	}
	done := make(chan result, 1)
	go func() {
		msg, err := healthChecks(ctx, t, busOnly)
		done <- result{msg, err}
	}()
	select {
	case r := <-done:
		return r.msg, r.err
	case <-ctx.Done():
		return "", fmt.Errorf("no answer from %s within %s", t.URL, timeout)
	}
}

func healthChecks(ctx context.Context, t natsTarget, busOnly bool) (string, error) {
	nc, err := t.connect(bus.ConnectOptions{Name: "stoker-health"})
	if err != nil {
		return "", err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	at := fmt.Sprintf("NATS %s at %s", nc.ConnectedServerName(), nc.ConnectedUrlRedacted())
	streams, err := bus.JetStreamReady(ctx, js)
	if err != nil {
		return "", fmt.Errorf("%s: %w", at, err)
	}
	if busOnly {
		return fmt.Sprintf("%s answers JetStream (%d streams)", at, streams), nil
	}
	if _, err := bus.OpenStore(ctx, js); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s: JetStream answers, buckets %s and stream %s exist",
		at, strings.Join(bus.Buckets(), " "), bus.StreamEvents), nil
}

// monitorHealth asks a node's monitoring endpoint whether JetStream is up
// with a meta leader: no client connection, so no credentials
// (SECURITY-NOTES trap 14).
func monitorHealth(ctx context.Context, hostPort string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := "http://" + hostPort + "/healthz?js-meta-only=true"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("monitoring endpoint %s: %w", hostPort, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return fmt.Sprintf("NATS node at %s: JetStream up with a meta leader", hostPort), nil
}
