// Command pi estimates pi by Monte Carlo on a Stoker cluster, as Spark's
// classic SparkPi does.
//
// As a driver (the default) it registers an application whose executors
// run this same binary with --executor, sends one task per slice, sums the
// points that fell inside the unit circle and prints the estimate:
//
//	STOKER_NATS_URL=nats://127.0.0.1:4222 go run ./examples/pi --slices 10
//	stoker submit --wait -- /path/to/pi --slices 4
//
// As an executor (--executor, or when STOKER_EXECUTOR_ID is set, as the
// agent does) it serves tasks: each is a number of samples and a seed; the
// answer is how many samples fell inside the circle.
//
// With --dynamic-allocation (Spark's spark.dynamicAllocation.enabled) the
// app grows and shrinks with its backlog through the SDK's elastic API: it
// starts with --initial-executors, asks for one executor per
// --tasks-per-executor outstanding slices (RequestTotalExecutors, at most
// --max-executors), and releases executors idle for --executor-idle-timeout
// down to --min-executors (SetIdleTimeout). --waves runs the slices as
// several jobs with a pause between them, during which the idle executors
// are released:
//
//	stoker submit --file ./bin/pi --wait -- pi --dynamic-allocation \
//	    --max-executors 6 --slices 48 --waves 2
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

type options struct {
	executor        bool
	slices          int
	samplesPerSlice int64
	executorCores   int
	executorMemory  string
	maxCores        int
	timeout         time.Duration

	// Dynamic allocation (Spark's spark.dynamicAllocation.*).
	dynamic          bool
	minExecutors     int
	maxExecutors     int
	initialExecutors int
	idleTimeout      time.Duration
	tasksPerExecutor int
	waves            int
	wavePause        time.Duration
}

func parse(args []string) (*options, error) {
	fs := flag.NewFlagSet("pi", flag.ContinueOnError)
	o := &options{}
	fs.BoolVar(&o.executor, "executor", false, "serve tasks as an executor (set automatically when STOKER_EXECUTOR_ID is)")
	fs.IntVar(&o.slices, "slices", 10, "number of tasks")
	fs.Int64Var(&o.samplesPerSlice, "samples-per-slice", 1_000_000, "random points per task")
	fs.IntVar(&o.executorCores, "executor-cores", 1, "cores per executor")
	fs.StringVar(&o.executorMemory, "executor-memory", "256m", "memory per executor")
	fs.IntVar(&o.maxCores, "max-cores", 0, "cap on the application's cores, Spark's spark.cores.max (0: the cluster's --default-cores, no cap if unset)")
	fs.IntVar(&o.maxCores, "total-executor-cores", 0, "Spark's name for --max-cores")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up (and end the app FAILED) after this long")
	fs.BoolVar(&o.dynamic, "dynamic-allocation", false, "grow and shrink the executors with the backlog (spark.dynamicAllocation.enabled)")
	fs.IntVar(&o.minExecutors, "min-executors", 0, "with --dynamic-allocation: keep at least this many (spark.dynamicAllocation.minExecutors)")
	fs.IntVar(&o.maxExecutors, "max-executors", 8, "with --dynamic-allocation: ask for at most this many (spark.dynamicAllocation.maxExecutors); --max-cores still caps them")
	fs.IntVar(&o.initialExecutors, "initial-executors", 0, "with --dynamic-allocation: start with this many (spark.dynamicAllocation.initialExecutors; default max(--min-executors, 1))")
	fs.DurationVar(&o.idleTimeout, "executor-idle-timeout", 2*time.Second, "with --dynamic-allocation: release an executor idle this long (spark.dynamicAllocation.executorIdleTimeout)")
	fs.IntVar(&o.tasksPerExecutor, "tasks-per-executor", 1, "with --dynamic-allocation: one executor per this many outstanding slices (Spark: executor cores / task cpus, times executorAllocationRatio)")
	fs.IntVar(&o.waves, "waves", 1, "run the slices this many times, as separate jobs (the estimate uses them all)")
	fs.DurationVar(&o.wavePause, "wave-pause", 30*time.Second, "between waves, wait up to this long for idle executors to be released down to --min-executors")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.initialExecutors == 0 {
		o.initialExecutors = max(o.minExecutors, 1)
	}
	if o.waves <= 0 || o.wavePause < 0 {
		return nil, errors.New("--waves must be > 0, --wave-pause >= 0")
	}
	if o.dynamic && (o.minExecutors < 0 || o.maxExecutors <= 0 || o.minExecutors > o.maxExecutors ||
		o.initialExecutors < o.minExecutors || o.initialExecutors > o.maxExecutors || o.tasksPerExecutor <= 0 || o.idleTimeout <= 0) {
		return nil, errors.New("--dynamic-allocation wants 0 <= --min-executors <= --initial-executors <= --max-executors, --max-executors > 0, --tasks-per-executor > 0 and --executor-idle-timeout > 0")
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if o.slices <= 0 || o.samplesPerSlice <= 0 || o.executorCores <= 0 || o.maxCores < 0 {
		return nil, errors.New("--slices, --samples-per-slice and --executor-cores must be > 0, --max-cores >= 0")
	}
	if sdk.IsExecutor() {
		o.executor = true
	}
	return o, nil
}

func run(ctx context.Context, args []string) int {
	o, err := parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pi:", err)
		return 2
	}
	nc, err := sdk.Connect()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pi:", err)
		return 1
	}
	defer nc.Close()
	if o.executor {
		if err := sdk.ServeExecutor(ctx, nc, countInside); err != nil {
			fmt.Fprintln(os.Stderr, "pi executor:", err)
			return 1
		}
		return 0
	}
	pi, err := drive(ctx, nc, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pi:", err)
		return 1
	}
	fmt.Printf("Pi is roughly %.6f\n", pi)
	return 0
}

