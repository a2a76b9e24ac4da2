package bus

// Provisioning: the one owner of the store's buckets and stream. It runs in
// `stoker up`, in `stoker bus` (each node, idempotently) and in `stoker
// init` (for an external NATS). Services never create or change a bucket:
// they open the store (OpenStore) and wait for it (WaitStore).

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Store defaults: what the owner provisions when nothing else is asked.
const (
	DefaultReplicas = 1
	// DefaultLeaseTTL outlasts the stall of a JetStream stream electing a
	// new leader (4–9 s, as after a partition heals), so a leader rides
	// through it renewing instead of losing its epoch. A failover does not
	// wait for it: standbys take over on missed beats (300 ms) or on the
	// leader's closed connection; the TTL only ends a lease nobody revokes.
	DefaultLeaseTTL       = 10 * time.Second
	DefaultEventsMaxAge   = 7 * 24 * time.Hour
	DefaultEventsMaxBytes = 256 << 20
	// MinLeaseTTL is the shortest lease TTL a scheduler accepts.
	MinLeaseTTL = 100 * time.Millisecond
	// recordHistory is how many revisions a record bucket keeps per key.
	recordHistory = 5
)

// ErrStoreMismatch is wrapped by Provision's error when a bucket or stream
// exists with a setting that cannot be changed in place.
var ErrStoreMismatch = errors.New("store settings differ from what was asked")

// ErrNoStore is wrapped by OpenStore's error when a bucket or the events
// stream does not exist yet.
var ErrNoStore = errors.New("the stoker store does not exist on this bus")

// StoreConfig is what the owner provisions. Zero fields take the defaults.
type StoreConfig struct {
	// Replicas for every bucket and stream: 1 on one node, 3 on a cluster.
	Replicas int
	// LeaseTTL is the bucket-level TTL of stoker-leader: the scheduler
	// lease's time-to-live, read back from the bucket by every scheduler.
	LeaseTTL time.Duration
	// EventsMaxAge bounds the event history.
	EventsMaxAge time.Duration
	// EventsMaxBytes bounds the event history.
	EventsMaxBytes int64
}

// WithDefaults fills zero fields with the defaults.
func (c StoreConfig) WithDefaults() StoreConfig {
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.EventsMaxAge == 0 {
		c.EventsMaxAge = DefaultEventsMaxAge
	}
	if c.EventsMaxBytes == 0 {
		c.EventsMaxBytes = DefaultEventsMaxBytes
	}
	return c
}

// Validate checks a config after WithDefaults.
func (c StoreConfig) Validate() error {
	switch {
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("replicas must be 1..5, got %d", c.Replicas)
	case c.LeaseTTL < MinLeaseTTL:
		return fmt.Errorf("lease TTL %s is below %s", c.LeaseTTL, MinLeaseTTL)
	case c.EventsMaxAge < 0:
		return fmt.Errorf("events max age %s is negative", c.EventsMaxAge)
	case c.EventsMaxBytes < 0:
		return fmt.Errorf("events max bytes %d is negative", c.EventsMaxBytes)
	}
	return nil
}

// settings are the parts of a bucket's or stream's configuration the owner
// decides, normalised so that a wanted and an actual configuration compare
// equal when JetStream would treat them alike (0 and -1 both mean
// unlimited).
type settings struct {
	Description    string
	Replicas       int
	History        int64         // values kept per key (a stream's MaxMsgsPerSubject); 0 unlimited
	MaxAge         time.Duration // a bucket's TTL, a stream's MaxAge; 0 forever
	LimitMarkerTTL time.Duration // how long an expiry marker lives; 0 none
	MaxBytes       int64         // 0 unlimited
	Storage        jetstream.StorageType
	// DirectGets is the stream's AllowDirect: any replica answers a Get,
	// including one cut off from the quorum with old data (issue 16 item
	// 8). Off for every bucket: a Get is answered by the stream leader, and
	// fails instead of returning stale data while there is none.
	DirectGets bool
}

// resource is one bucket or stream of the store.
type resource struct {
	bucket string // a KV bucket's or object store's name, "" for a plain stream
	stream string // the JetStream stream behind it
	object bool   // bucket is an object store
	want   settings
}

func (r resource) String() string {
	if r.object {
		return "object store " + r.bucket
	}
	if r.bucket != "" {
		return "bucket " + r.bucket
	}
	return "stream " + r.stream
}

// kvStream is the stream behind a KV bucket.
func kvStream(bucket string) string { return "KV_" + bucket }

