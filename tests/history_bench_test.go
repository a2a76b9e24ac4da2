package tests

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

// BenchmarkHistory measures what issue 12 asks to cost the same whatever
// the history: a listing (the live apps, as `stoker apps` asks; one app by
// id, as `stoker run` follows its own; the workers; status), a worker
// registration (an agent restart: a new instance of a known worker) and a
// 4-executor app's start (register → 4 RUNNING in KV, as BenchmarkAppStart),
// with 0, 10,000 and 100,000 finished executor records stored, in one run
// on one cluster (the records are added between the sizes: 100 EXITED
// executors per FINISHED app). Each figure is the median over the
// iterations; the table goes to stderr. Run:
//
//	flock /work/wt/heavy.lock go test ./tests -run '^$' -bench History -benchtime 20x -timeout 30m
func BenchmarkHistory(b *testing.B) {
	c := NewCluster(b, ClusterOptions{})
	c.StartServices()
	c.StartAgent("a", 4, "2g")
	c.StartAgent("b", 4, "2g")
	c.Eventually(30*time.Second, "cluster ALIVE", func() bool {
		out, _, err := c.CLI("status", "--json")
		var st schemas.Status
		return err == nil && jsonInto(out, &st) == nil && st.State == schemas.ClusterAlive && st.Workers["ALIVE"] == 2
	})
	st := c.Store()
	stored := 0
	type row struct {
		size int
		figs map[string]time.Duration
	}
	rows := make([]row, 3)
	for n, size := range []int{0, 10_000, 100_000} {
		b.Run(fmt.Sprintf("finished=%d", size), func(b *testing.B) {
			if stored < size {
				storeFinished(b, c, stored, size)
				stored = size
			}
			figs := historyRound(b, c, st, size)
			rows[n] = row{size, figs} // the last run of the sub-benchmark (b.N rounds) wins
		})
	}
	names := []string{"apps.list live", "apps.list one app", "workers.list", "status", "register (restart)", "app start (4 RUNNING)"}
	fmt.Fprintf(os.Stderr, "\n| finished executors stored |")
	for _, n := range names {
		fmt.Fprintf(os.Stderr, " %s |", n)
	}
	fmt.Fprintf(os.Stderr, "\n| ---: |")
	for range names {
		fmt.Fprintf(os.Stderr, " ---: |")
	}
	for _, r := range rows {
		fmt.Fprintf(os.Stderr, "\n| %d |", r.size)
		for _, n := range names {
			fmt.Fprintf(os.Stderr, " %.2f ms |", float64(r.figs[n].Microseconds())/1000)
		}
	}
	fmt.Fprintln(os.Stderr)
}

// storeFinished writes finished executors from..to (100 per FINISHED app)
// straight into the buckets, as a long-lived cluster would have left them.
func storeFinished(b *testing.B, c *Cluster, from, to int) {
	b.Helper()
	js, err := jetstream.New(c.NC())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	t0 := time.Now().UTC().Add(-24 * time.Hour)
	zero := 0
	for i := from; i < to; i++ {
		appID := fmt.Sprintf("app-20260101000000-%06x", i/100)
		if i%100 == 0 {
			a := &schemas.App{ID: appID, Name: "history", State: schemas.AppFinished, MaxCores: 4, NextExecutorID: 100,
				Executor: schemas.ExecutorSpec{Command: []string{"true"}, Cores: 1, MemoryMB: 64}, SubmittedAt: t0, UpdatedAt: t0}
			data, _ := bus.EncodeRecord(a)
			if _, err := js.PublishAsync("$KV."+bus.BucketApps+"."+appID, data); err != nil {
				b.Fatal(err)
			}
		}
		ex := &schemas.Executor{ID: i % 100, AppID: appID, WorkerID: "gone", Cores: 1, MemoryMB: 64,
			State: schemas.ExecutorExited, ExitCode: &zero, CreatedAt: t0, UpdatedAt: t0}
		data, _ := bus.EncodeRecord(ex)
		if _, err := js.PublishAsync("$KV."+bus.BucketExecutors+"."+schemas.ExecutorKey(appID, i%100), data); err != nil {
			b.Fatal(err)
		}
		if i%2000 == 1999 {
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				b.Fatal("storing history: timed out")
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal("storing history: timed out")
	}
}

// historyRound runs b.N rounds of every measured request and returns the
// median of each.
func historyRound(b *testing.B, c *Cluster, st *bus.Store, size int) map[string]time.Duration {
	ctx := context.Background()
	took := map[string][]time.Duration{}
	timeIt := func(name string, fn func() error) {
		start := time.Now()
		if err := fn(); err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		took[name] = append(took[name], time.Since(start))
	}
	nc := c.NC()
	instance := 0
	for i := 0; i < b.N; i++ {
		// An app of 4 executors, register → all RUNNING.
		w, err := st.Executors.WatchAll(ctx, jetstream.UpdatesOnly())
		if err != nil {
			b.Fatal(err)
		}
		var app *sdk.App
		timeIt("app start (4 RUNNING)", func() error {
			app, err = sdk.RegisterApp(ctx, nc, schemas.RegisterApp{
				Name: fmt.Sprintf("bench-%d-%d", size, i), MaxCores: 4,
				Executor: schemas.ExecutorSpec{Command: []string{"sleep", "600"}, Cores: 1, MemoryMB: 64},
			})
			if err != nil {
				return err
			}
			if err := waitRunning(w, app.ID, 4, 60*time.Second); err != nil {
				return err
			}
			return nil
		})
		_ = w.Stop()
		call := func(subject string, req *schemas.ListRequest, out any) func() error {
			return func() error {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				return bus.Call(cctx, nc, subject, req, out)
			}
		}
		var apps schemas.AppList
		timeIt("apps.list live", call(bus.APIAppsList, &schemas.ListRequest{Live: true}, &apps))
		if len(apps.Apps) != 1 || len(apps.Apps[0].Executors) != 4 {
			b.Fatalf("live apps: want the one app with 4 executors, got %+v", apps.Apps)
		}
		timeIt("apps.list one app", call(bus.APIAppsList, &schemas.ListRequest{IDs: []string{app.ID}}, &apps))
		timeIt("workers.list", call(bus.APIWorkersList, &schemas.ListRequest{}, &schemas.WorkerList{}))
		var status schemas.Status
		timeIt("status", call(bus.APIStatus, &schemas.ListRequest{}, &status))
		// A restart of a known worker: a new instance registers (the
		// reconciliation reads what is placed on it).
		instance++
		timeIt("register (restart)", func() error {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			return bus.Call(cctx, nc, bus.WorkerRegisterSubject("bench-reg"), &schemas.RegisterWorker{
				WorkerID: "bench-reg", Instance: fmt.Sprintf("bench-%d-%d", size, instance), Host: "bench",
				Cores: 1, MemoryMB: 16, Since: time.Now().UTC(), // too small for the apps' executors
			}, &schemas.WorkerRegistered{})
		})
		b.StopTimer()
		if err := app.Close(ctx, schemas.AppFinished); err != nil {
			b.Fatal(err)
		}
		c.Eventually(60*time.Second, "cluster idle again", func() bool {
			for _, wv := range c.workers() {
				if wv.CoresUsed != 0 {
					return false
				}
			}
			return true
		})
		b.StartTimer()
	}
	med := map[string]time.Duration{}
	for name, ds := range took {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		med[name] = ds[len(ds)/2]
		b.ReportMetric(float64(med[name].Microseconds())/1000, strings.NewReplacer(" ", "_", "(", "", ")", "").Replace(name)+"-ms")
	}
	return med
}
