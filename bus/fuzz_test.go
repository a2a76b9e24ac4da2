package bus_test

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// wireTypes makes a zero value of every wire type (TestWireTypes_Complete
// keeps the list whole).
func wireTypes() []schemas.Typed {
	return []schemas.Typed{
		new(schemas.ExecutorHello), new(schemas.ExecutorRegistered), new(schemas.ExecutorBye), new(schemas.Task),
		new(schemas.TaskResult), new(schemas.AppStop), new(schemas.RegisterWorker), new(schemas.WorkerRegistered),
		new(schemas.Heartbeat), new(schemas.SchedulerStatus), new(schemas.KillExecutors), new(schemas.KillAcks), new(schemas.Reregister), new(schemas.HeartbeatAck), new(schemas.WorkerLeaving), new(schemas.AgentPresence),
		new(schemas.Ack), new(schemas.Worker), new(schemas.Driver), new(schemas.App), new(schemas.Executor),
		new(schemas.Lease), new(schemas.Cluster), new(schemas.LeaseBeat), new(schemas.LaunchExecutor), new(schemas.LaunchExecutors), new(schemas.LaunchAcks),
		new(schemas.LaunchDriver), new(schemas.Kill), new(schemas.MasterChanged), new(schemas.WorkerReport),
		new(schemas.StateChange), new(schemas.StateChanges), new(schemas.StateAcks), new(schemas.StateAck), new(schemas.LogsRequest), new(schemas.LogsReply),
		new(schemas.SubmitDriver), new(schemas.SubmitDriverReply), new(schemas.RegisterApp), new(schemas.AppRegistered),
		new(schemas.UnregisterApp), new(schemas.ExecutorRequest), new(schemas.KillRequest), new(schemas.AppHeartbeat), new(schemas.ListRequest),
		new(schemas.CordonRequest), new(schemas.DrainRequest),
		new(schemas.WorkerList), new(schemas.DriverList), new(schemas.AppList), new(schemas.Status), new(schemas.Event),
		new(schemas.TokenCreate), new(schemas.TokenCreated), new(schemas.TokenRevoke), new(schemas.TokenList),
		new(schemas.JoinRequest), new(schemas.JoinReply),
	}
}

// TestWireTypes_Complete: every type with a WireType method in schemas is
// in wireTypes, so the codec fuzzers cover each.
func TestWireTypes_Complete(t *testing.T) {
	files, err := filepath.Glob("../schemas/*.go")
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	fset := token.NewFileSet()
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Name.Name != "WireType" || fd.Recv == nil {
				continue
			}
			if star, ok := fd.Recv.List[0].Type.(*ast.StarExpr); ok {
				declared = append(declared, star.X.(*ast.Ident).Name)
			}
		}
	}
	var listed []string
	for _, v := range wireTypes() {
		listed = append(listed, v.WireType())
	}
	if len(declared) != len(listed) || len(declared) < 40 {
		t.Fatalf("schemas declares %d wire types %v, wireTypes lists %d", len(declared), declared, len(listed))
	}
	slices.Sort(listed)
	if len(slices.Compact(listed)) != len(declared) {
		t.Fatalf("wireTypes lists a type twice: %v", listed)
	}
}

// fuzzDecode decodes data as every wire type in format f. What decodes
// must encode again, and that encoding must be a fixed point: decoded and
// encoded once more it is the same bytes.
func fuzzDecode(t *testing.T, data []byte, f bus.Format) {
	for _, v := range wireTypes() {
		if err := bus.Decode(data, f, v); err != nil {
			continue
		}
		enc, err := bus.Encode(v, f)
		if err != nil {
			t.Fatalf("%s decoded but does not encode: %v", v.WireType(), err)
		}
		w := newLike(v)
		if err := bus.Decode(enc, f, w); err != nil {
			t.Fatalf("%s: its own encoding does not decode: %v\n%q", v.WireType(), err, enc)
		}
		enc2, err := bus.Encode(w, f)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("%s: encoding is not stable (%v):\n%q\n%q", v.WireType(), err, enc, enc2)
		}
	}
}

func newLike(v schemas.Typed) schemas.Typed {
	for _, w := range wireTypes() {
		if w.WireType() == v.WireType() {
			return w
		}
	}
	panic(v.WireType())
}

func FuzzDecodeMsgpack(f *testing.F) {
	for _, v := range wireTypes() {
		b, err := bus.Encode(v, bus.Msgpack)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode(t, data, bus.Msgpack) })
}

func FuzzDecodeJSON(f *testing.F) {
	for _, v := range wireTypes() {
		b, err := bus.Encode(v, bus.JSON)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) { fuzzDecode(t, data, bus.JSON) })
}

// FuzzDecodeChecked: a KV value of any bucket is decoded and checked
// without a panic; a record that passes its Check passes it again after
// being written back (what a service writes from it stays possible).
func FuzzDecodeChecked(f *testing.F) {
	f.Add(uint8(0), "w1", []byte(`{"id":"w1","state":"ALIVE","cores":4,"memory_mb":1024}`))
	f.Add(uint8(0), "w1", []byte(`{"id":"w1","state":"ALIVE","cores":-5,"memory_mb":1024}`))
	f.Add(uint8(2), "app-1", []byte(`{"id":"app-1","state":"WAITING","executor":{"cores":1,"memory_mb":64}}`))
	f.Add(uint8(3), "app-1.0", []byte(`{"app_id":"app-1","id":0,"worker_id":"w1","state":"RUNNING","cores":1,"memory_mb":64}`))
	f.Add(uint8(1), "driver-1", []byte(`{"id":"driver-1","state":"SUBMITTED","cores":1,"memory_mb":64,"command":["x"]}`))
	f.Add(uint8(4), "scheduler", []byte(`{"holder":"s1","epoch":3}`))
	f.Add(uint8(5), "state", []byte(`{"epoch":3,"state":"ALIVE"}`))
	f.Add(uint8(2), "app-junk", []byte("not a record"))
	buckets := bus.StoreBuckets()
	f.Fuzz(func(t *testing.T, which uint8, key string, data []byte) {
		b := buckets[int(which)%len(buckets)]
		v := b.Record()
		if err := bus.DecodeChecked(key, data, v); err != nil {
			return
		}
		enc, err := bus.EncodeRecord(v)
		if err != nil {
			t.Fatalf("%s %q: a possible record does not encode: %v", b.Name, key, err)
		}
		if err := bus.DecodeChecked(key, enc, b.Record()); err != nil {
			t.Fatalf("%s %q: written back it is poisoned: %v\n%s", b.Name, key, err, enc)
		}
	})
}
