package tests

import (
	"context"
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

// BenchmarkAppStart measures, on an idle cluster of two 4-core agents, the
// time from registering an application of four 1-core executors to all four
// RUNNING (as seen by a watch on stoker-executors), then ends the app and
// waits for the cluster to be idle again; placements/s is 4 / that time.
// Secure is the default cluster (credentials, TLS); Insecure runs the same
// with `--insecure`, to show what security costs. Run:
//
//	go test ./tests -run '^$' -bench AppStart -benchtime 20x
func BenchmarkAppStart(b *testing.B) {
	b.Run("Secure", func(b *testing.B) { benchAppStart(b, false) })
	b.Run("Insecure", func(b *testing.B) { benchAppStart(b, true) })
}

func benchAppStart(b *testing.B, insecure bool) {
	c := NewCluster(b, ClusterOptions{Insecure: insecure})
	c.StartServices()
	c.StartAgent("a", 4, "2g")
	c.StartAgent("b", 4, "2g")
	c.Eventually(30*time.Second, "cluster ALIVE", func() bool {
		out, _, err := c.CLI("status", "--json")
		var st schemas.Status
		return err == nil && jsonInto(out, &st) == nil && st.State == schemas.ClusterAlive && st.Workers["ALIVE"] == 2
	})
	st := c.Store()
	ctx := context.Background()
	var took []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w, err := st.Executors.WatchAll(ctx, jetstream.UpdatesOnly())
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		app, err := sdk.RegisterApp(ctx, c.NC(), schemas.RegisterApp{
			Name: fmt.Sprintf("bench-%d", i), MaxCores: 4,
			Executor: schemas.ExecutorSpec{Command: []string{"sleep", "600"}, Cores: 1, MemoryMB: 64},
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := waitRunning(w, app.ID, 4, 30*time.Second); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
		_ = w.Stop()
		b.StopTimer()
		if err := app.Close(ctx, schemas.AppFinished); err != nil {
			b.Fatal(err)
		}
		c.Eventually(30*time.Second, "cluster idle again", func() bool {
			for _, wv := range c.workers() {
				if wv.CoresUsed != 0 {
					return false
				}
			}
			return true
		})
		b.StartTimer()
	}
	b.StopTimer()
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	med := took[len(took)/2]
	b.ReportMetric(float64(med.Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(4/med.Seconds(), "placements/s")
	fmt.Fprintf(os.Stderr, "%s: register→4 executors RUNNING over %d apps: min %s median %s max %s\n",
		b.Name(), len(took), took[0], med, took[len(took)-1])
}

// waitRunning reads executor records from w (a watch of stoker-executors)
// until n executors of appID are RUNNING, or fails after within.
func waitRunning(w jetstream.KeyWatcher, appID string, n int, within time.Duration) error {
	running := map[string]bool{}
	deadline := time.After(within)
	for len(running) < n {
		select {
		case e := <-w.Updates():
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var ex schemas.Executor
			if bus.DecodeRecord(e.Value(), &ex) == nil && ex.AppID == appID && ex.State == schemas.ExecutorRunning {
				running[e.Key()] = true
			}
		case <-deadline:
			return fmt.Errorf("app %s: %d of %d executors RUNNING after %s", appID, len(running), n, within)
		}
	}
	return nil
}
