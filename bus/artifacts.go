package bus

// Artifacts: files shipped through the bus in the object store bucket
// stoker-artifacts, named by the SHA-256 of their content (so a file
// uploaded twice is stored once). Clients with submit rights write it;
// agents read it with direct gets only (no consumer: a consumer's deliver
// subject is not checked against the creator's permissions, SECURITY-NOTES
// trap 9), so FetchArtifact reads the object's chunks one by one.

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/schemas"
)

const (
	// BucketArtifacts is the object store of shipped files.
	BucketArtifacts = "stoker-artifacts"
	// StreamArtifacts is the stream behind it.
	StreamArtifacts = "OBJ_" + BucketArtifacts
)

// ErrArtifactNotFound: no object with that digest in stoker-artifacts.
var ErrArtifactNotFound = errors.New("artifact not found")

// ErrArtifactDigest: the content fetched does not have the digest asked for.
var ErrArtifactDigest = errors.New("artifact content does not match its digest")

// FileDigest is the lowercase hex SHA-256 of the file at path and its size.
func FileDigest(path string) (digest string, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Artifacts opens the object store; ErrNoStore if it is not provisioned.
func Artifacts(ctx context.Context, js jetstream.JetStream) (jetstream.ObjectStore, error) {
	obs, err := js.ObjectStore(ctx, BucketArtifacts)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("bus: %s: %w (run `stoker init` against an external NATS)", BucketArtifacts, ErrNoStore)
	}
	return obs, err
}

// PutArtifact stores the content of r (which must have the given digest)
// under that digest, unless an object of that name exists already: then it
// reads nothing, renews the object's time (TouchArtifact, so the
// collector's grace period starts again) and reports stored false. The original file name goes in
// the object's description, for `stoker artifacts ls`.
func PutArtifact(ctx context.Context, js jetstream.JetStream, obs jetstream.ObjectStore, digest, name string, r io.Reader) (stored bool, err error) {
	if err := schemas.ValidDigest(digest); err != nil {
		return false, err
	}
	if ok, err := TouchArtifact(ctx, js, digest); err != nil {
		return false, fmt.Errorf("bus: artifact %s: %w", digest, err)
	} else if ok {
		return false, nil
	}
	h := sha256.New()
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: digest, Description: name}, io.TeeReader(r, h)); err != nil {
		return false, fmt.Errorf("bus: upload artifact %s: %w", name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		// The file changed between hashing and uploading: do not leave a
		// wrongly named object behind.
		_ = obs.Delete(context.WithoutCancel(ctx), digest)
		return false, fmt.Errorf("bus: %s changed while it was uploaded (digest %s, then %s)", name, digest, got)
	}
	return true, nil
}

// FetchArtifact writes the object named digest to w, reading its metadata
// and chunks by direct get (stream info and $JS.API.DIRECT.GET only), and
// checks the content's SHA-256: ErrArtifactDigest if it differs (w has then
// received the bad bytes; write to a temporary file), ErrArtifactNotFound
// if there is no such object.
func FetchArtifact(ctx context.Context, js jetstream.JetStream, digest string, w io.Writer) (int64, error) {
	if err := schemas.ValidDigest(digest); err != nil {
		return 0, err
	}
	s, err := js.Stream(ctx, StreamArtifacts)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return 0, fmt.Errorf("bus: %s: %w", BucketArtifacts, ErrNoStore)
		}
		return 0, fmt.Errorf("bus: %s: %w", BucketArtifacts, err)
	}
	metaSubj := "$O." + BucketArtifacts + ".M." + base64.URLEncoding.EncodeToString([]byte(digest))
	m, err := s.GetLastMsgForSubject(ctx, metaSubj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, fmt.Errorf("bus: artifact %s: %w", digest, ErrArtifactNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("bus: artifact %s: %w", digest, err)
	}
	var info jetstream.ObjectInfo
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return 0, fmt.Errorf("bus: artifact %s: bad metadata: %w", digest, err)
	}
	if info.Deleted || info.NUID == "" {
		return 0, fmt.Errorf("bus: artifact %s: %w", digest, ErrArtifactNotFound)
	}
	chunkSubj := "$O." + BucketArtifacts + ".C." + info.NUID
	h := sha256.New()
	out := io.MultiWriter(h, w)
	var n int64
	seq := uint64(1)
	for i := uint32(0); i < info.Chunks; i++ {
		c, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(chunkSubj))
		if err != nil {
			return n, fmt.Errorf("bus: artifact %s: chunk %d of %d: %w", digest, i+1, info.Chunks, err)
		}
		k, err := out.Write(c.Data)
		n += int64(k)
		if err != nil {
			return n, err
		}
		seq = c.Sequence + 1
	}
	if n != int64(info.Size) {
		return n, fmt.Errorf("bus: artifact %s: got %d bytes, its metadata says %d: %w", digest, n, info.Size, ErrArtifactDigest)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		return n, fmt.Errorf("bus: artifact %s: content hashes to %s: %w", digest, got, ErrArtifactDigest)
	}
	return n, nil
}

// ArtifactObject is one live object of stoker-artifacts as the garbage
// collector judges it: its digest, the stream sequence of its metadata
// message (what a conditional delete is guarded by) and when that message
// was written (its upload, or the last TouchArtifact).
type ArtifactObject struct {
	Digest  string
	MetaSeq uint64
	ModTime time.Time
}

// artifactMetaPrefix is the subject prefix of the objects' metadata.
const artifactMetaPrefix = "$O." + BucketArtifacts + ".M."