// drive registers the app, runs the slices and ends the app.
func drive(ctx context.Context, nc *nats.Conn, o *options) (float64, error) {
	mem, err := schemas.ParseMemoryMB(o.executorMemory)
	if err != nil {
		return 0, err
	}
	self, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("cannot find my own binary for the executors: %w", err)
	}
	req := schemas.RegisterApp{
		Name:     "pi",
		Executor: schemas.ExecutorSpec{Command: []string{self, "--executor"}, Cores: o.executorCores, MemoryMB: mem},
		MaxCores: o.maxCores,
	}
	if o.dynamic {
		req.InitialExecutors = o.initialExecutors
	}
	app, err := sdk.RegisterApp(ctx, nc, req)
	if err != nil {
		return 0, err
	}
	var outstanding atomic.Int64 // slices sent and not yet answered
	if o.dynamic {
		app.SetIdleTimeout(o.idleTimeout, o.minExecutors)
		actx, acancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			allocate(actx, app, o, &outstanding)
		}()
		defer func() { acancel(); <-done }()
	}
	fmt.Fprintf(os.Stderr, "registered %s; waiting for executors\n", app.ID)
	if app.Warning != "" {
		fmt.Fprintln(os.Stderr, "warning:", app.Warning)
	}
	go func() {
		for e := range app.Executors() {
			fmt.Fprintf(os.Stderr, "executor %d registered from %s\n", e.ID, e.WorkerID)
		}
	}()

	rctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	var inside int64
	for w := 0; w < o.waves && err == nil; w++ {
		if w > 0 {
			pause(rctx, app, o)
		}
		var n int64
		n, err = runSlices(rctx, app, o, &outstanding)
		inside += n
	}
	final := schemas.AppFinished
	msg := ""
	if err != nil {
		final, msg = schemas.AppFailed, err.Error()
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	if cerr := app.CloseWithMessage(cctx, final, msg); cerr != nil {
		fmt.Fprintln(os.Stderr, "warning:", cerr)
	}
	if err != nil {
		return 0, err
	}
	return 4 * float64(inside) / float64(int64(o.waves)*int64(o.slices)*o.samplesPerSlice), nil
}

