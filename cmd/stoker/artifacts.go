package main

// Artifacts: --file/--archive on submit and run upload files into the
// stoker-artifacts object store; `stoker artifacts ls|rm` manage it.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/schemas"
)

// defaultMaxFileMB is --max-file-size's default.
const defaultMaxFileMB = 1024

// uploadFlags are the flags of a command that ships files.
type uploadFlags struct {
	files, archives listFlag
	maxMB           *sizeFlag
}

func bindUpload(fs *flag.FlagSet) *uploadFlags {
	u := &uploadFlags{}
	fs.Var(&u.files, "file", "upload `PATH` into the cluster's artifact store; each process gets it in its directory under its base name, executable, and a CMD naming that base name runs it (repeatable; as spark-submit --files/--jars)")
	fs.Var(&u.archives, "archive", "upload a .tar.gz `PATH`; it is unpacked into each process's directory (repeatable; as spark-submit --archives)")
	u.maxMB = sizeVar(fs, "max-file-size", defaultMaxFileMB, "refuse to upload a file larger than this, e.g. 200m, 2g")
	return u
}

// check validates the flags before anything connects.
func (u *uploadFlags) check() error {
	if *u.maxMB <= 0 {
		return usagef("--max-file-size must be > 0")
	}
	names := map[string]string{}
	for _, p := range u.files {
		n := filepath.Base(p)
		if prev, ok := names[n]; ok {
			return usagef("--file %s and --file %s have the same base name %q", prev, p, n)
		}
		names[n] = p
	}
	for _, p := range append(append([]string(nil), u.files...), u.archives...) {
		fi, err := os.Stat(p)
		if err != nil {
			return usagef("--file/--archive: %v", err)
		}
		if !fi.Mode().IsRegular() {
			return usagef("--file/--archive %s is not a regular file", p)
		}
		if limit := int64(*u.maxMB) << 20; fi.Size() > limit {
			return usagef("%s is %s, larger than --max-file-size %s; raise --max-file-size or ship less",
				p, humanBytes(fi.Size()), humanBytes(limit))
		}
	}
	return nil
}

func (u *uploadFlags) any() bool { return len(u.files)+len(u.archives) > 0 }

// upload stores every file (once per content) and returns the artifacts.
func (u *uploadFlags) upload(ctx context.Context, e *env, nc *nats.Conn) ([]schemas.Artifact, error) {
	if !u.any() {
		return nil, nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	obs, err := bus.Artifacts(ctx, js)
	if err != nil {
		return nil, err
	}
	var arts []schemas.Artifact
	do := func(path string, archive bool) error {
		a, stored, err := uploadOne(ctx, e, js, obs, path, int64(*u.maxMB)<<20)
		if err != nil {
			return err
		}
		a.Archive = archive
		what := "uploaded"
		if !stored {
			what = "already stored"
		}
		fmt.Fprintf(e.stderr, "artifact %s %s (%s, sha256 %s)\n", a.Name, what, humanBytes(a.Size), a.Digest)
		arts = append(arts, a)
		return nil
	}
	for _, p := range u.files {
		if err := do(p, false); err != nil {
			return nil, err
		}
	}
	for _, p := range u.archives {
		if err := do(p, true); err != nil {
			return nil, err
		}
	}
	// Registration's artifact collector spares objects younger than its
	// grace period until a record names them: renew the earlier ones, so
	// a long upload of the later ones cannot age them past it before the
	// submission's record exists.
	for _, a := range arts[:len(arts)-1] {
		ok, err := bus.TouchArtifact(ctx, js, a.Digest)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("artifact %s (%s) was removed while the others were uploaded; submit again", a.Name, a.Digest)
		}
	}
	return arts, nil
}

// uploadOne hashes path, then uploads it unless the store has that digest.
func uploadOne(ctx context.Context, e *env, js jetstream.JetStream, obs jetstream.ObjectStore, path string, limit int64) (schemas.Artifact, bool, error) {
	digest, size, err := bus.FileDigest(path)
	if err != nil {
		return schemas.Artifact{}, false, err
	}
	if size > limit {
		return schemas.Artifact{}, false, fmt.Errorf("%s is %s, larger than --max-file-size %s", path, humanBytes(size), humanBytes(limit))
	}
	a := schemas.Artifact{Name: filepath.Base(path), Digest: digest, Size: size}
	f, err := os.Open(path)
	if err != nil {
		return a, false, err
	}
	defer f.Close()
	var r io.Reader = f
	if p := newProgress(e.stderr, a.Name, size); p != nil {
		r = io.TeeReader(f, p)
		defer p.done()
	}
	stored, err := bus.PutArtifact(ctx, js, obs, digest, a.Name, r)
	return a, stored, err
}

// progress prints an upload's progress on a terminal, at most 5 times a second.
type progress struct {
	w     io.Writer
	name  string
	total int64
	n     int64
	last  time.Time
	shown bool
}

// progressMin is the size below which no progress is shown.
const progressMin = 4 << 20

func newProgress(w io.Writer, name string, total int64) *progress {
	f, ok := w.(*os.File)
	if !ok || total < progressMin {
		return nil
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return &progress{w: w, name: name, total: total}
}

func (p *progress) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	if time.Since(p.last) >= 200*time.Millisecond || p.n == p.total {
		p.last = time.Now()
		p.shown = true
		fmt.Fprintf(p.w, "\ruploading %s: %s of %s (%d%%)", p.name, humanBytes(p.n), humanBytes(p.total), p.n*100/max(p.total, 1))
	}
	return len(b), nil
}

