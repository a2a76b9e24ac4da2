package main

// stoker kv get|ls|rm: the KV records, decoded for people; rm deletes a
// poisoned one.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/schemas"
)

// kvSummaries is one line per record for `stoker kv ls`, by bucket (the
// bucket → record type table itself is bus.StoreBuckets).
var kvSummaries = map[string]func(v any, rev uint64) string{
	bus.BucketWorkers: func(v any, rev uint64) string {
		w := v.(*schemas.Worker)
		return fmt.Sprintf("%s  %s  %s  host %s", w.State, schemas.FormatCores(w.Cores), mem(w.MemoryMB), orDash(w.Host))
	},
	bus.BucketDrivers: func(v any, rev uint64) string {
		d := v.(*schemas.Driver)
		return fmt.Sprintf("%s  worker %s  attempts %d", d.State, orDash(d.WorkerID), d.Attempts)
	},
	bus.BucketApps: func(v any, rev uint64) string {
		a := v.(*schemas.App)
		return fmt.Sprintf("%s  %s  driver %s", a.State, orDash(a.Name), orDash(a.DriverID))
	},
	bus.BucketExecutors: func(v any, rev uint64) string {
		x := v.(*schemas.Executor)
		return fmt.Sprintf("%s  worker %s  %s  %s", x.State, x.WorkerID, schemas.FormatCores(x.Cores), mem(x.MemoryMB))
	},
	bus.BucketLeader: func(v any, rev uint64) string {
		l := v.(*schemas.Lease)
		return fmt.Sprintf("holder %s  epoch %d  since %s", l.Holder, l.EpochOf(rev), ago(l.Since))
	},
	bus.BucketCluster: func(v any, rev uint64) string {
		c := v.(*schemas.Cluster)
		return fmt.Sprintf("%s  epoch %d  leader %s", c.State, c.Epoch, orDash(c.Leader))
	},
}

// findBucket accepts a bucket's full name (stoker-workers) or its short one (workers).
func findBucket(name string) (bus.Bucket, error) {
	if b, ok := bus.FindBucket(name); ok {
		return b, nil
	}
	return bus.Bucket{}, usagef("unknown bucket %q; one of %s", name, strings.Join(bus.Buckets(), ", "))
}

// kvRecord is a record as `stoker kv get|ls --json` prints it.
type kvRecord struct {
	Bucket   string    `json:"bucket"`
	Key      string    `json:"key"`
	Revision uint64    `json:"revision"`
	Created  time.Time `json:"created"`
	Value    any       `json:"value"`
	// Poisoned says why every reader skips the record (bus.DecodeChecked);
	// then Value is the raw stored text.
	Poisoned string `json:"poisoned,omitempty"`
	// ReadFrom says who answered: "stream leader <server>", or a warning
	// that any replica may have (direct gets on: possibly old data).
	ReadFrom string `json:"read_from,omitempty"`
}

// kvEntry is r as printed; poisoned (the reason every reader skips it), it
// shows the raw stored text.
func kvEntry(b bus.Bucket, r bus.Record, poisoned error) kvRecord {
	rec := kvRecord{Bucket: b.Name, Key: r.Key, Revision: r.Revision, Created: r.Created, Value: r.Value}
	if poisoned != nil {
		rec.Value, rec.Poisoned = string(r.Raw), poisoned.Error()
	}
	return rec
}

func init() {
	register(&command{
		name: "kv", group: "Clients", summary: "show KV records decoded: kv get BUCKET KEY, kv ls BUCKET; kv rm BUCKET KEY",
		usage: "get BUCKET KEY [--json] | ls BUCKET [--json] | rm BUCKET KEY [--revision N]  [--nats URL]",
		details: `BUCKET is stoker-workers, -drivers, -apps, -executors, -leader or -cluster
(or the short name: workers, ...). get prints the record as indented JSON of its
schemas type with its revision and the time it was written; ls prints every
live key with a summary. Records are JSON, so ` + "`nats kv get`" + ` shows them too.

A poisoned record (one that does not decode, or breaks an invariant of its
type: negative resources, an unknown state, a key that is not its id) is
skipped by every service and counted by stoker status; get and ls show it raw
with the reason. rm deletes one key, only if its revision is still the one
shown (--revision, default: the current one, read first): an admin's tool
(the bus's permissions decide who may), meant for poisoned records.`,
		examples: []string{
			"stoker kv ls workers",
			"stoker kv get stoker-leader scheduler",
			"stoker kv get stoker-executors app-20250101120000-ab12.0 --json | jq .value.state",
			"stoker kv rm apps app-20250101120000-ab12 --revision 42",
		},
		interspersed: true,
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url, asJSON := natsFlag(fs), jsonFlag(fs)
			revision := fs.Uint64("revision", 0, "kv rm: delete only if the key's last revision is this one (default: the current one)")
			return func(ctx context.Context, args []string) error {
				if len(args) == 0 {
					return usagef("expected get BUCKET KEY, ls BUCKET or rm BUCKET KEY")
				}
				var want int
				switch args[0] {
				case "get", "rm":
					want = 3
				case "ls", "list":
					want = 2
				default:
					return usagef("unknown kv command %q (get, ls or rm)", args[0])
				}
				if len(args) != want {
					return usagef("kv %s expects %d argument(s), got %d", args[0], want-1, len(args)-1)
				}
				b, err := findBucket(args[1])
				if err != nil {
					return err
				}
				return withConn(url.target(auth.RoleAdmin, auth.RoleViewer), func(nc *nats.Conn) error {
					kv, err := openBucket(ctx, nc, b)
					if err != nil {
						return err
					}
					switch {
					case args[0] == "rm":
						return kvRm(ctx, e.stdout, b, kv, args[2], *revision)
					case want == 3:
						return kvGet(ctx, e.stdout, b, kv, args[2], *asJSON, readFrom(ctx, nc, b))
					}
					return kvList(ctx, e.stdout, b, kv, *asJSON)
				})
			}
		},
	})
}

