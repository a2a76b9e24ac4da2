//go:build !linux

package main

import "os"

// powerSignals: SIGPWR exists on Linux only.
var powerSignals []os.Signal
