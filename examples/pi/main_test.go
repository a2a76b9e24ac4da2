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