func openBucket(ctx context.Context, nc *nats.Conn, b bus.Bucket) (jetstream.KeyValue, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := bus.OpenStore(ctx, js)
	if err != nil {
		return nil, err
	}
	return b.In(st), nil
}

// readFrom says which server answers a Get on b: the stream leader (direct
// gets off, as the store's owner provisions them), or a warning that any
// replica may answer with old data.
func readFrom(ctx context.Context, nc *nats.Conn, b bus.Bucket) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		return ""
	}
	s, err := js.Stream(ctx, "KV_"+b.Name)
	if err != nil {
		return fmt.Sprintf("unknown (no stream info: %v); the value may be old", err)
	}
	info := s.CachedInfo()
	leader := "the server"
	if info.Cluster != nil && info.Cluster.Leader != "" {
		leader = info.Cluster.Leader
	}
	if info.Config.AllowDirect {
		return fmt.Sprintf("WARNING: direct gets are on for %s: any replica may have answered, possibly with old data "+
			"(the stream leader is %s; run `stoker init` to turn them off)", b.Name, leader)
	}
	return "stream leader " + leader
}

func kvGet(ctx context.Context, w io.Writer, b bus.Bucket, kv jetstream.KeyValue, key string, asJSON bool, from string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := bus.GetRecord(ctx, kv, key, b.Record)
	if err == nil {
		err = bus.CheckRecord(key, r.Value)
	}
	if err != nil && r.Revision == 0 { // not there, or not read
		return err
	}
	rec := kvEntry(b, r, err)
	rec.ReadFrom = from
	if asJSON {
		return writeJSON(w, rec)
	}
	fmt.Fprintf(w, "%s/%s  revision %d  written %s (%s)\n", b.Name, key, rec.Revision,
		rec.Created.Local().Format("2006-01-02 15:04:05.000"), ago(rec.Created))
	if from != "" {
		fmt.Fprintf(w, "read from %s\n", from)
	}
	if rec.Poisoned != "" {
		fmt.Fprintf(w, "POISONED: %s\nskipped by every service; delete it with: stoker kv rm %s %s --revision %d\nraw value:\n%s\n",
			rec.Poisoned, b.Name, key, rec.Revision, rec.Value)
		return nil
	}
	return writeJSON(w, rec.Value)
}

// kvRm deletes key if its last revision is rev (0: the current one, read
// first), so a record rewritten meanwhile is never deleted unseen.
func kvRm(ctx context.Context, w io.Writer, b bus.Bucket, kv jetstream.KeyValue, key string, rev uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if rev == 0 {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return fmt.Errorf("%s %q: %w", b.Name, key, bus.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("%s %q: %w", b.Name, key, err)
		}
		rev = e.Revision()
	}
	if err := kv.Delete(ctx, key, jetstream.LastRevision(rev)); err != nil {
		if bus.IsCASConflict(err) {
			return fmt.Errorf("%s %q: not deleted: its revision is no longer %d (look again with stoker kv get)", b.Name, key, rev)
		}
		return fmt.Errorf("%s %q: %w", b.Name, key, err)
	}
	fmt.Fprintf(w, "deleted %s/%s (revision %d)\n", b.Name, key, rev)
	return nil
}

func kvList(ctx context.Context, w io.Writer, b bus.Bucket, kv jetstream.KeyValue, asJSON bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	recs := []kvRecord{}
	// A poisoned record is listed raw with its reason, not skipped.
	all, err := bus.ListRecords(ctx, kv, b.Record, func(r bus.Record, p bus.Poison) {
		recs = append(recs, kvEntry(b, r, p.Err))
	})
	if err != nil {
		return fmt.Errorf("%s: %w", b.Name, err)
	}
	for _, r := range all {
		recs = append(recs, kvEntry(b, r, nil))
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Key < recs[j].Key })
	if asJSON {
		return writeJSON(w, recs)
	}
	t := newTable(w)
	fmt.Fprintln(t, "KEY\tREVISION\tWRITTEN\tSUMMARY")
	for _, r := range recs {
		sum := "POISONED: " + r.Poisoned
		if r.Poisoned == "" {
			sum = kvSummaries[b.Name](r.Value, r.Revision)
		}
		fmt.Fprintf(t, "%s\t%d\t%s\t%s\n", r.Key, r.Revision, ago(r.Created), sum)
	}
	if len(recs) == 0 {
		fmt.Fprintf(t, "(no keys in %s)\n", b.Name)
	}
	return t.Flush()
}