// ArtifactMeta is the subject of every object's metadata message in
// stoker-artifacts (the collector publishes delete markers there).
const ArtifactMeta = artifactMetaPrefix + ">"

func artifactMetaSubject(digest string) string {
	return artifactMetaPrefix + base64.URLEncoding.EncodeToString([]byte(digest))
}

// isWrongLastSeq: a publish guarded by the subject's last sequence lost
// (10071, or 10164 on a replicated stream).
func isWrongLastSeq(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && (ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// ErrArtifactChanged: the object was touched, re-uploaded or deleted since
// it was judged; nothing was deleted.
var ErrArtifactChanged = errors.New("artifact changed since it was read")

// artifactMeta reads digest's metadata message (nil info if there is none).
func artifactMeta(ctx context.Context, s jetstream.Stream, digest string) (*jetstream.ObjectInfo, *jetstream.RawStreamMsg, error) {
	m, err := s.GetLastMsgForSubject(ctx, artifactMetaSubject(digest))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var info jetstream.ObjectInfo
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return nil, m, fmt.Errorf("bus: artifact %s: bad metadata: %w", digest, err)
	}
	return &info, m, nil
}

// ListArtifacts is every live (not deleted) object of stoker-artifacts, by
// stream info and direct gets only (no consumer). Names that are not
// digests are skipped: the collector never judges them.
func ListArtifacts(ctx context.Context, js jetstream.JetStream) ([]ArtifactObject, error) {
	s, err := js.Stream(ctx, StreamArtifacts)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("bus: %s: %w", BucketArtifacts, ErrNoStore)
		}
		return nil, err
	}
	si, err := s.Info(ctx, jetstream.WithSubjectFilter(ArtifactMeta))
	if err != nil {
		return nil, err
	}
	var out []ArtifactObject
	for subj := range si.State.Subjects {
		name, err := base64.URLEncoding.DecodeString(strings.TrimPrefix(subj, artifactMetaPrefix))
		if err != nil || schemas.ValidDigest(string(name)) != nil {
			continue
		}
		info, m, err := artifactMeta(ctx, s, string(name))
		if err != nil {
			return nil, err
		}
		if info == nil || info.Deleted || info.NUID == "" {
			continue
		}
		out = append(out, ArtifactObject{Digest: string(name), MetaSeq: m.Sequence, ModTime: m.Time})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

// DeleteArtifactIf deletes o only if its metadata is still the message it
// was judged at (o.MetaSeq): the delete marker is published guarded by the
// subject's last sequence, then the object's chunks are purged. A touch, a
// re-upload or another deletion in between makes it ErrArtifactChanged and
// deletes nothing, so two collectors delete an object once and never one
// a submission has just claimed with TouchArtifact.
func DeleteArtifactIf(ctx context.Context, js jetstream.JetStream, o ArtifactObject) error {
	s, err := js.Stream(ctx, StreamArtifacts)
	if err != nil {
		return err
	}
	info, m, err := artifactMeta(ctx, s, o.Digest)
	if err != nil {
		return err
	}
	if info == nil || m.Sequence != o.MetaSeq || info.Deleted || info.NUID == "" {
		return ErrArtifactChanged
	}
	nuid := info.NUID
	info.Deleted = true
	info.Size, info.Chunks, info.Digest = 0, 0, ""
	info.ModTime = time.Time{}
	data, err := json.Marshal(info)
	if err != nil {
		return err
	}
	mm := nats.NewMsg(artifactMetaSubject(o.Digest))
	mm.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	mm.Data = data
	if _, err := js.PublishMsg(ctx, mm, jetstream.WithExpectLastSequencePerSubject(o.MetaSeq)); err != nil {
		if isWrongLastSeq(err) {
			return ErrArtifactChanged
		}
		return fmt.Errorf("bus: delete artifact %s: %w", o.Digest, err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject("$O."+BucketArtifacts+".C."+nuid)); err != nil {
		return fmt.Errorf("bus: delete artifact %s: purge its chunks: %w", o.Digest, err)
	}
	return nil
}

// TouchArtifact renews digest's metadata message (the same metadata,
// written again, so its time is now and its sequence new) if the object
// exists, guarded by the sequence it read: a collector that judged the
// older message can no longer delete it, and one that looks next sees it
// young. It reports false if there is no live object (then upload it).
func TouchArtifact(ctx context.Context, js jetstream.JetStream, digest string) (bool, error) {
	if err := schemas.ValidDigest(digest); err != nil {
		return false, err
	}
	s, err := js.Stream(ctx, StreamArtifacts)
	if err != nil {
		return false, err
	}
	for {
		info, m, err := artifactMeta(ctx, s, digest)
		if err != nil {
			return false, err
		}
		if info == nil || info.Deleted || info.NUID == "" {
			return false, nil
		}
		info.ModTime = time.Time{}
		data, err := json.Marshal(info)
		if err != nil {
			return false, err
		}
		mm := nats.NewMsg(artifactMetaSubject(digest))
		mm.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		mm.Data = data
		_, err = js.PublishMsg(ctx, mm, jetstream.WithExpectLastSequencePerSubject(m.Sequence))
		if err == nil {
			return true, nil
		}
		if !isWrongLastSeq(err) {
			return false, fmt.Errorf("bus: touch artifact %s: %w", digest, err)
		}
		// Changed meanwhile (deleted, touched, re-uploaded): read again.
	}
}
