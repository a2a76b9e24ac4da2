package agent

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/stoker/stoker/schemas"
)

// Worker cleanup, Spark's spark.worker.cleanup.enabled / interval /
// appDataTtl: every CleanupInterval the agent removes the work directories
// of applications (and drivers) it no longer runs whose newest file is older
// than AppDataTTL. Only directories named like an app or driver id are
// candidates: the work dir's own files (worker-id, LOCK, credentials) and
// anything else an operator put there are never touched.

// Defaults of the cleanup, as Spark's (interval 30 minutes, TTL 7 days).
const (
	DefaultCleanupInterval = 30 * time.Minute
	DefaultAppDataTTL      = 7 * 24 * time.Hour
)

// cleanupLoop runs cleanupOnce every interval until ctx ends.
func (s *Service) cleanupLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.CleanupInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.cleanupOnce(time.Now())
	}
}

// cleanupOnce removes the expired work directories at now and returns
// their names.
func (s *Service) cleanupOnce(now time.Time) []string {
	entries, err := os.ReadDir(s.cfg.WorkDir)
	if err != nil {
		s.log.Warn().Err(err).Msg("cleanup: read work dir")
		return nil
	}
	inUse := s.dirsInUse()
	var removed []string
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || inUse[name] || !cleanable(name) {
			continue
		}
		dir := filepath.Join(s.cfg.WorkDir, name)
		newest, err := newestModTime(dir)
		if err != nil || now.Sub(newest) <= s.cfg.AppDataTTL {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			s.log.Warn().Err(err).Str("dir", dir).Msg("cleanup: remove")
			continue
		}
		removed = append(removed, name)
		s.log.Info().Str("dir", dir).Dur("app_data_ttl", s.cfg.AppDataTTL).Msg("cleanup: removed the work dir of finished work")
	}
	return removed
}

// cleanable reports whether a work dir entry is an app's or a driver's
// directory (the only ones cleanup may remove).
func cleanable(name string) bool {
	switch {
	case strings.HasPrefix(name, schemas.AppIDPrefix):
		return schemas.ValidAppID(name) == nil
	case strings.HasPrefix(name, schemas.DriverIDPrefix):
		return schemas.ValidDriverID(name) == nil
	}
	return false
}

// dirsInUse is the work dir entries of what the agent runs now.
func (s *Service) dirsInUse() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]bool{}
	for _, r := range s.executors {
		out[r.appID] = true
	}
	for id := range s.drivers {
		out[id] = true
	}
	return out
}

// newestModTime is the latest modification time in the tree at dir.
func newestModTime(dir string) (time.Time, error) {
	var newest time.Time
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.ModTime().After(newest) {
			newest = info.ModTime()
		}
		return nil
	})
	return newest, err
}
