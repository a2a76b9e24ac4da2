package agent

// Artifacts: files a launch command names by SHA-256 digest, fetched from
// the bus's object store into a per-digest cache in the work dir
// (<work>/artifacts/<digest>/data), verified at every use (a corrupted
// cached file is fetched again), and linked into the child's directory
// under their name with mode 0755; a .tar.gz archive is unpacked there.

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// artifactsDir is the cache's directory under the work dir. No driver or
// app id can be "artifacts", so it never meets a child's directory.
const artifactsDir = "artifacts"

// artifactCache fetches artifacts at most once at a time per digest.
type artifactCache struct {
	dir string
	js  jetstream.JetStream

	mu    sync.Mutex
	locks map[string]*sync.Mutex
	// fetches counts objects fetched from the bus; refetches those fetched
	// again because the cached copy did not match its digest.
	fetches, refetches int
}

func newArtifactCache(workDir string, js jetstream.JetStream) *artifactCache {
	return &artifactCache{dir: filepath.Join(workDir, artifactsDir), js: js, locks: map[string]*sync.Mutex{}}
}

func (c *artifactCache) lock(digest string) func() {
	c.mu.Lock()
	l := c.locks[digest]
	if l == nil {
		l = &sync.Mutex{}
		c.locks[digest] = l
	}
	c.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Stats is how many artifacts were fetched, and how many of those because
// the cached copy was corrupted.
func (c *artifactCache) Stats() (fetches, refetches int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fetches, c.refetches
}

// path is where digest is cached.
func (c *artifactCache) path(digest string) string { return filepath.Join(c.dir, digest, "data") }

// ensure returns the path of a verified cached copy of digest, fetching it
// when it is missing or its content does not hash to digest.
func (c *artifactCache) ensure(ctx context.Context, digest string) (path string, refetched bool, err error) {
	if err := schemas.ValidDigest(digest); err != nil {
		return "", false, err
	}
	defer c.lock(digest)()
	path = c.path(digest)
	had := false
	if got, _, err := bus.FileDigest(path); err == nil {
		if got == digest {
			return path, false, nil
		}
		had = true
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("read cached artifact %s: %w", digest, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", false, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "fetch-*")
	if err != nil {
		return "", false, err
	}
	defer os.Remove(tmp.Name())
	if _, err := bus.FetchArtifact(ctx, c.js, digest, tmp); err != nil {
		tmp.Close()
		return "", false, fmt.Errorf("fetch artifact: %w", err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", false, err
	}
	if err := tmp.Close(); err != nil {
		return "", false, err
	}
	// A new inode: links to the corrupted one (in old children's
	// directories) keep what they had.
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", false, err
	}
	c.mu.Lock()
	c.fetches++
	if had {
		c.refetches++
	}
	c.mu.Unlock()
	return path, had, nil
}

// prepareArtifacts makes arts present in dir and returns argv with argv[0]
// resolved to a file artifact of that name.
func (s *Service) prepareArtifacts(ctx context.Context, arts []schemas.Artifact, dir string, argv []string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create work dir: %w", err)
	}
	out := append([]string(nil), argv...)
	for _, a := range arts {
		p, refetched, err := s.artifacts.ensure(ctx, a.Digest)
		if err != nil {
			return nil, err
		}
		if refetched {
			s.log.Warn().Str("digest", a.Digest).Str("artifact", a.Name).
				Msg("cached artifact did not match its digest; fetched it again")
		}
		if a.Archive {
			if err := untarGz(p, dir); err != nil {
				return nil, fmt.Errorf("unpack %s: %w", a.Name, err)
			}
			continue
		}
		dst := filepath.Join(dir, a.Name)
		if err := linkOrCopy(p, dst); err != nil {
			return nil, fmt.Errorf("place artifact %s: %w", a.Name, err)
		}
		if len(out) > 0 && out[0] == a.Name {
			out[0] = dst
		}
	}
	return out, nil
}

// linkOrCopy puts src at dst (replacing it), hard-linked when both are on
// one file system, else copied; mode 0755 either way.
func linkOrCopy(src, dst string) error {
	_ = os.Remove(dst)
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// maxUnpacked bounds what one archive may write (a gzip bomb stops there).
const maxUnpacked = 8 << 30

// untarGz unpacks a gzip-compressed tar into dir: regular files and
// directories only, every path kept inside dir.
func untarGz(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(gz)
	var total int64
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, ".."+string(filepath.Separator)) {
			return fmt.Errorf("entry %q leaves the directory", h.Name)
		}
		target := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			_ = os.Remove(target)
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o777|0o600)
			if err != nil {
				return err
			}
			n, err := io.Copy(out, io.LimitReader(tr, maxUnpacked-total+1))
			total += n
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if total > maxUnpacked {
				return fmt.Errorf("archive unpacks to more than %d bytes", int64(maxUnpacked))
			}
		}
		// Links, devices and the like are skipped: nothing outside dir.
	}
}

// ArtifactFetches is how many artifacts this agent fetched from the bus,
// and how many of those replaced a cached copy that did not match its
// digest.
func (s *Service) ArtifactFetches() (fetches, refetches int) { return s.artifacts.Stats() }
