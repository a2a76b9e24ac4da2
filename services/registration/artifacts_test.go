package registration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

func TestUnusedArtifacts(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	d := func(c byte) string { return string(bytes.Repeat([]byte{c}, 64)) }
	obj := func(c byte, age time.Duration) bus.ArtifactObject {
		return bus.ArtifactObject{Digest: d(c), MetaSeq: uint64(c), ModTime: t0.Add(-age)}
	}
	grace := 10 * time.Minute
	cases := []struct {
		name string
		objs []bus.ArtifactObject
		refs []string
		want []string
	}{
		{"none", nil, nil, nil},
		{"old and unnamed goes", []bus.ArtifactObject{obj('a', time.Hour)}, nil, []string{d('a')}},
		{"named by a record stays however old", []bus.ArtifactObject{obj('a', 100*time.Hour)}, []string{d('a')}, nil},
		{"young and unnamed stays (a submission between upload and record)", []bus.ArtifactObject{obj('a', time.Minute)}, nil, nil},
		{"exactly grace old stays", []bus.ArtifactObject{obj('a', grace)}, nil, nil},
		{"just past grace goes", []bus.ArtifactObject{obj('a', grace+time.Millisecond)}, nil, []string{d('a')}},
		{"touched in the future (clock skew) stays", []bus.ArtifactObject{obj('a', -time.Minute)}, nil, nil},
		{"mixed, ordered by digest",
			[]bus.ArtifactObject{obj('c', time.Hour), obj('b', time.Second), obj('a', time.Hour), obj('e', time.Hour)},
			[]string{d('e'), d('f')}, []string{d('a'), d('c')}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			refs := map[string]bool{}
			for _, r := range tc.refs {
				refs[r] = true
			}
			var got []string
			for _, o := range UnusedArtifacts(tc.objs, refs, t0, grace) {
				got = append(got, o.Digest)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func digestOf(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// TestRetention_DeletesUnusedArtifacts: on a secured bus, with two
// registration instances running retention: the artifact of an app that
// retention removed (and of no other record) is deleted, once; those of a
// kept ended app, of a live driver and of a driver's app stay; an upload no
// record names yet stays while it is younger than the grace period (a
// submission whose record does not exist yet) and goes after.
func TestRetention_DeletesUnusedArtifacts(t *testing.T) {
	srv := bustest.StartSecure(t)
	admin := srv.ConnAs(t, auth.RoleAdmin, "admin")
	st := bustest.Store(t, admin)
	e := &env{nc: admin, st: st}
	ctx := ctxT(t)
	js, _ := jetstream.New(admin)
	obs, err := bus.Artifacts(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	upload := func(name string) schemas.Artifact {
		t.Helper()
		b := bytes.Repeat([]byte(name+"\n"), 5000)
		dg := digestOf(b)
		if _, err := bus.PutArtifact(ctx, js, obs, dg, name, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		return schemas.Artifact{Name: name, Digest: dg, Size: int64(len(b))}
	}
	removedArt, keptArt, liveArt, sharedArt := upload("removed"), upload("kept"), upload("live"), upload("shared")
	old := now().Add(-2 * time.Hour)
	spec := func(a ...schemas.Artifact) schemas.ExecutorSpec {
		return schemas.ExecutorSpec{Command: []string{"x"}, Cores: 1, MemoryMB: 10, Artifacts: a}
	}
	// Two ended apps; retention keeps the newest one. The older one's
	// "shared" file is also named by a live driver.
	put(t, e, st.Apps, "app-20261201000000-000000", &schemas.App{ID: "app-20261201000000-000000", Name: "old", State: schemas.AppFinished,
		Executor: spec(removedArt, sharedArt), UpdatedAt: old})
	put(t, e, st.Apps, "app-20261201000000-000001", &schemas.App{ID: "app-20261201000000-000001", Name: "new", State: schemas.AppFinished,
		Executor: spec(keptArt), UpdatedAt: old.Add(time.Minute)})
	put(t, e, st.Drivers, "driver-20261201000000-000000", &schemas.Driver{ID: "driver-20261201000000-000000", Command: []string{"x"},
		Cores: 1, MemoryMB: 10, State: schemas.DriverRunning, WorkerID: "w1", Artifacts: []schemas.Artifact{liveArt, sharedArt}})

	events, err := admin.SubscribeSync(bus.EventSubject("artifact", "*"))
	if err != nil {
		t.Fatal(err)
	}
	// A grace long enough for this test's uploads, short enough to see
	// the pending upload go.
	const grace = 3 * time.Second
	r := Retention{RetainedApps: 1, Interval: 50 * time.Millisecond, ArtifactGrace: grace}
	var svcs []*Service
	for _, id := range []string{"reg-a", "reg-b"} {
		s, err := New(Config{NC: srv.ConnAs(t, auth.RoleRegistration, id), ID: id, Log: zerolog.Nop(), Retention: r})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Stop)
		svcs = append(svcs, s)
	}
	// A submission between its upload and its record: a fresh upload no
	// record names. A collector with a long grace spares it (and spares
	// everything: all were just uploaded or are named). (The running
	// instances' 3 s grace may pass on a loaded machine: only this call's
	// count is asserted.)
	pending := upload("pending")
	if n, err := svcs[0].collectArtifacts(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("collector with a long grace deleted %d (%v)", n, err)
	}
	stored := func() map[string]bool {
		t.Helper()
		list, err := bus.ListArtifacts(ctx, js)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, o := range list {
			m[o.Digest] = true
		}
		return m
	}

	bustest.Eventually(t, 20*time.Second, "the removed app's artifact and the unclaimed upload are deleted", func() bool {
		s := stored()
		return !s[removedArt.Digest] && !s[pending.Digest]
	})
	s := stored()
	for _, a := range []schemas.Artifact{keptArt, liveArt, sharedArt} {
		if !s[a.Digest] {
			t.Fatalf("artifact %s deleted although a record names it", a.Name)
		}
	}
	if _, _, err := bus.Get[schemas.App](ctx, st.Apps, "app-20261201000000-000000"); err == nil {
		t.Fatal("the old app is still stored")
	}
	// Each deletion is one event although two instances ran.
	removed := map[string]int{}
	for {
		m, err := events.NextMsg(300 * time.Millisecond)
		if err != nil {
			break
		}
		var ev schemas.Event
		if json.Unmarshal(m.Data, &ev) == nil && ev.State == StateRemoved {
			removed[ev.ID]++
		}
	}
	if len(removed) != 2 || removed[removedArt.Digest] != 1 || removed[pending.Digest] != 1 {
		t.Fatalf("artifact removal events: %v", removed)
	}
}
