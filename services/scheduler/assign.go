package scheduler

import (
	"slices"

	"github.com/stoker/stoker/schemas"
)

// assign is Spark's Master.scheduleExecutorsOnWorkers with a fixed number
// of cores per executor. Given the usable workers in the order to fill them
// (each with room for at least one executor), the cores and memory of one
// executor, and the cores the application may still get (math.MaxInt: no
// limit), it hands out one executor's worth of cores at a time and returns
// the cores assigned to each worker, a multiple of perCores, in dst (reused).
//
// Spread out, each round gives every worker that can take one more
// executor one, until the cores wanted or the room run out: an application
// wanting 20 cores on ten free 10-core workers gets 2 on each. Consolidated,
// each worker is filled before the next: 10 on each of the first two.
// A worker takes another executor while it has perCores and perMem free
// beyond what this call assigned it. The workers are not modified.
//
// amounts are the custom resources of one executor: a worker takes another
// only while it has that many addresses of each free beyond those assigned.
func assign(dst []int, workers []*free, perCores int, perMem int64, amounts schemas.Amounts, coresWanted int, spreadOut bool) []int {
	dst = slices.Grow(dst[:0], len(workers))[:len(workers)]
	clear(dst)
	if perCores <= 0 || perMem <= 0 {
		return dst
	}
	total := 0
	for _, w := range workers {
		total += w.cores
	}
	left := min(coresWanted, total)
	// dst counts executors while assigning, cores at the end.
	fits := func(i int) bool {
		w, n := workers[i], dst[i]
		return w.cores-n*perCores >= perCores && w.mem-int64(n)*perMem >= perMem
	}
	noRes := len(amounts) == 0
	for left >= perCores {
		progress := false
		for i := range workers {
			for left >= perCores && fits(i) && (noRes || workers[i].has(amounts, dst[i])) {
				dst[i]++
				left -= perCores
				progress = true
				if spreadOut {
					break
				}
			}
		}
		if !progress {
			break
		}
	}
	for i := range dst {
		dst[i] *= perCores
	}
	return dst
}