func (p *progress) done() {
	if p.shown {
		fmt.Fprintln(p.w)
	}
}

// humanBytes is 512B, 3.2KiB, 18.0MiB, 1.5GiB.
func humanBytes(n int64) string {
	const k = 1024
	switch {
	case n < k:
		return fmt.Sprintf("%dB", n)
	case n < k*k:
		return fmt.Sprintf("%.1fKiB", float64(n)/k)
	case n < k*k*k:
		return fmt.Sprintf("%.1fMiB", float64(n)/(k*k))
	}
	return fmt.Sprintf("%.1fGiB", float64(n)/(k*k*k))
}

// artifactUsers maps each digest that a live app or driver refers to, to
// those ids.
func artifactUsers(ctx context.Context, nc *nats.Conn) (map[string][]string, error) {
	c := newClient(nc)
	users := map[string][]string{}
	drivers, err := c.Drivers(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range drivers {
		if d.State.Terminal() {
			continue
		}
		for _, a := range d.Artifacts {
			users[a.Digest] = append(users[a.Digest], d.ID)
		}
	}
	apps, err := c.Apps(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range apps {
		if a.State.Terminal() {
			continue
		}
		for _, x := range a.Artifacts {
			users[x.Digest] = append(users[x.Digest], a.ID)
		}
	}
	return users, nil
}

func init() {
	register(&command{
		name: "artifacts", group: "Clients", summary: "list and remove files shipped with --file/--archive (admin)", interspersed: true,
		usage: "ls [--json] | rm DIGEST...",
		details: `Artifacts live in the JetStream object store stoker-artifacts, named by the
SHA-256 of their content (also: nats object ls stoker-artifacts). ls shows
each with its size, the file name it was first uploaded as, and the live
apps and drivers that use it; rm refuses one that a live app or driver
still uses (kill it first).`,
		examples: []string{
			"stoker artifacts ls",
			"stoker artifacts rm 3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b",
		},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url, asJSON := natsFlag(fs), jsonFlag(fs)
			return func(ctx context.Context, args []string) error {
				if len(args) == 0 {
					return usagef("artifacts: want ls or rm DIGEST...")
				}
				t := url.target(auth.RoleAdmin)
				switch args[0] {
				case "ls":
					if len(args) > 1 {
						return usagef("artifacts ls takes no arguments")
					}
					return withConn(t, func(nc *nats.Conn) error { return artifactsLs(ctx, e, nc, *asJSON) })
				case "rm":
					if len(args) < 2 {
						return usagef("artifacts rm takes one or more digests")
					}
					for _, d := range args[1:] {
						if err := schemas.ValidDigest(d); err != nil {
							return usagef("%v", err)
						}
					}
					return withConn(t, func(nc *nats.Conn) error { return artifactsRm(ctx, e, nc, args[1:]) })
				}
				return usagef("artifacts: unknown subcommand %q (ls, rm)", args[0])
			}
		},
	})
}

// ArtifactView is one line of `stoker artifacts ls --json`.
type artifactView struct {
	Digest   string    `json:"digest"`
	Size     int64     `json:"size"`
	Name     string    `json:"name"`
	Modified time.Time `json:"modified"`
	UsedBy   []string  `json:"used_by,omitempty"`
}

func artifactsLs(ctx context.Context, e *env, nc *nats.Conn, asJSON bool) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	obs, err := bus.Artifacts(ctx, js)
	if err != nil {
		return err
	}
	infos, err := obs.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return err
	}
	users, err := artifactUsers(ctx, nc)
	if err != nil {
		return err
	}
	views := make([]artifactView, 0, len(infos))
	for _, i := range infos {
		views = append(views, artifactView{Digest: i.Name, Size: int64(i.Size), Name: i.Description, Modified: i.ModTime, UsedBy: users[i.Name]})
	}
	sort.Slice(views, func(a, b int) bool { return views[a].Modified.Before(views[b].Modified) })
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(views)
	}
	tw := newTable(e.stdout)
	fmt.Fprintln(tw, "DIGEST\tSIZE\tNAME\tUPLOADED\tUSED BY")
	for _, v := range views {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.Digest, humanBytes(v.Size), v.Name, ago(v.Modified), orDash(strings.Join(v.UsedBy, ",")))
	}
	return tw.Flush()
}

func artifactsRm(ctx context.Context, e *env, nc *nats.Conn, digests []string) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	obs, err := bus.Artifacts(ctx, js)
	if err != nil {
		return err
	}
	users, err := artifactUsers(ctx, nc)
	if err != nil {
		return err
	}
	var failed []string
	for _, d := range digests {
		if u := users[d]; len(u) > 0 {
			slices.Sort(u)
			fmt.Fprintf(e.stderr, "%s is used by %s: not removed (kill them first)\n", d, strings.Join(u, ", "))
			failed = append(failed, d)
			continue
		}
		if err := obs.Delete(ctx, d); err != nil {
			if errors.Is(err, jetstream.ErrObjectNotFound) {
				fmt.Fprintf(e.stderr, "%s: no such artifact\n", d)
			} else {
				fmt.Fprintf(e.stderr, "%s: %v\n", d, err)
			}
			failed = append(failed, d)
			continue
		}
		fmt.Fprintln(e.stdout, d)
	}
	if len(failed) > 0 {
		return &exitError{code: exitFailure}
	}
	return nil
}
