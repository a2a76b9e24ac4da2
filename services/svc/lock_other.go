//go:build !unix

package svc

import (
	"errors"
	"os"
)

var errLocked = errors.New("locked")

// flock is not available: the owner is written, not enforced.
func flock(*os.File) error { return nil }
