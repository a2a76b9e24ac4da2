package svc

// One owner per directory: a `stoker up` or `stoker bus` data dir, an
// agent's work dir. The owner holds an exclusive flock on <dir>/LOCK for
// its life and writes who it is into the file; the kernel releases the
// flock when the process dies, however it dies, so a stale lock from a
// killed owner is free and the next owner takes it over.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// LockFile is the lock's name inside the directory it guards.
const LockFile = "LOCK"

// Owner is what a lock file says about its holder.
type Owner struct {
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Command string    `json:"command"`           // "stoker up", "stoker bus", "stoker agent"
	Address string    `json:"address,omitempty"` // the bus URL it serves or uses
	Since   time.Time `json:"since"`
}

func (o Owner) String() string {
	s := fmt.Sprintf("%s (pid %d on host %s", o.Command, o.PID, o.Host)
	if o.Address != "" {
		s += ", " + o.Address
	}
	if !o.Since.IsZero() {
		s += ", since " + o.Since.UTC().Format(time.RFC3339)
	}
	return s + ")"
}

// LockedError is returned when a live process holds the directory.
type LockedError struct {
	Dir   string
	Owner Owner // zero when the file could not be read
}

func (e *LockedError) Error() string {
	who := "another process"
	if e.Owner.PID != 0 {
		who = e.Owner.String()
	}
	return fmt.Sprintf("%s is in use by %s; stop it first, or give this one another directory", e.Dir, who)
}

// DirLock is a held lock; Release gives it up.
type DirLock struct {
	f *os.File
	// Previous is the owner a stale lock file named (a process that died
	// holding it), zero if the file was new or empty.
	Previous Owner
}

// NewOwner describes this process as command serving or using address.
func NewOwner(command, address string) Owner {
	host, _ := os.Hostname()
	return Owner{PID: os.Getpid(), Host: host, Command: command, Address: address, Since: time.Now().UTC()}
}

// LockDir creates dir if needed and takes <dir>/LOCK for o, or returns a
// *LockedError naming the live owner.
func LockDir(dir string, o Owner) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := flock(f); err != nil {
		prev := readOwner(f)
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, &LockedError{Dir: dir, Owner: prev}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	l := &DirLock{f: f, Previous: readOwner(f)}
	b, _ := json.Marshal(o)
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt(append(b, '\n'), 0)
	}
	if err != nil {
		l.Release()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return l, nil
}

// Release gives the directory up (the file stays, emptied: removing it
// would let a process that opened it before the removal lock a file
// nobody else sees). Idempotent.
func (l *DirLock) Release() {
	if l == nil || l.f == nil {
		return
	}
	_ = l.f.Truncate(0)
	_ = l.f.Close() // closing drops the flock
	l.f = nil
}

func readOwner(f *os.File) Owner {
	var o Owner
	b := make([]byte, 4096)
	n, _ := f.ReadAt(b, 0)
	_ = json.Unmarshal([]byte(strings.TrimSpace(string(b[:n]))), &o)
	return o
}
