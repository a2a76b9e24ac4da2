package main

import (
	"context"
	"encoding/binary"
	"math"
	"testing"
)

func TestCountInside_EstimatesPi(t *testing.T) {
	task := make([]byte, 16)
	const n = 200_000
	binary.BigEndian.PutUint64(task[:8], n)
	binary.BigEndian.PutUint64(task[8:], 42)
	out, err := countInside(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	pi := 4 * float64(binary.BigEndian.Uint64(out)) / n
	if math.Abs(pi-math.Pi) > 0.05 {
		t.Errorf("estimate %f is far from pi", pi)
	}
}

func TestCountInside_RejectsMalformedTask(t *testing.T) {
	if _, err := countInside(context.Background(), []byte{1, 2, 3}); err == nil {
		t.Fatal("want an error for a 3-byte task")
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr bool
		exec    bool
		slices  int
	}{
		{"defaults", nil, nil, false, false, 10},
		{"slices", nil, []string{"--slices", "4"}, false, false, 4},
		{"executor flag", nil, []string{"--executor"}, false, true, 10},
		{"executor env", map[string]string{"STOKER_APP_ID": "app-20260101000000-abcdef", "STOKER_EXECUTOR_ID": "0"}, nil, false, true, 10},
		{"zero slices", nil, []string{"--slices", "0"}, true, false, 0},
		{"stray arg", nil, []string{"x"}, true, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("STOKER_APP_ID", tt.env["STOKER_APP_ID"])
			t.Setenv("STOKER_EXECUTOR_ID", tt.env["STOKER_EXECUTOR_ID"])
			o, err := parse(tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (o.executor != tt.exec || o.slices != tt.slices) {
				t.Errorf("executor, slices = %v, %d; want %v, %d", o.executor, o.slices, tt.exec, tt.slices)
			}
		})
	}
}

func TestAllocationTarget(t *testing.T) {
	tests := []struct {
		outstanding   int64
		tpe, min, max int
		want          int
	}{
		{0, 1, 0, 8, 0},
		{0, 1, 2, 8, 2},   // never below min
		{5, 1, 0, 8, 5},   // one per slice
		{20, 1, 0, 8, 8},  // never above max
		{5, 2, 0, 8, 3},   // rounded up
		{4, 2, 0, 8, 2},   // exact
		{1, 4, 1, 8, 1},   // a partial executor's worth is one
		{100, 3, 1, 6, 6}, // capped
	}
	for _, tt := range tests {
		if got := allocationTarget(tt.outstanding, tt.tpe, tt.min, tt.max); got != tt.want {
			t.Errorf("allocationTarget(%d, %d, %d, %d) = %d, want %d", tt.outstanding, tt.tpe, tt.min, tt.max, got, tt.want)
		}
	}
}

func TestParse_DynamicAllocation(t *testing.T) {
	t.Setenv("STOKER_APP_ID", "")
	t.Setenv("STOKER_EXECUTOR_ID", "")
	o, err := parse([]string{"--dynamic-allocation", "--min-executors", "2", "--max-executors", "6"})
	if err != nil || !o.dynamic || o.initialExecutors != 2 || o.waves != 1 {
		t.Fatalf("parse: %+v %v", o, err)
	}
	if o, err := parse([]string{"--dynamic-allocation"}); err != nil || o.initialExecutors != 1 {
		t.Fatalf("default initial executors: %+v %v", o, err)
	}
	for _, bad := range [][]string{
		{"--dynamic-allocation", "--min-executors", "5", "--max-executors", "2"},
		{"--dynamic-allocation", "--initial-executors", "9", "--max-executors", "2"},
		{"--dynamic-allocation", "--tasks-per-executor", "0"},
		{"--dynamic-allocation", "--executor-idle-timeout", "0s"},
		{"--waves", "0"},
	} {
		if _, err := parse(bad); err == nil {
			t.Errorf("parse(%v): want an error", bad)
		}
	}
}
