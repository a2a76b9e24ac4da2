package scheduler

import (
	"math"
	"slices"
	"testing"
)

// workersOf builds n usable workers with the same free cores and memory.
func workersOf(n, cores int, mem int64) []*free {
	ws := make([]*free, n)
	for i := range ws {
		ws[i] = &free{id: string(rune('a' + i)), cores: cores, mem: mem}
	}
	return ws
}

func repeat(n, v int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// TestAssign follows Spark's MasterSuite tests of scheduleExecutorsOnWorkers
// (with cores per executor always set, as Stoker's are) and the example in
// Spark's spark.deploy.spreadOut documentation.
func TestAssign(t *testing.T) {
	const noLimit = math.MaxInt
	tests := []struct {
		name         string
		workers      []*free
		perCores     int
		perMem       int64
		wanted       int
		spread       []int
		consolidated []int
	}{
		{"spark doc: 20 cores on 10 x 10, one-core executors", workersOf(10, 10, 1<<20), 1, 1024, 20,
			repeat(10, 2), append([]int{10, 10}, repeat(8, 0)...)},
		{"spark doc: 20 cores on 10 x 10, two-core executors", workersOf(10, 10, 1<<20), 2, 1024, 20,
			repeat(10, 2), append([]int{10, 10}, repeat(8, 0)...)},
		{"basic: no limit takes every core", workersOf(3, 10, 1<<20), 1, 1024, noLimit,
			[]int{10, 10, 10}, []int{10, 10, 10}},
		{"max cores", workersOf(3, 10, 1<<20), 1, 1024, 8,
			[]int{3, 3, 2}, []int{8, 0, 0}},
		{"max cores below one executor", workersOf(3, 10, 1<<20), 4, 1024, 3,
			[]int{0, 0, 0}, []int{0, 0, 0}},
		{"memory limits executors per worker", workersOf(3, 10, 2048), 2, 1024, noLimit,
			[]int{4, 4, 4}, []int{4, 4, 4}},
		{"memory and max cores", workersOf(3, 10, 2048), 2, 1024, 10,
			[]int{4, 4, 2}, []int{4, 4, 2}},
		{"a memory-limited worker among roomy ones",
			[]*free{{id: "a", cores: 10, mem: 1024}, {id: "b", cores: 10, mem: 4096}, {id: "c", cores: 10, mem: 1 << 20}}, 1, 1024, 12,
			[]int{1, 4, 7}, []int{1, 4, 7}},
		{"executor cores not dividing worker cores", workersOf(3, 10, 1<<20), 3, 1024, noLimit,
			[]int{9, 9, 9}, []int{9, 9, 9}},
		{"executor cores not dividing max cores", workersOf(3, 10, 1<<20), 3, 1024, 10,
			[]int{3, 3, 3}, []int{9, 0, 0}},
		{"uneven free cores, filled in the order given",
			[]*free{{id: "a", cores: 8, mem: 1 << 20}, {id: "b", cores: 4, mem: 1 << 20}, {id: "c", cores: 2, mem: 1 << 20}}, 2, 1, 10,
			[]int{4, 4, 2}, []int{8, 2, 0}},
		{"cores wanted beyond the cluster", workersOf(2, 4, 1<<20), 2, 1024, 100,
			[]int{4, 4}, []int{4, 4}},
		{"no workers", nil, 1, 1024, noLimit, []int{}, []int{}},
		{"bad spec assigns nothing", workersOf(2, 4, 1<<20), 0, 1024, noLimit, []int{0, 0}, []int{0, 0}},
	}
	for _, tc := range tests {
		for _, spread := range []bool{true, false} {
			want := tc.consolidated
			if spread {
				want = tc.spread
			}
			before := make([]free, len(tc.workers))
			for i, w := range tc.workers {
				before[i] = *w
			}
			got := assign(nil, tc.workers, tc.perCores, tc.perMem, nil, tc.wanted, spread)
			if !slices.Equal(got, want) {
				t.Errorf("%s (spread=%v): assign = %v, want %v", tc.name, spread, got, want)
			}
			for i, w := range tc.workers {
				if w.id != before[i].id || w.cores != before[i].cores || w.mem != before[i].mem {
					t.Errorf("%s: worker %s modified: %+v, was %+v", tc.name, w.id, *w, before[i])
				}
			}
		}
	}
}

func TestAssign_ReusesDst(t *testing.T) {
	dst := []int{7, 7, 7, 7, 7}
	got := assign(dst, workersOf(2, 4, 1<<20), 2, 1, nil, 4, true)
	if !slices.Equal(got, []int{2, 2}) {
		t.Fatalf("assign = %v, want [2 2] (old contents cleared)", got)
	}
	if &got[0] != &dst[0] {
		t.Fatal("dst not reused")
	}
}

func BenchmarkAssign_10kWorkers(b *testing.B) {
	ws := workersOf(10_000, 16, 64<<10)
	var dst []int
	for _, spread := range []bool{true, false} {
		b.Run(map[bool]string{true: "spread", false: "consolidate"}[spread], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				dst = assign(dst, ws, 1, 512, nil, 1000, spread)
			}
		})
	}
}

func TestRoundRobin_TakesEachKeyInTurn(t *testing.T) {
	xs := []string{"a1", "a2", "a3", "b1", "c1", "c2"}
	got := roundRobin(xs, func(s string) string { return s[:1] })
	var names []string
	for _, i := range got {
		names = append(names, xs[i])
	}
	if want := []string{"a1", "b1", "c1", "a2", "c2", "a3"}; !slices.Equal(names, want) {
		t.Fatalf("order %v, want %v", names, want)
	}
	if got := roundRobin([]string(nil), func(s string) string { return s }); len(got) != 0 {
		t.Fatalf("empty: %v", got)
	}
}
