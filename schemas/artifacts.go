package schemas

import (
	"encoding/hex"
	"encoding/json"
	"strings"
)

// Artifact is a file a driver or an executor needs, shipped through the
// bus (Spark's --jars/--files): the client uploads it into the object store
// bucket stoker-artifacts under its SHA-256 digest, the launch command
// carries the digest, and the agent fetches it into a per-digest cache in
// its work dir, verifies it, and links it into the child's directory as
// Name (mode 0755). When argv[0] equals the Name of a file artifact it is
// resolved to that path. An Archive (a .tar.gz) is unpacked into the
// child's directory instead.
type Artifact struct {
	// Name is the file's base name in the child's directory.
	Name string `json:"name"`
	// Digest is the lowercase hex SHA-256 of the content: the object's
	// name in stoker-artifacts.
	Digest string `json:"digest"`
	// Size in bytes, for display and the agent's check.
	Size int64 `json:"size"`
	// Archive: a gzip-compressed tar unpacked into the child's directory.
	Archive bool `json:"archive,omitempty"`
}

// MaxArtifacts bounds the artifacts of one command.
const MaxArtifacts = 32

// EnvArtifacts gives a child the artifacts it was launched with (JSON list
// of Artifact), so a driver's SDK can hand them on to its executors.
const EnvArtifacts = "STOKER_ARTIFACTS"

// ValidDigest checks an artifact digest: 64 lowercase hex characters.
func ValidDigest(d string) error {
	if len(d) != 64 || strings.ToLower(d) != d {
		return invalid("artifact digest %q is not 64 lowercase hex characters (SHA-256)", d)
	}
	if _, err := hex.DecodeString(d); err != nil {
		return invalid("artifact digest %q is not hex", d)
	}
	return nil
}

// ValidArtifacts checks a command's artifacts: valid digests, base names
// that stay inside the child's directory, no name twice.
func ValidArtifacts(what string, arts []Artifact) error {
	if len(arts) > MaxArtifacts {
		return invalid("%s has %d artifacts, at most %d", what, len(arts), MaxArtifacts)
	}
	seen := map[string]bool{}
	for _, a := range arts {
		if err := ValidDigest(a.Digest); err != nil {
			return err
		}
		if a.Size < 0 {
			return invalid("artifact %s has a negative size", a.Name)
		}
		if a.Archive {
			continue
		}
		if err := ValidArtifactName(a.Name); err != nil {
			return err
		}
		if seen[a.Name] {
			return invalid("%s names artifact %q twice", what, a.Name)
		}
		seen[a.Name] = true
	}
	return nil
}

// ValidArtifactName checks a file artifact's name: one path element.
func ValidArtifactName(n string) error {
	if n == "" || n == "." || n == ".." || strings.ContainsAny(n, "/\\\x00") || len(n) > MaxNameLen {
		return invalid("artifact name %q must be a file name (no path, at most %d bytes)", n, MaxNameLen)
	}
	return nil
}

// EncodeArtifacts is the value of EnvArtifacts.
func EncodeArtifacts(arts []Artifact) string {
	b, _ := json.Marshal(arts)
	return string(b)
}

// DecodeArtifacts reads EnvArtifacts' value; "" is none.
func DecodeArtifacts(s string) ([]Artifact, error) {
	if s == "" {
		return nil, nil
	}
	var arts []Artifact
	if err := json.Unmarshal([]byte(s), &arts); err != nil {
		return nil, invalid("%s: %v", EnvArtifacts, err)
	}
	return arts, ValidArtifacts(EnvArtifacts, arts)
}
