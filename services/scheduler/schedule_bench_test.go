package scheduler

import (
	"fmt"
	"testing"
)

// BenchmarkSchedule_10kWorkers_100kExecutors plans a cold cluster: 10,000
// workers of 16 cores, 100 applications asking for 1,000 one-core
// executors each (100,000 placements per pass).
func BenchmarkSchedule_10kWorkers_100kExecutors(b *testing.B) {
	for _, spread := range []bool{true, false} {
		b.Run(fmt.Sprintf("spread=%v", spread), func(b *testing.B) {
			h := NewHarness(b)
			h.Opts.SpreadOut = spread
			for i := 0; i < 10_000; i++ {
				h.Worker(fmt.Sprintf("w%05d", i), 16, 64<<10)
			}
			for i := 0; i < 100; i++ {
				h.App(fmt.Sprintf("app-%03d", i), 1, 512, 1000)
			}
			b.ReportAllocs()
			b.ResetTimer()
			placed := 0
			for b.Loop() {
				p := Schedule(h.Snap, h.Opts)
				placed += len(p.LaunchExecutors)
			}
			if placed != 100_000*b.N {
				b.Fatalf("placed %d, want %d", placed, 100_000*b.N)
			}
			b.ReportMetric(float64(placed)/b.Elapsed().Seconds(), "placements/sec")
		})
	}
}

// BenchmarkSchedule_10kWorkers_NothingToPlace is the pass every worker
// registration asks for while 10,000 agents start: nothing waits, so it
// should cost next to nothing per worker.
func BenchmarkSchedule_10kWorkers_NothingToPlace(b *testing.B) {
	h := NewHarness(b)
	for i := 0; i < 10_000; i++ {
		h.Worker(fmt.Sprintf("w%05d", i), 16, 64<<10)
	}
	b.ReportAllocs()
	for b.Loop() {
		if p := Schedule(h.Snap, h.Opts); len(p.LaunchExecutors) != 0 {
			b.Fatalf("placed %d", len(p.LaunchExecutors))
		}
	}
}
