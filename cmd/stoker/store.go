package main

// The store's settings: flags of its owners (`stoker up`, `stoker bus`,
// `stoker init`), which provision it with bus.Provision. Services only open it.

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
)

// storeFlags are the store's settings.
type storeFlags struct {
	replicas       *int
	leaseTTL       *time.Duration
	eventsMaxAge   *time.Duration
	eventsMaxBytes *sizeFlag
}

func bindStoreFlags(fs *flag.FlagSet) *storeFlags {
	return &storeFlags{
		replicas: fs.Int("replicas", bus.DefaultReplicas, "JetStream replicas of every bucket and stream (3 on a 3-node bus)"),
		leaseTTL: fs.Duration("lease-ttl", bus.DefaultLeaseTTL,
			"scheduler lease time-to-live: the stoker-leader bucket's TTL, which every scheduler reads (how long a leader rides out a bus that cannot store its renewals; failover does not wait for it)"),
		eventsMaxAge:   fs.Duration("events-max-age", bus.DefaultEventsMaxAge, "how long the stoker-events stream keeps events"),
		eventsMaxBytes: sizeVar(fs, "events-max-bytes", bus.DefaultEventsMaxBytes>>20, "size bound of the stoker-events stream, e.g. 256m"),
	}
}

// config validates the flags and returns the store's config.
func (s *storeFlags) config() (bus.StoreConfig, error) {
	cfg := bus.StoreConfig{Replicas: *s.replicas, LeaseTTL: *s.leaseTTL, EventsMaxAge: *s.eventsMaxAge,
		EventsMaxBytes: int64(*s.eventsMaxBytes) << 20}
	for name, bad := range map[string]bool{"--replicas": cfg.Replicas <= 0, "--lease-ttl": cfg.LeaseTTL <= 0,
		"--events-max-age": cfg.EventsMaxAge <= 0, "--events-max-bytes": cfg.EventsMaxBytes <= 0} {
		if bad {
			return cfg, usagef("%s must be > 0", name)
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usagef("%v", err)
	}
	return cfg, nil
}

// provisionStore waits for JetStream on nc and provisions the store.
func provisionStore(ctx context.Context, nc *nats.Conn, cfg bus.StoreConfig, log zerolog.Logger) (*bus.Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if err := bus.WaitJetStream(ctx, js, log); err != nil {
		return nil, err
	}
	return bus.Provision(ctx, js, cfg, log)
}

// deprecatedFlag keeps a retired flag parseable, so existing command lines
// and environments still work; setting it only warns.
type deprecatedFlag struct {
	name, why, v string
	set          bool
}

func deprecatedVar(fs *flag.FlagSet, name, why string) *deprecatedFlag {
	d := &deprecatedFlag{name: name, why: why}
	fs.Var(d, name, "deprecated, ignored: "+why)
	return d
}

func (d *deprecatedFlag) String() string {
	if d == nil {
		return ""
	}
	return d.v
}

func (d *deprecatedFlag) Set(v string) error {
	d.v, d.set = v, true
	return nil
}

// warn logs that the flag was given and is ignored.
func (d *deprecatedFlag) warn(log zerolog.Logger) {
	if d.set {
		log.Warn().Str("flag", "--"+d.name).Str("value", d.v).Msg("flag ignored: " + d.why)
	}
}

// initOptions is `stoker init` parsed.
type initOptions struct {
	url      natsTarget
	store    bus.StoreConfig
	timeout  time.Duration
	logLevel string
}

func init() {
	register(&command{
		name: "init", group: "Cluster", summary: "create or check the cluster's store (buckets and stream) on an external NATS",
		usage: "[--nats URL] [--replicas 1] [--lease-ttl 10s] [--events-max-age 168h] [--events-max-bytes 256m] [--timeout 1m]",
		details: `The store (the stoker-* KV buckets and the stoker-events stream) has one
owner that creates it and checks its settings: ` + "`stoker up`" + ` and ` + "`stoker bus`" + `
do it themselves; against any other NATS, run ` + "`stoker init`" + ` once before (or
while) the services start: they wait for the store, they never create it.

Run again, it changes in place what JetStream can change (lease TTL, event
limits, descriptions) and says so; a setting it cannot change (replicas,
storage) is an error naming the bucket, both values and the fix. Exit 0 when
the store matches, 1 otherwise.`,
		examples: []string{
			"stoker init --nats nats://n1:4222,nats://n2:4222,nats://n3:4222 --replicas 3",
			"stoker init --lease-ttl 5s   # then every scheduler uses 5s",
		},
		setup: setupWith(bindInit, runInit),
	})
}

func bindInit(fs *flag.FlagSet, o *initOptions) func(args []string) error {
	url := natsFlag(fs)
	sf := bindStoreFlags(fs)
	timeout := fs.Duration("timeout", time.Minute, "give up after this long (a cluster may still be electing its leader)")
	level := logLevelFlag(fs)
	return func(args []string) error {
		if err := noArgs("init", args); err != nil {
			return err
		}
		cfg, err := sf.config()
		if err != nil {
			return err
		}
		if *timeout <= 0 {
			return usagef("--timeout must be > 0, got %s", *timeout)
		}
		*o = initOptions{url: url.target(auth.RoleAdmin), store: cfg, timeout: *timeout, logLevel: *level}
		return nil
	}
}

func runInit(ctx context.Context, e *env, o *initOptions) error {
	log, err := newLogger(e, o.logLevel)
	if err != nil {
		return err
	}
	nc, err := o.url.connect(bus.ConnectOptions{Name: "stoker-init", Log: &log})
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if _, err := provisionStore(ctx, nc, o.store, log); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "store ready on %s: buckets %s, stream %s; replicas %d, lease TTL %s\n",
		nc.ConnectedUrlRedacted(), strings.Join(bus.Buckets(), " "), bus.StreamEvents,
		o.store.Replicas, o.store.LeaseTTL)
	return nil
}
