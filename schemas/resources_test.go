package schemas

import (
	"slices"
	"strings"
	"testing"
)

func TestParseConstraint(t *testing.T) {
	tests := []struct {
		in   string
		want Constraint
		err  string
	}{
		{"zone=a", Constraint{Key: "zone", Value: "a"}, ""},
		{"zone!=a", Constraint{Key: "zone", Value: "a", Not: true}, ""},
		{"disk = ssd", Constraint{Key: "disk", Value: "ssd"}, ""},
		{"zone", Constraint{}, "want KEY=VALUE or KEY!=VALUE"},
		{"zone==a", Constraint{}, "value must be"},
		{"=a", Constraint{}, "constraint key"},
		{"Zone=a", Constraint{}, "constraint key"},
		{"zone=", Constraint{}, "value must be"},
	}
	for _, tc := range tests {
		got, err := ParseConstraint(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseConstraint(%q) err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseConstraint(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	l := Labels{"zone": "a"}
	for s, want := range map[string]bool{"zone=a": true, "zone=b": false, "zone!=a": false, "zone!=b": true, "disk!=ssd": true, "disk=ssd": false} {
		c, _ := ParseConstraint(s)
		if c.Match(l) != want {
			t.Errorf("%s matches %v = %v, want %v", s, l, !want, want)
		}
	}
}

func TestParseResources(t *testing.T) {
	name, addrs, err := ParseResourceAddrs("gpu=0,1, 2,3")
	if err != nil || name != "gpu" || !slices.Equal(addrs, []string{"0", "1", "2", "3"}) {
		t.Fatalf("ParseResourceAddrs = %q %v %v", name, addrs, err)
	}
	for _, bad := range []string{"gpu", "gpu=", "gpu=0,0", "GPU=0", "gpu=0,,1"} {
		if _, _, err := ParseResourceAddrs(bad); err == nil {
			t.Errorf("ParseResourceAddrs(%q) accepted", bad)
		}
	}
	if n, k, err := ParseResourceAmount("gpu=2"); err != nil || n != "gpu" || k != 2 {
		t.Fatalf("ParseResourceAmount = %q %d %v", n, k, err)
	}
	for _, bad := range []string{"gpu", "gpu=0", "gpu=x", "gpu=-1"} {
		if _, _, err := ParseResourceAmount(bad); err == nil {
			t.Errorf("ParseResourceAmount(%q) accepted", bad)
		}
	}
	if a, err := ParseDiscovery("gpu", []byte(`{"name":"gpu","addresses":["0","1"]}`)); err != nil || !slices.Equal(a, []string{"0", "1"}) {
		t.Fatalf("ParseDiscovery = %v %v", a, err)
	}
	if got := ResourceVars(Resources{"gpu": {"1", "3"}, "fpga-x": {"a"}}); !slices.Equal(got,
		[]string{"STOKER_RESOURCE_FPGA_X=a", "STOKER_RESOURCE_GPU=1,3", "CUDA_VISIBLE_DEVICES=1,3"}) {
		t.Fatalf("ResourceVars = %v", got)
	}
	a := []string{"10", "2", "b", "a", "0"}
	SortAddresses(a)
	if !slices.Equal(a, []string{"0", "2", "10", "a", "b"}) {
		t.Fatalf("SortAddresses = %v", a)
	}
}

func TestRegisterApp_Validate_Constraints(t *testing.T) {
	r := RegisterApp{Name: "x", Executor: ExecutorSpec{Command: []string{"x"}, Cores: 1, MemoryMB: 1}, Constraints: []string{"zone~a"}}
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), `constraint "zone~a"`) {
		t.Fatalf("err = %v", err)
	}
}
