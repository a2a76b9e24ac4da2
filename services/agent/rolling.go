package agent

import (
	"bytes"
	"fmt"
	"os"
)

// rollingFile is a child's stdout or stderr rolled by size, Spark's
// RollingFileAppender with spark.executor.logs.rolling.strategy=size: when
// a write would take the file past max bytes, stdout becomes stdout.1
// (stdout.1 becomes stdout.2, ...; the oldest beyond keep is dropped) and a
// new stdout starts. The current output is always in the file of the plain
// name, so `stoker logs` reads it as before. Used by one goroutine
// (exec's copy from the child's pipe).
type rollingFile struct {
	path string
	max  int64
	keep int
	f    *os.File
	size int64
}

// openRolling opens (appending to) path, rolling it at max bytes and
// keeping keep rolled files.
func openRolling(path string, max int64, keep int) (*rollingFile, error) {
	f, err := openLog(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &rollingFile{path: path, max: max, keep: keep, f: f, size: st.Size()}, nil
}

// Write writes p, rolling whenever the current file is full: a file holds
// at most max bytes, cut after the last whole line that fits (a line longer
// than max is cut at max).
func (r *rollingFile) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		room := r.max - r.size
		if int64(len(p)) <= room {
			n, err := r.f.Write(p)
			r.size += int64(n)
			return written + n, err
		}
		cut := int(max(room, 0))
		if i := bytes.LastIndexByte(p[:cut], '\n'); i >= 0 {
			cut = i + 1
		} else if r.size > 0 {
			if err := r.roll(); err != nil {
				return written, err
			}
			continue
		}
		n, err := r.f.Write(p[:cut])
		r.size += int64(n)
		written += n
		if err != nil {
			return written, err
		}
		p = p[cut:]
		if err := r.roll(); err != nil {
			return written, err
		}
	}
	return written, nil
}

// roll shifts the rolled files by one and starts an empty current file.
func (r *rollingFile) roll() error {
	if err := r.f.Close(); err != nil {
		return err
	}
	if r.keep > 0 {
		for i := r.keep - 1; i >= 1; i-- {
			_ = os.Rename(rolledName(r.path, i), rolledName(r.path, i+1))
		}
		if err := os.Rename(r.path, rolledName(r.path, 1)); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	r.f, r.size = f, 0
	return nil
}

func (r *rollingFile) Close() error { return r.f.Close() }

// rolledName is the i-th rolled file of path (1: the newest).
func rolledName(path string, i int) string { return fmt.Sprintf("%s.%d", path, i) }
