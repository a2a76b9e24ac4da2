package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// FuzzLogsRequest: a logs request as it arrives (either encoding) is
// decoded and validated without a panic; one that passes gets the tail of
// a log file: never more than its limit, exactly the file's last bytes,
// truncated only when the file is longer.
func FuzzLogsRequest(f *testing.F) {
	dir := f.TempDir()
	var files []string
	var contents [][]byte
	for i, n := range []int{0, 10, 5000, 70000} {
		b := bytes.Repeat([]byte{byte('a' + i)}, n)
		for j := range b {
			b[j] += byte(j % 7)
		}
		p := filepath.Join(dir, "log"+string(rune('0'+i)))
		if err := os.WriteFile(p, b, 0o600); err != nil {
			f.Fatal(err)
		}
		files, contents = append(files, p), append(contents, b)
	}
	for _, r := range []schemas.LogsRequest{
		{ID: "app-1.0"}, {ID: "driver-1", Stderr: true, MaxBytes: 100}, {ID: "app-1.0", MaxBytes: -1},
		{ID: "app-1.x", MaxBytes: 1 << 30}, {ID: "", MaxBytes: 5},
	} {
		for _, fm := range []bus.Format{bus.Msgpack, bus.JSON} {
			b, err := bus.Encode(&r, fm)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b, fm == bus.JSON, int64(1<<20), uint8(2))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, asJSON bool, maxPayload int64, which uint8) {
		fm := bus.Msgpack
		if asJSON {
			fm = bus.JSON
		}
		var req schemas.LogsRequest
		if err := bus.Decode(data, fm, &req); err != nil {
			return
		}
		limit := logLimit(req.MaxBytes, maxPayload)
		if limit <= 0 {
			t.Fatalf("logLimit(%d, %d) = %d", req.MaxBytes, maxPayload, limit)
		}
		i := int(which) % len(files)
		got, truncated, err := tail(files[i], limit)
		if err != nil {
			t.Fatal(err)
		}
		want := contents[i]
		if int64(len(want)) > limit {
			want = want[int64(len(want))-limit:]
		}
		if !bytes.Equal(got, want) || truncated != (int64(len(contents[i])) > limit) {
			t.Fatalf("tail(%d bytes, %d) = %d bytes, truncated %v", len(contents[i]), limit, len(got), truncated)
		}
	})
}
