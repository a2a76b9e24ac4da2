package schemas

import (
	"regexp"
	"testing"
)

// FuzzParseMemoryMB: any text parses or is refused without a panic; what
// parses is within [1 MB, MaxMemoryMB]; a size FormatMemoryMB renders
// exactly (whole gigabytes, or under 1G) parses back to itself.
func FuzzParseMemoryMB(f *testing.F) {
	for _, s := range []string{"512m", "4g", "1.5g", "2048", "1024k", "1t", "0", "-1g", "NaN", "Inf", "1e30g", " 4G ", "b", "64tb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mb, err := ParseMemoryMB(s)
		if err != nil {
			return
		}
		if mb < 1 || mb > MaxMemoryMB {
			t.Fatalf("ParseMemoryMB(%q) = %d, outside [1, %d]", s, mb, int64(MaxMemoryMB))
		}
		if mb < 1024 || mb%1024 == 0 {
			if back, err := ParseMemoryMB(FormatMemoryMB(mb)); err != nil || back != mb {
				t.Fatalf("%q → %d → %q → %d, %v", s, mb, FormatMemoryMB(mb), back, err)
			}
		}
	})
}

// FuzzParseExecutorKey: a key parses only in its one canonical spelling
// (ExecutorKey of what it parsed to), so two keys never name one executor.
func FuzzParseExecutorKey(f *testing.F) {
	for _, s := range []string{"app-1.0", "app-20260101120000-ab12.17", "app-1", "app-1.-1", "app-1.+7", "app-1.007",
		"driver-1.0", "app-1.0.1", ".0", "app-1.99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		app, n, err := ParseExecutorKey(key)
		if err != nil {
			return
		}
		if n < 0 || ValidAppID(app) != nil || ExecutorKey(app, n) != key {
			t.Fatalf("ParseExecutorKey(%q) = %q, %d: not canonical", key, app, n)
		}
		x := &Executor{AppID: app, ID: n, WorkerID: "w1", Cores: 1, MemoryMB: 1, State: ExecutorRunning}
		if err := x.Check(key); err != nil {
			t.Fatalf("a parsed key's record is refused: %v", err)
		}
	})
}

// FuzzValidID: the id check's loop accepts exactly what its regular
// expression does.
func FuzzValidID(f *testing.F) {
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)
	for _, s := range []string{"w1", "app-20260101-ab", "-a", "_a", "a.b", "a b", "*", ">", "", "é", "a\n", "Z_9-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := idChars(s), re.MatchString(s); got != want {
			t.Fatalf("idChars(%q) = %v, the expression says %v", s, got, want)
		}
	})
}
