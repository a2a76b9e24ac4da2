package lease

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// Timing defaults. The TTL ones are the lease bucket's, set by the store's
// owner (bus.Provision).
const (
	DefaultTTL          = bus.DefaultLeaseTTL
	DefaultBeatInterval = 100 * time.Millisecond
	DefaultMissedBeats  = 3
	// MinTTL is the shortest lease accepted.
	MinTTL = bus.MinLeaseTTL
)

// ErrConfig is wrapped by every invalid Config or Timings.
var ErrConfig = errors.New("lease: invalid config")

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}

// Timings are the lease's clocks. Every candidate competing for a key must
// use the same ones. Zero fields take their defaults.
type Timings struct {
	// TTL is how long a lease lives without renewal; it must be the
	// bucket's TTL. Default 10s (bus.DefaultLeaseTTL).
	TTL time.Duration
	// RenewInterval is the time between renewals; below TTL. Default
	// TTL/3, at most 1s: a renewal that fails is tried again on every beat
	// while the lease stands, and authority is proven by the last renewal.
	RenewInterval time.Duration
	// BeatInterval is the time between beats; at most RenewInterval.
	// Default 100ms.
	BeatInterval time.Duration
	// MissedBeats: a standby that hears no beat from the holder for
	// MissedBeats×BeatInterval revokes the lease. The window must be below
	// TTL. Default 3.
	MissedBeats int
}

// WithDefaults returns t with defaults applied, or an error wrapping
// ErrConfig if the timings do not fit together.
func (t Timings) WithDefaults() (Timings, error) {
	if t.TTL == 0 {
		t.TTL = DefaultTTL
	}
	if t.RenewInterval == 0 {
		t.RenewInterval = min(t.TTL/3, time.Second)
	}
	if t.BeatInterval == 0 {
		t.BeatInterval = DefaultBeatInterval
	}
	if t.MissedBeats == 0 {
		t.MissedBeats = DefaultMissedBeats
	}
	switch {
	case t.TTL < MinTTL:
		return t, bad("LeaseTTL %s is below %s", t.TTL, MinTTL)
	case t.RenewInterval <= 0 || t.RenewInterval >= t.TTL:
		return t, bad("RenewInterval %s must be positive and below LeaseTTL %s", t.RenewInterval, t.TTL)
	case t.BeatInterval <= 0 || t.BeatInterval > t.RenewInterval:
		return t, bad("BeatInterval %s must be positive and at most RenewInterval %s", t.BeatInterval, t.RenewInterval)
	case t.MissedBeats < 1:
		return t, bad("MissedBeats %d must be at least 1", t.MissedBeats)
	case t.MissWindow() >= t.TTL:
		return t, bad("MissedBeats×BeatInterval (%s) must be below LeaseTTL %s", t.MissWindow(), t.TTL)
	case t.AuthorityWindow() <= 0:
		return t, bad("the authority window (takeover time %s less one beat %s) must be positive", t.TakeoverTime(), t.BeatInterval)
	}
	return t, nil
}

// MissWindow is MissedBeats×BeatInterval: how long a standby must hear
// nothing from the holder before it revokes the lease.
func (t Timings) MissWindow() time.Duration {
	return time.Duration(t.MissedBeats) * t.BeatInterval
}

// TakeoverTime is the shortest time, from the send of the holder's last
// successful renewal, before another candidate can lead: a standby revokes
// only after a missed-beat window of silence counted from when it saw that
// renewal (which it must have seen: its delete is guarded by the revision),
// then waits half a window before leading; expiry comes after TTL.
func (t Timings) TakeoverTime() time.Duration {
	return min(t.TTL, t.MissWindow()+t.MissWindow()/2)
}

// AuthorityWindow is how long after sending a renewal that succeeded a
// holder may still act as leader: TakeoverTime less one beat interval of
// margin (clock rate differences, a standby's tick granularity works the
// other way). Past it, the holder must confirm the lease again before any
// command goes out.
func (t Timings) AuthorityWindow() time.Duration {
	return t.TakeoverTime() - t.BeatInterval
}

// Config configures an Elector, in the manner of client-go's
// leaderelection.LeaderElectionConfig.
type Config struct {
	// KV is the lease bucket. Its bucket-level TTL must be Timings.TTL:
	// renewals (Update) carry no per-key TTL.
	KV jetstream.KeyValue
	NC *nats.Conn
	// Key is the lease key (a valid id). Beats go to bus.LeaderBeatSubject(Key).
	Key string
	// ID names this candidate; unique among candidates.
	ID string
	Timings
	// ConnEvents makes standbys follow bus.ConnClosed: when the server
	// reports the holder's connection (written in the lease) closed, a
	// standby deletes the lease (revision-guarded) and campaigns at once,
	// without waiting for missed beats. Where the events do not arrive
	// nothing changes: beats still decide.
	ConnEvents bool
	// ReleaseOnStop deletes the lease on Stop (revision-guarded), so a
	// standby takes over at once instead of after missed beats.
	ReleaseOnStop bool
	// OnStartedLeading runs in its own goroutine when this candidate wins.
	// ctx is cancelled the instant leadership is lost; epoch is the
	// leadership's epoch, which the leader's commands must carry. Required.
	OnStartedLeading func(ctx context.Context, epoch uint64)
	// OnStoppedLeading runs on the elector's goroutine after the leader
	// context is cancelled, once per leadership. It must not block. Optional.
	OnStoppedLeading func()
	Log              zerolog.Logger
}

// validate checks c and applies defaults.
func (c *Config) validate() error {
	if c.KV == nil || c.NC == nil {
		return bad("KV and NC are required")
	}
	if err := schemas.ValidID("lease key", c.Key); err != nil {
		return bad("%v", err)
	}
	if c.ID == "" {
		return bad("ID is required")
	}
	if c.OnStartedLeading == nil {
		return bad("OnStartedLeading is required")
	}
	t, err := c.Timings.WithDefaults()
	c.Timings = t
	return err
}
