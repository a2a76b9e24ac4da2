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
}

func parse(args []string) (*options, error) {
	fs := flag.NewFlagSet("pi", flag.ContinueOnError)
	o := &options{}
	fs.BoolVar(&o.executor, "executor", false, "serve tasks as an executor (set automatically when STOKER_EXECUTOR_ID is)")
	fs.IntVar(&o.slices, "slices", 10, "number of tasks")
	fs.Int64Var(&o.samplesPerSlice, "samples-per-slice", 1_000_000, "random points per task")
	fs.IntVar(&o.executorCores, "executor-cores", 1, "cores per executor")
	fs.StringVar(&o.executorMemory, "executor-memory", "256m", "memory per executor")
	fs.IntVar(&o.maxCores, "max-cores", 0, "cap on the application's cores (0: no cap)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up (and end the app FAILED) after this long")
	if err := fs.Parse(args); err != nil {
		return nil, err
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
	app, err := sdk.RegisterApp(ctx, nc, schemas.RegisterApp{
		Name:     "pi",
		Executor: schemas.ExecutorSpec{Command: []string{self, "--executor"}, Cores: o.executorCores, MemoryMB: mem},
		MaxCores: o.maxCores,
	})
	if err != nil {
		return 0, err
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
	inside, err := runSlices(rctx, app, o)
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
	return 4 * float64(inside) / float64(int64(o.slices)*o.samplesPerSlice), nil
}

// runSlices sends every slice at once; the App queues them on idle
// executors. A slice whose executor vanished is sent again.
func runSlices(ctx context.Context, app *sdk.App, o *options) (int64, error) {
	var (
		mu       sync.Mutex
		inside   int64
		firstErr error
		wg       sync.WaitGroup
	)
	for i := 0; i < o.slices; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
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
