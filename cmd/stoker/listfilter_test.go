package main

import (
	"flag"
	"fmt"
	"testing"
)

func TestTrimEnded_TableShowsLiveAndNewestEnded(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	f := bindListFilter(fs)
	items := []string{"live-1", "live-2"}
	for i := 0; i < 13; i++ {
		items = append(items, fmt.Sprintf("ended-%02d", i))
	}
	ended := func(s string) bool { return s[:5] == "ended" }
	got, hidden := trimEnded(f, false, items, ended)
	if hidden != 3 || len(got) != 12 || got[0] != "live-1" || got[2] != "ended-03" || got[11] != "ended-12" {
		t.Fatalf("table: hidden %d, got %v", hidden, got)
	}
	if got, hidden := trimEnded(f, true, items, ended); hidden != 0 || len(got) != len(items) {
		t.Fatalf("--json: hidden %d, got %d", hidden, len(got))
	}
	if err := fs.Parse([]string{"--all"}); err != nil {
		t.Fatal(err)
	}
	if got, hidden := trimEnded(f, false, items, ended); hidden != 0 || len(got) != len(items) {
		t.Fatalf("--all: hidden %d, got %d", hidden, len(got))
	}
	fs2 := flag.NewFlagSet("y", flag.ContinueOnError)
	f2 := bindListFilter(fs2)
	if err := fs2.Parse([]string{"--state", "running, Waiting"}); err != nil {
		t.Fatal(err)
	}
	if r := f2.request(); fmt.Sprint(r.States) != "[RUNNING WAITING]" {
		t.Fatalf("states %v", r.States)
	}
}
