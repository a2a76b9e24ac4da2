package schemas

import "testing"

// Issue 9 item 8: "1 cores" no more.
func TestFormatCores(t *testing.T) {
	for n, want := range map[int]string{0: "0 cores", 1: "1 core", 2: "2 cores"} {
		if got := FormatCores(n); got != want {
			t.Errorf("FormatCores(%d) = %q, want %q", n, got, want)
		}
	}
}
