package scheduler

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

// TestView_Barrier_NoPlanBehindTheBucket: a mirror that delivered its
// initial values but stopped delivering (a watch stalled after a bus
// restart, not yet replaced) must not let a new leader plan: after
// barrier, readyLocked waits until the mirror has applied what the bucket
// held. Without the barrier the leader planned on the stale view and placed
// an app's executors a second time (TestChaos_LeaderKills, round 13).
func TestView_Barrier_NoPlanBehindTheBucket(t *testing.T) {
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.ClientURL())
	st := bustest.Store(t, nc)
	ctx := context.Background()
	v := newView(st, zerolog.Nop(), nil)
	// The mirrors as a standby left them: loaded, the cluster ALIVE for
	// epoch 7, and no watch running (the "stalled" one).
	alive, err := bus.Encode(&schemas.Cluster{Epoch: 7, State: schemas.ClusterAlive, Leader: "s1"}, bus.JSON)
	if err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	for _, loaded := range []*bool{&v.workers.loaded, &v.drivers.loaded, &v.apps.loaded, &v.executors.loaded, &v.cluster.loaded} {
		*loaded = true
	}
	v.cluster.setLocked(bus.KeyClusterState, 1, alive, false, false)
	v.mu.Unlock()
	// A write the stalled mirror never sees.
	rev, err := st.Executors.Put(ctx, "app-20260101000000-000001.0", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	ready := v.readyLocked(7)
	v.mu.Unlock()
	if !ready {
		t.Fatal("before the barrier the view should count as ready (the old behaviour)")
	}
	v.barrier(ctx, new(zerolog.Nop()))
	v.mu.Lock()
	ready = v.readyLocked(7)
	v.mu.Unlock()
	if ready {
		t.Fatalf("ready with the executors mirror at %d behind the bucket's write %d", v.executors.seen, rev)
	}
	// The mirror delivers the write (a replacement watch): ready.
	v.mu.Lock()
	v.executors.seen = rev
	ready = v.readyLocked(7)
	v.mu.Unlock()
	if !ready {
		t.Fatalf("not ready with every mirror caught up: %+v", []uint64{v.workers.need, v.drivers.need, v.apps.need, v.executors.need, v.cluster.need})
	}
}