// storeResources is every bucket and stream of the store with cfg's settings.
func storeResources(cfg StoreConfig) []resource {
	record := func(bucket, desc string) resource {
		return resource{bucket: bucket, stream: kvStream(bucket), want: settings{
			Description: desc, Replicas: cfg.Replicas, History: recordHistory, Storage: jetstream.FileStorage,
		}}
	}
	return []resource{
		record(BucketWorkers, "Stoker worker records"),
		record(BucketDrivers, "Stoker driver records"),
		record(BucketApps, "Stoker application records"),
		record(BucketExecutors, "Stoker executor records, key <appid>.<execid>"),
		record(BucketCluster, "Stoker cluster phase per scheduler epoch"),
		// The lease bucket: a bucket-level TTL with History 1 and limit
		// markers, because KeyValue.Update drops a per-key TTL (nats.go
		// issue 1994) and standbys must see expiry as a delete marker.
		{bucket: BucketLeader, stream: kvStream(BucketLeader), want: settings{
			Description: "Stoker leases (scheduler)", Replicas: cfg.Replicas, History: 1,
			MaxAge: cfg.LeaseTTL, LimitMarkerTTL: cfg.LeaseTTL, Storage: jetstream.FileStorage,
		}},
		// Artifacts: content-addressed files shipped to agents.
		{bucket: BucketArtifacts, stream: StreamArtifacts, object: true, want: settings{
			Description: "Stoker artifacts, object name = SHA-256 hex of the content", Replicas: cfg.Replicas,
			// Direct gets on: agents read artifacts by direct get only (no
			// consumer), and a content-addressed object verified by its
			// digest cannot be stale.
			Storage: jetstream.FileStorage, DirectGets: true,
		}},
		{stream: StreamEvents, want: settings{
			Description: "Stoker cluster events", Replicas: cfg.Replicas,
			MaxAge: cfg.EventsMaxAge, MaxBytes: cfg.EventsMaxBytes, Storage: jetstream.FileStorage,
		}},
	}
}

// settingsOf reads the owner's settings out of a stream configuration.
func settingsOf(c jetstream.StreamConfig) settings {
	unlimited := func(v int64) int64 { return max(v, 0) }
	return settings{
		Description: c.Description, Replicas: max(c.Replicas, 1), History: unlimited(c.MaxMsgsPerSubject),
		MaxAge: c.MaxAge, LimitMarkerTTL: c.SubjectDeleteMarkerTTL, MaxBytes: unlimited(c.MaxBytes),
		Storage: c.Storage, DirectGets: c.AllowDirect,
	}
}

// Change is one setting that differs between what was asked and what the
// bus has.
type Change struct {
	Setting    string
	Want, Have string
	// InPlace: JetStream updates this setting on the live bucket or stream
	// without losing data, so the owner updates it and logs the change.
	InPlace bool
	// Fix says how to resolve a change that is not made in place.
	Fix string
}

func (c Change) String() string {
	return fmt.Sprintf("%s is %s, wanted %s", c.Setting, c.Have, c.Want)
}

// diff compares the wanted settings of r with what the bus has. Pure.
//
// Description, history, TTL/max age, limit-marker TTL and max bytes are
// updated in place. Replicas and storage are not: moving a live bucket's
// data between peers or storage types is an operator's decision, not a side
// effect of starting a process.
func diff(r resource, have settings) []Change {
	want := r.want
	var out []Change
	add := func(setting, w, h string, inPlace bool, fix string) {
		if w != h {
			out = append(out, Change{Setting: setting, Want: w, Have: h, InPlace: inPlace, Fix: fix})
		}
	}
	dur := func(d time.Duration) string {
		if d == 0 {
			return "none"
		}
		return d.String()
	}
	num := func(n int64) string {
		if n == 0 {
			return "unlimited"
		}
		return fmt.Sprint(n)
	}
	add("description", want.Description, have.Description, true, "")
	add("replicas", fmt.Sprint(want.Replicas), fmt.Sprint(have.Replicas), false,
		fmt.Sprintf("use --replicas %d to keep it, or scale the stream deliberately with `nats stream edit %s --replicas %d` (on a cluster)",
			have.Replicas, r.stream, want.Replicas))
	add("storage", want.Storage.String(), have.Storage.String(), false,
		fmt.Sprintf("JetStream cannot change a stream's storage: back up and delete %s (`nats stream rm %s`), then provision again",
			r.stream, r.stream))
	age := "max age"
	if r.bucket != "" {
		age = "TTL"
	}
	add("history", num(want.History), num(have.History), true, "")
	add(age, dur(want.MaxAge), dur(have.MaxAge), true, "")
	add("limit-marker TTL", dur(want.LimitMarkerTTL), dur(have.LimitMarkerTTL), true, "")
	add("max bytes", num(want.MaxBytes), num(have.MaxBytes), true, "")
	add("direct gets", fmt.Sprint(want.DirectGets), fmt.Sprint(have.DirectGets), true, "")
	return out
}

