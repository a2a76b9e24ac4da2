package main

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
)

// FuzzCommandArgs: any argument list given to any command is split into
// flags and positional arguments (sizes like 4g, durations like 5s, lists,
// booleans, "--") without a panic; what comes back as positional is
// some of the given arguments, in their order.
func FuzzCommandArgs(f *testing.F) {
	for _, s := range []string{
		"run\x00--executor-cores\x002\x00--executor-memory\x004g\x00--\x00sleep\x001",
		"submit\x00--driver-memory\x00512m\x00--supervise\x00--\x00x",
		"up\x00--heartbeat-interval\x001s\x00--worker-timeout=5s",
		"logs\x00driver-1\x00--stderr",
		"kv\x00rm\x00apps\x00app-1\x00--revision\x0042",
		"agent\x00--memory\x00-1g\x00--cores\x00x",
		"events\x00--since\x001h\x00--kind\x00app",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, joined string) {
		args := strings.Split(joined, "\x00")
		c := lookup(args[0])
		if c == nil {
			c = commands[len(args[0])%len(commands)]
		}
		args = args[1:]
		e, _, _ := testEnv(nil)
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c.setup(fs, e)
		pos, err := parseArgs(fs, args, c.interspersed)
		if err != nil {
			return
		}
		rest := args
		for _, p := range pos {
			i := slices.Index(rest, p)
			if i < 0 {
				t.Fatalf("%s %q: positional %q is not among the arguments (in order): %q", c.name, args, p, pos)
			}
			rest = rest[i+1:]
		}
	})
}
