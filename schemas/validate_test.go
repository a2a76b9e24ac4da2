package schemas

import (
	"errors"
	"strings"
	"testing"
)

func TestParseMemoryMB(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  string
	}{
		{"512m", 512, ""}, {"512M", 512, ""}, {"4g", 4096, ""}, {"4G", 4096, ""}, {"1.5g", 1536, ""},
		{"2048", 2048, ""}, {"1024k", 1, ""}, {"1t", 1 << 20, ""}, {"4gb", 4096, ""}, {" 8g ", 8192, ""},
		{"", 0, "empty"}, {"lots", 0, "not a number"}, {"12x", 0, "not a number"}, {"0", 0, "at least 1 MB"},
		{"-1g", 0, "at least 1 MB"}, {"1k", 0, "at least 1 MB"}, {"NaNg", 0, "not a number"}, {"99999t", 0, "larger"},
	} {
		got, err := ParseMemoryMB(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseMemoryMB(%q) = %d, %v; want error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseMemoryMB(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestValidate_SubmitDriver(t *testing.T) {
	ok := SubmitDriver{Command: []string{"true"}, Cores: 1, MemoryMB: 512}
	for _, tc := range []struct {
		name string
		mod  func(*SubmitDriver)
		err  string
	}{
		{"ok", func(*SubmitDriver) {}, ""},
		{"zero cores", func(s *SubmitDriver) { s.Cores = 0 }, "cores must be > 0"},
		{"negative cores", func(s *SubmitDriver) { s.Cores = -2 }, "cores must be > 0"},
		{"zero memory", func(s *SubmitDriver) { s.MemoryMB = 0 }, "memory must be > 0"},
		{"empty command", func(s *SubmitDriver) { s.Command = nil }, "command is empty"},
		{"blank command", func(s *SubmitDriver) { s.Command = []string{"  "} }, "command is empty"},
		{"bad env", func(s *SubmitDriver) { s.Env = []string{"NOEQUALS"} }, "KEY=VALUE"},
		{"huge cores", func(s *SubmitDriver) { s.Cores = MaxCores + 1 }, "cores must be <="},
		{"long name", func(s *SubmitDriver) { s.Name = strings.Repeat("x", MaxNameLen+1) }, "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.mod(&s)
			err := s.Validate()
			if tc.err == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want error containing %q", err, tc.err)
			}
		})
	}
}

func TestValidate_IDs(t *testing.T) {
	for _, id := range []string{"w1", "worker-1", "a_b", "A9"} {
		if err := ValidID("worker", id); err != nil {
			t.Errorf("ValidID(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", "a.b", "a b", "-a", "a*", "a>", strings.Repeat("a", MaxIDLen+1)} {
		if err := ValidID("worker", id); err == nil {
			t.Errorf("ValidID(%q) accepted", id)
		}
	}
	if err := ValidAppID("driver-x"); err == nil {
		t.Error("ValidAppID accepted a driver id")
	}
	app, n, err := ParseExecutorKey(ExecutorKey("app-20260101000000-abcdef", 7))
	if err != nil || app != "app-20260101000000-abcdef" || n != 7 {
		t.Errorf("executor key round trip: %q %d %v", app, n, err)
	}
	for _, k := range []string{"app-x", "app-x.-1", "app-x.y", "driver-x.1"} {
		if _, _, err := ParseExecutorKey(k); err == nil {
			t.Errorf("ParseExecutorKey(%q) accepted", k)
		}
	}
	if got := SanitizeID("my.host name!"); got != "my-host-name" {
		t.Errorf("SanitizeID: %q", got)
	}
}

func TestValidate_RegisterAppAndStateChange(t *testing.T) {
	ra := RegisterApp{Name: "a", Executor: ExecutorSpec{Command: []string{"x"}, Cores: 2, MemoryMB: 64}, MaxCores: 1}
	if err := ra.Validate(); err == nil || !strings.Contains(err.Error(), "less than the cores of one executor") {
		t.Errorf("max cores below one executor: %v", err)
	}
	ra.MaxCores = -1
	if err := ra.Validate(); err == nil {
		t.Error("negative max cores accepted")
	}
	sc := StateChange{WorkerID: "w", AppID: "app-1", State: string(ExecutorRunning)}
	if err := sc.Validate(); err != nil {
		t.Errorf("running executor report: %v", err)
	}
	sc.State = string(ExecutorLost)
	if err := sc.Validate(); err == nil {
		t.Error("an agent cannot report LOST")
	}
	sc = StateChange{WorkerID: "w", AppID: "app-1", DriverID: "driver-1", State: "RUNNING"}
	if err := sc.Validate(); err == nil {
		t.Error("report naming both an app and a driver accepted")
	}
}

func TestStates_HoldsAndTerminal(t *testing.T) {
	for s, holds := range map[ExecutorState]bool{ExecutorLaunching: true, ExecutorRunning: true, ExecutorExited: false, ExecutorLost: false} {
		if s.Holds() != holds || s.Terminal() == holds {
			t.Errorf("executor %s: holds %v terminal %v", s, s.Holds(), s.Terminal())
		}
	}
	for s, holds := range map[DriverState]bool{DriverRunning: true, DriverRelaunching: true, DriverSubmitted: false, DriverFinished: false} {
		if s.Holds() != holds {
			t.Errorf("driver %s: holds %v", s, s.Holds())
		}
	}
}