// refusal is the error for changes that are not made in place, or nil.
func refusal(r resource, changes []Change) error {
	var msgs []string
	for _, c := range changes {
		if !c.InPlace {
			msgs = append(msgs, fmt.Sprintf("%s: %s", c, c.Fix))
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("bus: %s: %w: %s", r, ErrStoreMismatch, strings.Join(msgs, "; "))
}

// permanent marks an error retry must not retry.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// Provision makes the store match cfg: it creates missing buckets and the
// events stream, updates settings JetStream changes in place (logging each
// change at info), and fails with ErrStoreMismatch, naming the bucket, the
// setting, wanted and actual values and the fix, for a setting it cannot
// change. Idempotent: several owners (the nodes of a cluster) may run it at
// once with the same cfg. Transient errors (no meta leader yet, too few
// peers) are retried until ctx ends.
//
// The owner keeps the store after a reconnect: if the bus comes back
// without it (memory storage, a lost volume), Provision runs again.
func Provision(ctx context.Context, js jetstream.JetStream, cfg StoreConfig, log zerolog.Logger) (*Store, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bus: store config: %w", err)
	}
	log = log.With().Str("component", "provision").Logger()
	for _, r := range storeResources(cfg) {
		attempt := 0
		err := retry(ctx, func(actx context.Context) error {
			err := provisionOne(actx, js, r, log)
			if attempt++; err != nil && attempt%5 == 0 {
				log.Warn().Err(err).Str("resource", r.String()).Msg("provisioning the store: still trying")
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	if nc := js.Conn(); nc != nil {
		OnReconnect(nc, "provision-store", func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := Provision(ctx, js, cfg, log); err != nil {
				log.Error().Err(err).Msg("provisioning the store after a reconnect")
			}
		})
	}
	// Opening is retried as provisioning is: one attempt that timed out
	// while a node of the cluster died (its streams electing leaders) made
	// `stoker bus` on a healthy node exit, and the cluster lost a second
	// node (TestChaos_BusNodeKills, "bus: bucket stoker-apps: context
	// deadline exceeded").
	var st *Store
	err := retry(ctx, func(actx context.Context) error {
		var err error
		st, err = OpenStore(actx, js)
		return err
	})
	return st, err
}

// provisionOne creates r or brings it to the wanted settings.
func provisionOne(ctx context.Context, js jetstream.JetStream, r resource, log zerolog.Logger) error {
	s, err := js.Stream(ctx, r.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if err := create(ctx, js, r); err != nil {
			return fmt.Errorf("bus: create %s: %w", r, err)
		}
		log.Info().Str("resource", r.String()).Int("replicas", r.want.Replicas).Msg("created")
		return nil
	}
	if err != nil {
		return fmt.Errorf("bus: %s: %w", r, err)
	}
	changes := diff(r, settingsOf(s.CachedInfo().Config))
	if len(changes) == 0 {
		return nil
	}
	if err := refusal(r, changes); err != nil {
		return permanent{err}
	}
	if err := update(ctx, js, r); err != nil {
		return fmt.Errorf("bus: update %s: %w", r, err)
	}
	for _, c := range changes {
		log.Info().Str("resource", r.String()).Str("setting", c.Setting).Str("was", c.Have).Str("now", c.Want).
			Msg("store setting updated in place")
	}
	return nil
}

func kvConfig(r resource) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: r.bucket, Description: r.want.Description, History: uint8(r.want.History),
		TTL: r.want.MaxAge, LimitMarkerTTL: r.want.LimitMarkerTTL, MaxBytes: r.want.MaxBytes,
		Replicas: r.want.Replicas, Storage: r.want.Storage,
	}
}

func objectConfig(r resource) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket: r.bucket, Description: r.want.Description, TTL: r.want.MaxAge, MaxBytes: r.want.MaxBytes,
		Replicas: r.want.Replicas, Storage: r.want.Storage,
	}
}

func streamConfig(r resource) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: r.stream, Description: r.want.Description, Subjects: []string{Events},
		Retention: jetstream.LimitsPolicy, MaxAge: r.want.MaxAge, MaxBytes: r.want.MaxBytes,
		Replicas: r.want.Replicas, Storage: r.want.Storage, Discard: jetstream.DiscardOld, AllowDirect: r.want.DirectGets,
	}
}

