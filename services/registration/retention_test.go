package registration

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

func TestExpired_KeepsNewestEndedAndLiveWork(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	in := RetentionInput{
		Workers: map[string]Keyed[schemas.Worker]{
			"alive": {&schemas.Worker{ID: "alive", State: schemas.WorkerAlive, UpdatedAt: t0}, 1},
			"dead":  {&schemas.Worker{ID: "dead", State: schemas.WorkerDead, UpdatedAt: t0}, 2},
			"busy":  {&schemas.Worker{ID: "busy", State: schemas.WorkerDead, UpdatedAt: t0}, 3},
			"fresh": {&schemas.Worker{ID: "fresh", State: schemas.WorkerDecommissioned, UpdatedAt: t0.Add(59 * time.Minute)}, 4},
		},
		Apps:      map[string]Keyed[schemas.App]{},
		Drivers:   map[string]Keyed[schemas.Driver]{},
		Executors: map[string]map[string]Keyed[schemas.Executor]{},
		Holding:   map[string]bool{"busy": true},
	}
	for i := 0; i < 4; i++ {
		id := fmt.Sprintf("app-%d", i)
		in.Apps[id] = Keyed[schemas.App]{&schemas.App{ID: id, State: schemas.AppFinished, UpdatedAt: t0.Add(time.Duration(i) * time.Minute)}, uint64(10 + i)}
		in.Executors[id] = map[string]Keyed[schemas.Executor]{
			id + ".0": {&schemas.Executor{AppID: id, State: schemas.ExecutorExited}, uint64(20 + i)},
		}
		did := fmt.Sprintf("driver-%d", i)
		in.Drivers[did] = Keyed[schemas.Driver]{&schemas.Driver{ID: did, State: schemas.DriverFinished, UpdatedAt: t0.Add(time.Duration(i) * time.Minute)}, uint64(30 + i)}
	}
	// A running app and driver are never judged; an ended app whose
	// executor still holds resources waits.
	in.Apps["app-live"] = Keyed[schemas.App]{&schemas.App{ID: "app-live", State: schemas.AppRunning}, 40}
	in.Drivers["driver-live"] = Keyed[schemas.Driver]{&schemas.Driver{ID: "driver-live", State: schemas.DriverRunning}, 41}
	in.Executors["app-0"]["app-0.1"] = Keyed[schemas.Executor]{&schemas.Executor{AppID: "app-0", ID: 1, State: schemas.ExecutorRunning}, 42}

	got := Expired(Retention{RetainedApps: 2, RetainedDrivers: 3, DeadWorkerTTL: 30 * time.Minute}, in, t0.Add(time.Hour))
	var keys []string
	for _, r := range got {
		keys = append(keys, fmt.Sprintf("%s/%s@%d", r.Bucket, r.Key, r.Revision))
	}
	want := []string{
		"stoker-executors/app-1.0@21", "stoker-apps/app-1@11", // app-0 waits for its running executor
		"stoker-drivers/driver-0@30",
		"stoker-workers/dead@2", // busy holds something, fresh is recent, alive is alive
	}
	if fmt.Sprint(keys) != fmt.Sprint(want) {
		t.Fatalf("removals\n got %v\nwant %v", keys, want)
	}
	if got := Expired(Retention{}, in, t0.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("zero retention removes %v", got)
	}
}

