package schemas

import "testing"

func TestLeaderTerm(t *testing.T) {
	for _, tc := range []struct {
		name  string
		c     *Cluster
		epoch uint64
		want  uint64
	}{
		{"no record: the first term", nil, 5, 1},
		{"the epoch's record", &Cluster{Epoch: 205, Term: 3}, 205, 3},
		{"not claimed yet: the next term", &Cluster{Epoch: 205, Term: 3}, 230, 4},
		{"record newer than the lease read", &Cluster{Epoch: 230, Term: 4}, 205, 4},
		{"record from before terms", &Cluster{Epoch: 205}, 205, 1},
	} {
		if got := LeaderTerm(tc.c, tc.epoch); got != tc.want {
			t.Errorf("%s: LeaderTerm = %d, want %d", tc.name, got, tc.want)
		}
	}
	if (*Cluster)(nil).NextTerm() != 1 || (&Cluster{Term: 7}).NextTerm() != 8 {
		t.Error("NextTerm: want 1 after none, 8 after 7")
	}
}
