package lease

import (
	"errors"
	"testing"
	"time"
)

func TestTimings_WithDefaults(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		in   Timings
		want Timings
		ok   bool
	}{
		{"all defaults", Timings{}, Timings{10 * time.Second, time.Second, 100 * ms, 3}, true},
		{"renew follows a short ttl", Timings{TTL: 1500 * ms}, Timings{1500 * ms, 500 * ms, 100 * ms, 3}, true},
		{"renew at most a second", Timings{TTL: 6 * time.Second}, Timings{6 * time.Second, time.Second, 100 * ms, 3}, true},
		{"explicit", Timings{TTL: time.Second, RenewInterval: 300 * ms, BeatInterval: 50 * ms, MissedBeats: 5},
			Timings{time.Second, 300 * ms, 50 * ms, 5}, true},
		{"ttl below minimum", Timings{TTL: 50 * ms}, Timings{}, false},
		{"negative ttl", Timings{TTL: -time.Second}, Timings{}, false},
		{"renew equals ttl", Timings{TTL: time.Second, RenewInterval: time.Second}, Timings{}, false},
		{"negative renew", Timings{RenewInterval: -time.Second}, Timings{}, false},
		{"beat above renew", Timings{BeatInterval: 2 * time.Second}, Timings{}, false},
		{"negative beat", Timings{BeatInterval: -ms}, Timings{}, false},
		{"negative missed beats", Timings{MissedBeats: -1}, Timings{}, false},
		{"miss window equals ttl", Timings{MissedBeats: 100}, Timings{}, false},
		{"miss window just below ttl", Timings{MissedBeats: 99}, Timings{10 * time.Second, time.Second, 100 * ms, 99}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.in.WithDefaults()
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrConfig) {
					t.Fatalf("err %v does not wrap ErrConfig", err)
				}
				return
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestTimings_MissWindow(t *testing.T) {
	if got := (Timings{BeatInterval: 100 * time.Millisecond, MissedBeats: 3}).MissWindow(); got != 300*time.Millisecond {
		t.Fatalf("MissWindow = %s, want 300ms", got)
	}
}
