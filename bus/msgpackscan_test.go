package bus

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stoker/stoker/schemas"
)

// TestCheckMsgpackLengths_AcceptsWhatWeEncode walks real encodings of
// every msgpack type the codec writes (ints and floats of each width,
// strings and binaries past each length boundary, maps, nested arrays,
// times as extensions) and refuses lengths the payload cannot hold.
func TestCheckMsgpackLengths_AcceptsWhatWeEncode(t *testing.T) {
	type all struct {
		I8, I16, I32, I64 int64
		U8, U16, U32, U64 uint64
		N8, N16, N32, N64 int64
		F32               float32
		F64               float64
		B                 bool
		Nil               *int
		S0, S31, S255     string
		S65535, S70000    string
		Bin, BigBin       []byte
		Arr               []int
		Arr16             []int
		Map               map[string][]string
		Map16             map[string]int
		T0                time.Time
		T1, T2            time.Time
	}
	m16 := map[string]int{}
	for i := range 20 {
		m16[strings.Repeat("k", i+1)] = i
	}
	v := all{I8: 100, I16: 1000, I32: 100000, I64: 1 << 40, U8: 200, U16: 60000, U32: 1 << 31, U64: 1 << 63,
		N8: -100, N16: -1000, N32: -100000, N64: -1 << 40, F32: 1.5, F64: 2.25, B: true,
		S31: strings.Repeat("a", 31), S255: strings.Repeat("b", 255), S65535: strings.Repeat("c", 65535),
		S70000: strings.Repeat("d", 70000), Bin: []byte{1, 2, 3}, BigBin: bytes.Repeat([]byte{9}, 70000),
		Arr: []int{1, 2, 3}, Arr16: make([]int, 40), Map: map[string][]string{"x": {"y", "z"}}, Map16: m16,
		T1: time.Unix(1700000000, 0), T2: time.Unix(1700000000, 123456789)}
	w := &schemas.Worker{ID: "w1", Cores: 4, MemoryMB: 1024, State: schemas.WorkerAlive,
		Labels: schemas.Labels{"zone": "a"}, Resources: schemas.Resources{"gpu": {"0", "1"}}}
	for name, x := range map[string]any{"every type": v, "a worker": w, "a list": &schemas.WorkerList{Workers: make([]schemas.WorkerView, 300)}} {
		b, err := Encode(x, Msgpack)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := checkMsgpackLengths(b); err != nil {
			t.Fatalf("%s: a valid encoding refused: %v", name, err)
		}
		for cut := 1; cut < len(b) && cut < 300; cut++ {
			if checkMsgpackLengths(b[:len(b)-cut]) == nil {
				t.Fatalf("%s cut by %d bytes: accepted", name, cut)
			}
		}
	}
	for _, bad := range []string{
		"\x92\xa3\xea0\x92\xdd\xdd\xdd\xdd\x8300\x1c", // FuzzDecodeMsgpack's crasher: an array32 of 0xdddddddd
		"\xdd\xff\xff\xff\xff",                        // array32, nothing after
		"\xdf\x00\x01\x00\x00",                        // map32 of 65,536 pairs
		"\xdb\xff\xff\xff\xff",                        // str32 of 4 GB
		"\xc6\x00\x10\x00\x00abc",                     // bin32 of 1 MB, 3 bytes
		"\xc1",                                        // never used
		"",
	} {
		if checkMsgpackLengths([]byte(bad)) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
