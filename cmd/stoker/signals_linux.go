package main

import (
	"os"
	"syscall"
)

// powerSignals start an agent's self-drain besides SIGTERM and Ctrl-C:
// SIGPWR, as Spark's worker decommissions itself on it.
var powerSignals = []os.Signal{syscall.SIGPWR}
