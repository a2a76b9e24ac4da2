package bus_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/bus/bustest"
)

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// TestArtifacts_DeleteIfGuardedByTouch: a delete judged on a listing fails
// once the object was touched (a submission reusing it) or deleted by
// another collector, and the touched object stays whole; a touch after
// the delete reports no object, and the next put uploads it again. The
// collector runs as the registration role on a secured bus.
func TestArtifacts_DeleteIfGuardedByTouch(t *testing.T) {
	srv := bustest.StartSecure(t)
	admin := srv.ConnAs(t, auth.RoleAdmin, "admin")
	bustest.Store(t, admin)
	reg := srv.ConnAs(t, auth.RoleRegistration, "registration")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	jsAdmin, _ := jetstream.New(admin)
	jsReg, _ := jetstream.New(reg)
	obs, err := bus.Artifacts(ctx, jsAdmin)
	if err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("shipped\n"), 40000) // several chunks
	digest := sha(content)
	if stored, err := bus.PutArtifact(ctx, jsAdmin, obs, digest, "tool", bytes.NewReader(content)); err != nil || !stored {
		t.Fatalf("put: %v %v", stored, err)
	}
	list, err := bus.ListArtifacts(ctx, jsReg)
	if err != nil || len(list) != 1 || list[0].Digest != digest || list[0].MetaSeq == 0 || list[0].ModTime.IsZero() {
		t.Fatalf("list: %+v %v", list, err)
	}
	judged := list[0]

	// A reuse touches it: the stale judgement deletes nothing.
	if stored, err := bus.PutArtifact(ctx, jsAdmin, obs, digest, "tool", bytes.NewReader(content)); err != nil || stored {
		t.Fatalf("second put: stored %v, %v", stored, err)
	}
	if err := bus.DeleteArtifactIf(ctx, jsReg, judged); !errors.Is(err, bus.ErrArtifactChanged) {
		t.Fatalf("delete after a touch: want ErrArtifactChanged, got %v", err)
	}
	var buf bytes.Buffer
	if _, err := bus.FetchArtifact(ctx, jsAdmin, digest, &buf); err != nil || !bytes.Equal(buf.Bytes(), content) {
		t.Fatalf("fetch after a refused delete: %v (%d bytes)", err, buf.Len())
	}
	list, err = bus.ListArtifacts(ctx, jsReg)
	if err != nil || len(list) != 1 || list[0].MetaSeq <= judged.MetaSeq || list[0].ModTime.Before(judged.ModTime) {
		t.Fatalf("list after a touch: %+v %v (judged %+v)", list, err, judged)
	}

	// Two collectors with the same listing: one deletes, the other finds
	// it changed.
	if err := bus.DeleteArtifactIf(ctx, jsReg, list[0]); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if err := bus.DeleteArtifactIf(ctx, jsReg, list[0]); !errors.Is(err, bus.ErrArtifactChanged) {
		t.Fatalf("second delete: want ErrArtifactChanged, got %v", err)
	}
	if _, err := bus.FetchArtifact(ctx, jsAdmin, digest, &bytes.Buffer{}); !errors.Is(err, bus.ErrArtifactNotFound) {
		t.Fatalf("fetch of a deleted artifact: %v", err)
	}
	if list, err := bus.ListArtifacts(ctx, jsReg); err != nil || len(list) != 0 {
		t.Fatalf("list after delete: %+v %v", list, err)
	}
	si, err := jsAdmin.Stream(ctx, bus.StreamArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := si.Info(ctx); err != nil || info.State.Msgs != 1 { // the delete marker only
		t.Fatalf("chunks left after delete: %+v %v", info.State, err)
	}
	// A submission that looks after the delete uploads again.
	if ok, err := bus.TouchArtifact(ctx, jsAdmin, digest); err != nil || ok {
		t.Fatalf("touch of a deleted artifact: %v %v", ok, err)
	}
	if stored, err := bus.PutArtifact(ctx, jsAdmin, obs, digest, "tool", bytes.NewReader(content)); err != nil || !stored {
		t.Fatalf("put after delete: stored %v, %v", stored, err)
	}
	buf.Reset()
	if _, err := bus.FetchArtifact(ctx, jsAdmin, digest, &buf); err != nil || !bytes.Equal(buf.Bytes(), content) {
		t.Fatalf("fetch after upload again: %v", err)
	}

	// The registration role may not write objects.
	robs, err := bus.Artifacts(ctx, jsReg)
	if err == nil {
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		defer wcancel()
		other := []byte("registration upload")
		if _, err := bus.PutArtifact(wctx, jsReg, robs, sha(other), "x", bytes.NewReader(other)); err == nil {
			t.Fatal("registration wrote to stoker-artifacts")
		}
	}
}
