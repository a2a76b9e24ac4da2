package bus

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestDiff_WantedVersusActual(t *testing.T) {
	cfg := StoreConfig{}.WithDefaults()
	var leader, events resource
	for _, r := range storeResources(cfg) {
		switch {
		case r.bucket == BucketLeader:
			leader = r
		case r.bucket == "":
			events = r
		}
	}
	with := func(s settings, f func(*settings)) settings { f(&s); return s }
	tests := []struct {
		name     string
		r        resource
		have     settings
		want     []string // "<setting>:<in place>"
		refusal  bool
		contains []string
	}{
		{"same", leader, leader.want, nil, false, nil},
		{"lease TTL changed", leader, with(leader.want, func(s *settings) { s.MaxAge, s.LimitMarkerTTL = 5*time.Second, 5*time.Second }),
			[]string{"TTL:true", "limit-marker TTL:true"}, false, nil},
		{"description changed", leader, with(leader.want, func(s *settings) { s.Description = "old" }),
			[]string{"description:true"}, false, nil},
		{"history changed", leader, with(leader.want, func(s *settings) { s.History = 5 }),
			[]string{"history:true"}, false, nil},
		{"replicas differ", leader, with(leader.want, func(s *settings) { s.Replicas = 3 }),
			[]string{"replicas:false"}, true, []string{"bucket stoker-leader", "replicas is 3, wanted 1", "--replicas 3", "nats stream edit KV_stoker-leader"}},
		{"storage differs", leader, with(leader.want, func(s *settings) { s.Storage = jetstream.MemoryStorage }),
			[]string{"storage:false"}, true, []string{"storage is Memory, wanted File", "nats stream rm KV_stoker-leader"}},
		{"events limits changed", events, with(events.want, func(s *settings) { s.MaxAge, s.MaxBytes = time.Hour, 1<<20 }),
			[]string{"max age:true", "max bytes:true"}, false, nil},
		{"events unlimited bytes", events, with(events.want, func(s *settings) { s.MaxBytes = 0 }),
			[]string{"max bytes:true"}, false, []string{}},
		{"replicas and TTL: refused as a whole", leader, with(leader.want, func(s *settings) { s.Replicas, s.MaxAge = 3, time.Second }),
			[]string{"replicas:false", "TTL:true"}, true, []string{"stream edit"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			changes := diff(tc.r, tc.have)
			var got []string
			for _, c := range changes {
				got = append(got, c.Setting+":"+map[bool]string{true: "true", false: "false"}[c.InPlace])
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("changes = %v, want %v", got, tc.want)
			}
			err := refusal(tc.r, changes)
			if tc.refusal != (err != nil) {
				t.Fatalf("refusal = %v, want refused=%v", err, tc.refusal)
			}
			for _, s := range tc.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("refusal %q lacks %q", err, s)
				}
			}
		})
	}
}

// What JetStream reports back for a stream created from the wanted
// settings (unlimited as -1) compares equal to them.
func TestSettingsOf_NormalisesUnlimited(t *testing.T) {
	for _, r := range storeResources(StoreConfig{}.WithDefaults()) {
		c := streamConfig(r)
		c.MaxMsgsPerSubject = r.want.History
		if c.MaxMsgsPerSubject == 0 {
			c.MaxMsgsPerSubject = -1
		}
		if c.MaxBytes == 0 {
			c.MaxBytes = -1
		}
		c.SubjectDeleteMarkerTTL = r.want.LimitMarkerTTL
		if d := diff(r, settingsOf(c)); len(d) != 0 {
			t.Errorf("%s: %v", r, d)
		}
	}
}

func TestStoreConfig_Validate(t *testing.T) {
	tests := []struct {
		name string
		cfg  StoreConfig
		ok   bool
	}{
		{"defaults", StoreConfig{}, true},
		{"three replicas", StoreConfig{Replicas: 3}, true},
		{"six replicas", StoreConfig{Replicas: 6}, false},
		{"lease below minimum", StoreConfig{LeaseTTL: 50 * time.Millisecond}, false},
		{"negative max age", StoreConfig{EventsMaxAge: -time.Second}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.WithDefaults().Validate(); tc.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
