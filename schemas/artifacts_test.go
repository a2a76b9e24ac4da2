package schemas

import (
	"strings"
	"testing"
)

func TestValidArtifacts(t *testing.T) {
	d := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name string
		arts []Artifact
		ok   bool
	}{
		{"one", []Artifact{{Name: "pi", Digest: d}}, true},
		{"archive without name", []Artifact{{Digest: d, Archive: true}}, true},
		{"short digest", []Artifact{{Name: "pi", Digest: "abc"}}, false},
		{"upper digest", []Artifact{{Name: "pi", Digest: strings.ToUpper(d)}}, false},
		{"path", []Artifact{{Name: "../pi", Digest: d}}, false},
		{"dotdot", []Artifact{{Name: "..", Digest: d}}, false},
		{"twice", []Artifact{{Name: "pi", Digest: d}, {Name: "pi", Digest: d}}, false},
	} {
		if err := ValidArtifacts("x", tc.arts); (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	got, err := DecodeArtifacts(EncodeArtifacts([]Artifact{{Name: "pi", Digest: d, Size: 3}}))
	if err != nil || len(got) != 1 || got[0].Name != "pi" || got[0].Size != 3 {
		t.Fatalf("round trip: %v %v", got, err)
	}
}