// runSlices sends every slice at once; the App queues them on idle
// executors. A slice whose executor vanished is sent again.
func runSlices(ctx context.Context, app *sdk.App, o *options, outstanding *atomic.Int64) (int64, error) {
	var (
		mu       sync.Mutex
		inside   int64
		firstErr error
		wg       sync.WaitGroup
	)
	for i := 0; i < o.slices; i++ {
		wg.Add(1)
		outstanding.Add(1)
		go func() {
			defer wg.Done()
			defer outstanding.Add(-1)
			task := make([]byte, 16)
			binary.BigEndian.PutUint64(task[:8], uint64(o.samplesPerSlice))
			binary.BigEndian.PutUint64(task[8:], uint64(i)+1)
			for attempt := 0; ; attempt++ {
				out, err := app.Run(ctx, task)
				if err == nil && len(out) == 8 {
					mu.Lock()
					inside += int64(binary.BigEndian.Uint64(out))
					mu.Unlock()
					return
				}
				if err == nil {
					err = fmt.Errorf("slice %d: malformed result", i)
				}
				if ctx.Err() != nil || errors.Is(err, sdk.ErrTask) || attempt >= 3 {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("slice %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return inside, firstErr
}

// allocationTarget is the executor total dynamic allocation asks for:
// one executor per tasksPerExecutor outstanding slices, rounded up, within
// [min, max] (Spark's ExecutorAllocationManager: maxNumExecutorsNeeded,
// bounded by minExecutors and maxExecutors).
func allocationTarget(outstanding int64, tasksPerExecutor, min, max int) int {
	need := int((outstanding + int64(tasksPerExecutor) - 1) / int64(tasksPerExecutor))
	if need < min {
		return min
	}
	if need > max {
		return max
	}
	return need
}

// allocate grows the app with its backlog until ctx ends: while slices are
// outstanding and the target is above the total asked, it asks for the
// target. It never lowers the total itself: executors that run out of
// work go by the idle timeout (SetIdleTimeout), so a busy one is never
// killed, as in Spark.
func allocate(ctx context.Context, app *sdk.App, o *options, outstanding *atomic.Int64) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	last := -1
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		backlog := outstanding.Load()
		asked, _ := app.RequestedTotal()
		if target := allocationTarget(backlog, o.tasksPerExecutor, o.minExecutors, o.maxExecutors); backlog > 0 && target > asked {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := app.RequestTotalExecutors(rctx, target); err != nil && ctx.Err() == nil {
				fmt.Fprintln(os.Stderr, "pi: request executors:", err)
			} else if err == nil {
				fmt.Fprintf(os.Stderr, "backlog %d slices: asked for %d executors\n", backlog, target)
			}
			cancel()
		}
		if n := len(app.Registered()); n != last {
			last = n
			fmt.Fprintf(os.Stderr, "executors: %d registered (backlog %d)\n", n, backlog)
		}
	}
}

// pause waits, between waves, until the idle executors were released down
// to --min-executors, or --wave-pause passed.
func pause(ctx context.Context, app *sdk.App, o *options) {
	if !o.dynamic {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, o.wavePause)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for len(app.Registered()) > o.minExecutors {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// countInside is the executor's task: task = samples (8 bytes) + seed (8
// bytes); result = points inside the unit circle (8 bytes).
func countInside(ctx context.Context, task []byte) ([]byte, error) {
	if len(task) != 16 {
		return nil, fmt.Errorf("task is %d bytes, want 16", len(task))
	}
	n := binary.BigEndian.Uint64(task[:8])
	seed := binary.BigEndian.Uint64(task[8:])
	r := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	var in uint64
	for i := uint64(0); i < n; i++ {
		if i%65536 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		x, y := r.Float64()*2-1, r.Float64()*2-1
		if x*x+y*y <= 1 {
			in++
		}
	}
	out := make([]byte, 8)
	binary.BigEndian.PutUint64(out, in)
	return out, nil
}