// TestRetention_BoundsLists: with retention on, ended apps (with their
// executors), ended drivers and long-dead workers beyond the bounds leave
// KV and the lists; live work stays; the removals are events. Two
// registration instances run it at once.
func TestRetention_BoundsLists(t *testing.T) {
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.URL())
	st := bustest.Store(t, nc)
	e := &env{nc: nc, st: st}
	old := now().Add(-2 * time.Hour)
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("app-20261201000000-00000%d", i)
		put(t, e, st.Apps, id, &schemas.App{ID: id, Name: "done", State: schemas.AppFinished,
			Executor: schemas.ExecutorSpec{Command: []string{"x"}, Cores: 1, MemoryMB: 10}, UpdatedAt: old.Add(time.Duration(i) * time.Minute)})
		for x := 0; x < 3; x++ {
			put(t, e, st.Executors, schemas.ExecutorKey(id, x), &schemas.Executor{AppID: id, ID: x, WorkerID: "gone", Cores: 1, MemoryMB: 10, State: schemas.ExecutorExited})
		}
		did := fmt.Sprintf("driver-20261201000000-00000%d", i)
		put(t, e, st.Drivers, did, &schemas.Driver{ID: did, Command: []string{"x"}, Cores: 1, MemoryMB: 10, State: schemas.DriverFinished, WorkerID: "gone", UpdatedAt: old.Add(time.Duration(i) * time.Minute)})
	}
	put(t, e, st.Workers, "gone", &schemas.Worker{ID: "gone", Cores: 1, MemoryMB: 10, State: schemas.WorkerDead, UpdatedAt: old})
	put(t, e, st.Workers, "w1", &schemas.Worker{ID: "w1", Cores: 1, MemoryMB: 10, State: schemas.WorkerAlive, UpdatedAt: old})
	live := "app-20261201000000-0000aa"
	put(t, e, st.Apps, live, &schemas.App{ID: live, Name: "live", State: schemas.AppRunning,
		Executor: schemas.ExecutorSpec{Command: []string{"x"}, Cores: 1, MemoryMB: 10}})
	put(t, e, st.Executors, schemas.ExecutorKey(live, 0), &schemas.Executor{AppID: live, ID: 0, WorkerID: "w1", Cores: 1, MemoryMB: 10, State: schemas.ExecutorRunning})

	events, err := nc.SubscribeSync(bus.EventSubject("*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	r := Retention{RetainedApps: 2, RetainedDrivers: 1, DeadWorkerTTL: time.Hour, Interval: 50 * time.Millisecond}
	for _, id := range []string{"reg-a", "reg-b"} {
		s, err := New(Config{NC: bustest.Conn(t, srv.URL()), ID: id, Log: zerolog.Nop(), Retention: r})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		t.Cleanup(s.Stop)
	}
	bustest.Eventually(t, 10*time.Second, "retention bounds the records", func() bool {
		al, err := call[schemas.AppList](t, e, bus.APIAppsList, &schemas.ListRequest{})
		if err != nil || len(al.Apps) != 3 {
			return false
		}
		dl, err := call[schemas.DriverList](t, e, bus.APIDriversList, &schemas.ListRequest{})
		if err != nil || len(dl.Drivers) != 1 {
			return false
		}
		wl, err := call[schemas.WorkerList](t, e, bus.APIWorkersList, &schemas.ListRequest{})
		return err == nil && len(wl.Workers) == 1
	})
	al := mustCall[schemas.AppList](t, e, bus.APIAppsList, &schemas.ListRequest{})
	// Live work first, then the newest ended ones.
	if al.Apps[0].ID != live || len(al.Apps[0].Executors) != 1 ||
		al.Apps[1].ID != "app-20261201000000-000003" || al.Apps[2].ID != "app-20261201000000-000004" {
		t.Fatalf("apps kept: %+v", al.Apps)
	}
	dl := mustCall[schemas.DriverList](t, e, bus.APIDriversList, &schemas.ListRequest{})
	if dl.Drivers[0].ID != "driver-20261201000000-000004" {
		t.Fatalf("drivers kept: %+v", dl.Drivers)
	}
	// The executors of removed apps are gone from KV too.
	for i := 0; i < 3; i++ {
		if _, _, err := bus.Get[schemas.Executor](ctxT(t), st.Executors, schemas.ExecutorKey("app-20261201000000-000000", i)); err == nil {
			t.Fatalf("executor %d of a removed app is still stored", i)
		}
	}
	if _, _, err := bus.Get[schemas.Executor](ctxT(t), st.Executors, schemas.ExecutorKey("app-20261201000000-000004", 0)); err != nil {
		t.Fatalf("executor of a kept app: %v", err)
	}
	// Filters: live only, by state.
	if l := mustCall[schemas.AppList](t, e, bus.APIAppsList, &schemas.ListRequest{Live: true}); len(l.Apps) != 1 || l.Apps[0].ID != live {
		t.Fatalf("live apps: %+v", l.Apps)
	}
	if l := mustCall[schemas.AppList](t, e, bus.APIAppsList, &schemas.ListRequest{States: []string{"finished"}}); len(l.Apps) != 2 {
		t.Fatalf("finished apps: %+v", l.Apps)
	}
	// Each removal is in the history, once although two instances ran.
	removed := map[string]int{}
	for {
		m, err := events.NextMsg(200 * time.Millisecond)
		if err != nil {
			break
		}
		var ev schemas.Event
		if json.Unmarshal(m.Data, &ev) == nil && ev.State == StateRemoved {
			removed[ev.Kind+"/"+ev.ID]++
		}
	}
	if len(removed) != 3+4+1 {
		t.Fatalf("removal events: %v", removed)
	}
	for k, n := range removed {
		if n != 1 {
			t.Fatalf("%s removed %d times", k, n)
		}
	}
}