// create makes r. Losing a race to another owner is not an error: the next
// attempt finds r and compares it.
func create(ctx context.Context, js jetstream.JetStream, r resource) error {
	var err error
	if r.object {
		_, err = js.CreateObjectStore(ctx, objectConfig(r))
		if errors.Is(err, jetstream.ErrBucketExists) {
			return errors.New("created concurrently; comparing next")
		}
		return err
	}
	if r.bucket != "" {
		_, err = js.CreateKeyValue(ctx, kvConfig(r))
		if errors.Is(err, jetstream.ErrBucketExists) {
			return errors.New("created concurrently; comparing next")
		}
		if err != nil {
			return err
		}
		return setDirect(ctx, js, r)
	}
	_, err = js.CreateStream(ctx, streamConfig(r))
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return errors.New("created concurrently; comparing next")
	}
	return err
}

func update(ctx context.Context, js jetstream.JetStream, r resource) error {
	var err error
	if r.object {
		if _, err = js.UpdateObjectStore(ctx, objectConfig(r)); err != nil {
			return err
		}
		return setDirect(ctx, js, r)
	}
	if r.bucket != "" {
		if _, err = js.UpdateKeyValue(ctx, kvConfig(r)); err != nil {
			return err
		}
		return setDirect(ctx, js, r)
	}
	_, err = js.UpdateStream(ctx, streamConfig(r))
	return err
}

// setDirect sets a bucket's stream's AllowDirect as wanted: nats.go turns
// it on whenever it creates or updates a bucket.
func setDirect(ctx context.Context, js jetstream.JetStream, r resource) error {
	s, err := js.Stream(ctx, r.stream)
	if err != nil {
		return err
	}
	cfg := s.CachedInfo().Config
	if cfg.AllowDirect == r.want.DirectGets {
		return nil
	}
	cfg.AllowDirect = r.want.DirectGets
	_, err = js.UpdateStream(ctx, cfg)
	return err
}

// OpenStore binds to the existing buckets; it creates nothing. A missing
// bucket or stream is ErrNoStore.
func OpenStore(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	s := &Store{JS: js}
	for _, b := range StoreBuckets() {
		kv, err := js.KeyValue(ctx, b.Name)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("bus: bucket %s: %w (run `stoker init` against an external NATS)", b.Name, ErrNoStore)
		}
		if err != nil {
			return nil, fmt.Errorf("bus: bucket %s: %w", b.Name, err)
		}
		*b.handle(s) = kv
	}
	if _, err := js.Stream(ctx, StreamEvents); errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("bus: stream %s: %w (run `stoker init` against an external NATS)", StreamEvents, ErrNoStore)
	} else if err != nil {
		return nil, fmt.Errorf("bus: stream %s: %w", StreamEvents, err)
	}
	return s, nil
}

// JetStreamReady checks once that the bus answers JetStream requests (on a
// cluster: that it has a meta leader) and returns how many streams the
// account has.
func JetStreamReady(ctx context.Context, js jetstream.JetStream) (streams int, err error) {
	ai, err := js.AccountInfo(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = errors.New("no JetStream answer (no meta leader?)")
	}
	if err != nil {
		return 0, fmt.Errorf("bus: JetStream: %w", err)
	}
	return ai.Streams, nil
}

// WaitJetStream returns once JetStreamReady, logging while it waits.
func WaitJetStream(ctx context.Context, js jetstream.JetStream, log zerolog.Logger) error {
	return waitFor(ctx, log, "waiting for JetStream on the bus", func(actx context.Context) error {
		_, err := JetStreamReady(actx, js)
		return err
	})
}

// WaitStore waits for JetStream and then for the store's owner (`stoker
// up`, `stoker bus` or `stoker init`) to have provisioned it, logging while
// it waits, and opens it.
func WaitStore(ctx context.Context, js jetstream.JetStream, log zerolog.Logger) (*Store, error) {
	if err := WaitJetStream(ctx, js, log); err != nil {
		return nil, err
	}
	var st *Store
	err := waitFor(ctx, log, "waiting for the store; run `stoker init` against an external NATS", func(actx context.Context) error {
		var err error
		st, err = OpenStore(actx, js)
		return err
	})
	return st, err
}

// waitFor retries check with backoff until it succeeds or ctx ends, logging
// msg at warn every few attempts.
func waitFor(ctx context.Context, log zerolog.Logger, msg string, check func(context.Context) error) error {
	wait := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := check(actx)
		cancel()
		if err == nil {
			return nil
		}
		if attempt%5 == 1 {
			log.Warn().Err(err).Int("attempt", attempt).Msg(msg)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bus: %s: gave up: %w", strings.SplitN(msg, ";", 2)[0], err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}
