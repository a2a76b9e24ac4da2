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
		{"all defaults", Timings{}, Timings{3 * time.Second, time.Second, 100 * ms, 3}, true},
		{"renew follows ttl", Timings{TTL: 6 * time.Second}, Timings{6 * time.Second, 2 * time.Second, 100 * ms, 3}, true},
		{"explicit", Timings{TTL: time.Second, RenewInterval: 300 * ms, BeatInterval: 50 * ms, MissedBeats: 5},
			Timings{time.Second, 300 * ms, 50 * ms, 5}, true},
		{"ttl below minimum", Timings{TTL: 50 * ms}, Timings{}, false},
		{"negative ttl", Timings{TTL: -time.Second}, Timings{}, false},
		{"renew equals ttl", Timings{TTL: time.Second, RenewInterval: time.Second}, Timings{}, false},
		{"negative renew", Timings{RenewInterval: -time.Second}, Timings{}, false},
		{"beat above renew", Timings{BeatInterval: 2 * time.Second}, Timings{}, false},
		{"negative beat", Timings{BeatInterval: -ms}, Timings{}, false},
		{"negative missed beats", Timings{MissedBeats: -1}, Timings{}, false},
		{"miss window equals ttl", Timings{MissedBeats: 30}, Timings{}, false},
		{"miss window just below ttl", Timings{MissedBeats: 29}, Timings{3 * time.Second, time.Second, 100 * ms, 29}, true},
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
