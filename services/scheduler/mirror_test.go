package scheduler

import (
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

func TestMirror_SetLocked(t *testing.T) {
	rec := func(cores int) []byte {
		b, err := bus.Encode(&schemas.Worker{ID: "w1", Cores: cores, MemoryMB: 1, State: schemas.WorkerAlive}, bus.Msgpack)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	type step struct {
		key     string
		rev     uint64
		data    []byte
		deleted bool
		force   bool
		want    int // cores held for w1 after the step; 0: absent
	}
	tests := []struct {
		name  string
		only  string
		steps []step
	}{
		{"newer replaces, older and equal are ignored", "", []step{
			{"w1", 5, rec(1), false, false, 1},
			{"w1", 7, rec(2), false, false, 2},
			{"w1", 6, rec(3), false, false, 2},
			{"w1", 7, rec(4), false, false, 2},
		}},
		{"force takes an equal revision (undoing an optimistic apply)", "", []step{
			{"w1", 5, rec(1), false, false, 1},
			{"w1", 5, rec(9), false, true, 9},
			{"w1", 4, rec(8), false, true, 9},
		}},
		{"delete removes; an older put does not bring it back", "", []step{
			{"w1", 5, rec(1), false, false, 1},
			{"w1", 6, nil, true, false, 0},
			{"w1", 5, rec(1), false, false, 0},
			{"w1", 8, rec(3), false, false, 3},
		}},
		{"a poisoned revision removes the record (never acted upon)", "", []step{
			{"w1", 5, rec(1), false, false, 1},
			{"w1", 6, []byte{0xc1}, false, false, 0},
			{"w1", 7, rec(2), false, false, 2},
			{"w1", 8, rec(-5), false, false, 0},
		}},
		{"only one key", "w2", []step{
			{"w1", 5, rec(1), false, false, 0},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &mirror[schemas.Worker]{bucket: bus.BucketWorkers, only: tc.only, log: zerolog.Nop(), mu: &sync.Mutex{},
				items: map[string]*schemas.Worker{}, revs: map[string]uint64{}}
			for i, s := range tc.steps {
				m.setLocked(s.key, s.rev, s.data, s.deleted, s.force)
				got := 0
				if w := m.items["w1"]; w != nil {
					got = w.Cores
				}
				if got != s.want {
					t.Fatalf("step %d (%+v): w1 has %d cores, want %d", i, s, got, s.want)
				}
			}
		})
	}
}
