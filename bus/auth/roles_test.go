package auth

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/stoker/stoker/bus"
)

// matches reports whether a concrete subject is covered by pattern.
func matches(pattern, subject string) bool {
	return server.SubjectMatchesFilter(subject, pattern)
}

func allowed(list, deny []string, subject string) bool {
	for _, d := range deny {
		if matches(d, subject) {
			return false
		}
	}
	for _, a := range list {
		if matches(a, subject) {
			return true
		}
	}
	return false
}

// expand replaces the name template as the server does for user name.
func expand(list []string, name string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = strings.ReplaceAll(s, Name, name)
	}
	return out
}

func TestPermissions_OnlySchedulerAndRecoveryPublishCommands(t *testing.T) {
	for _, r := range Roles {
		p := Permissions(r)
		got := allowed(expand(p.Pub, "w1"), p.PubDeny, bus.WorkerCmdLaunchSubject("w1"))
		want := r == RoleScheduler || r == RoleRecovery
		if got != want {
			t.Errorf("%s may publish %s: %v, want %v", r, bus.WorkerCmdLaunchSubject("w1"), got, want)
		}
	}
}

func TestPermissions_AgentConfinedToItsOwnSubjects(t *testing.T) {
	p := Permissions(RoleAgent)
	pub, sub := expand(p.Pub, "a"), expand(p.Sub, "a")
	for _, s := range []string{"register", "heartbeat", "state", "leave"} {
		if !allowed(pub, nil, "stoker.worker.a."+s) {
			t.Errorf("agent a may not publish its own %s", s)
		}
		if allowed(pub, nil, "stoker.worker.b."+s) {
			t.Errorf("agent a may publish b's %s", s)
		}
	}
	for _, s := range []string{"stoker.worker.b.cmd.launch", "stoker.worker.b.logs", "_INBOX_agent_b.x", "stoker.worker.a.heartbeat"} {
		if allowed(sub, nil, s) {
			t.Errorf("agent a may subscribe %s", s)
		}
	}
	for _, s := range []string{"stoker.worker.a.cmd.launch", "stoker.worker.a.logs", "_INBOX_agent_a.x.y"} {
		if !allowed(sub, nil, s) {
			t.Errorf("agent a may not subscribe %s", s)
		}
	}
	// JetStream: reading the artifacts object store by direct get, nothing
	// more (no consumer: trap 9).
	readArtifacts := StreamRead(bus.StreamArtifacts)
	for _, s := range append(pub, sub...) {
		if slices.Contains(readArtifacts, s) {
			continue
		}
		if strings.HasPrefix(s, "$JS") || strings.HasPrefix(s, "$KV") || strings.HasPrefix(s, "$O") || s == ">" {
			t.Errorf("agent has JetStream or KV access: %s", s)
		}
	}
	if !p.Resp {
		t.Error("agent cannot answer commands")
	}
}

// A starting agent asks its own worker id's ping subject whether another
// live instance holds the id, and answers it: both ways, its own id only.
func TestPermissions_AgentPingsOnlyItsOwnID(t *testing.T) {
	p := Permissions(RoleAgent)
	pub, sub := expand(p.Pub, "a"), expand(p.Sub, "a")
	if !allowed(pub, nil, bus.WorkerPingSubject("a")) || !allowed(sub, nil, bus.WorkerPingSubject("a")) {
		t.Errorf("agent a may not publish and subscribe %s", bus.WorkerPingSubject("a"))
	}
	if allowed(pub, nil, bus.WorkerPingSubject("b")) || allowed(sub, nil, bus.WorkerPingSubject("b")) {
		t.Errorf("agent a may use %s", bus.WorkerPingSubject("b"))
	}
}

func TestPermissions_NoPartialWildcardsAndEveryRoleHasItsInbox(t *testing.T) {
	for _, r := range Roles {
		p := Permissions(r)
		if p.Inbox == "" {
			t.Errorf("%s has no inbox prefix", r)
		}
		if !allowed(expand(p.Sub, "n"), nil, InboxPrefix(r, "n")+".abc.1") {
			t.Errorf("%s may not subscribe its own inbox", r)
		}
		for _, s := range append(append([]string{}, p.Pub...), p.Sub...) {
			for _, tok := range strings.Split(s, ".") {
				if len(tok) > 1 && (strings.Contains(tok, "*") || strings.Contains(tok, ">")) {
					t.Errorf("%s: %q has a partial wildcard (NATS has none)", r, s)
				}
			}
		}
	}
}

func TestPermissions_ViewerCannotCreateConsumersOrWrite(t *testing.T) {
	p := Permissions(RoleViewer)
	for _, s := range []string{"$JS.API.CONSUMER.CREATE.KV_stoker-workers.x", "$JS.API.CONSUMER.CREATE.stoker-events.x.y",
		"$KV.stoker-workers.w1", bus.APIDriversSubmit, bus.APIDriversKill, bus.APIAppsKill, bus.APIAppsRegister,
		"$JS.API.STREAM.CREATE.x", "$JS.API.STREAM.DELETE.KV_stoker-workers"} {
		if allowed(p.Pub, p.PubDeny, s) {
			t.Errorf("viewer may publish %s", s)
		}
	}
	for _, s := range []string{bus.APIWorkersList, bus.APIStatus, bus.SchedulerStatus, "$JS.API.DIRECT.GET.KV_stoker-workers.$KV.stoker-workers.w1"} {
		if !allowed(p.Pub, p.PubDeny, s) {
			t.Errorf("viewer may not publish %s", s)
		}
	}
}

func TestValidName_RefusesWildcardsAndDots(t *testing.T) {
	for _, r := range Roles {
		for _, bad := range []string{"*", ">", "a.b", "a b", "", "a*"} {
			if ValidName(r, bad) == nil {
				t.Errorf("%s: name %q accepted", r, bad)
			}
		}
	}
	if err := ValidName(RoleAgent, "Worker-1_a"); err != nil {
		t.Errorf("agent Worker-1_a: %v", err)
	}
	if err := ValidName(RoleApp, "app-20260101000000-abcdef"); err != nil {
		t.Errorf("app id: %v", err)
	}
}

func TestKeys_MintRefusesBadNamesAndMissingSigner(t *testing.T) {
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Mint(RoleAgent, "*", 0); err == nil {
		t.Error("minted an agent named *")
	}
	only := k.Only(RoleApp)
	if _, err := only.Mint(RoleAgent, "w1", 0); err == nil {
		t.Error("minted an agent credential without the agent signing key")
	}
	c, err := only.Mint(RoleApp, "app-20260101000000-abcdef", 0)
	if err != nil {
		t.Fatal(err)
	}
	id, err := ParseCreds(c)
	if err != nil || id.Role != string(RoleApp) || id.Name != "app-20260101000000-abcdef" {
		t.Fatalf("ParseCreds = %+v, %v", id, err)
	}
}

func TestKeys_SaveLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	k, created, err := LoadOrGenerate(dir)
	if err != nil || !created {
		t.Fatalf("LoadOrGenerate: %v created=%v", err, created)
	}
	k2, created, err := LoadOrGenerate(dir)
	if err != nil || created {
		t.Fatalf("second LoadOrGenerate: %v created=%v", err, created)
	}
	p1, _ := k.Stoker.PublicKey()
	p2, _ := k2.Stoker.PublicKey()
	if p1 != p2 || len(k2.Signers) != len(Roles) {
		t.Fatalf("keys differ after reload: %s vs %s, %d signers", p1, p2, len(k2.Signers))
	}
}

// TestRolesDoc: docs/security.md shows the roles table as built.
func TestRolesDoc(t *testing.T) {
	b, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- roles:begin (generated from bus/auth.Markdown) -->\n", "<!-- roles:end -->"
	doc := string(b)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("docs/security.md lacks the roles markers")
	}
	if got, want := doc[i+len(begin):j], Markdown(); got != want {
		t.Errorf("docs/security.md's roles table is stale; replace it with:\n%s", want)
	}
}

// A role that answers requests and watches a bucket must be allowed its
// stream's ack subjects: otherwise the bus records every watched message's
// $JS.ACK reply as a response permission for a minute (see KVWatch).
func TestPermissions_WatchersMayPublishTheirStreamsAcks(t *testing.T) {
	ack := func(stream string) string { return "$JS.ACK." + stream + ".c1.1.42.42.1796447400915759129.0" }
	checked := 0
	for _, r := range Roles {
		p := Permissions(r)
		for _, b := range []string{bus.BucketWorkers, bus.BucketDrivers, bus.BucketApps, bus.BucketExecutors, bus.BucketTokens} {
			stream := "KV_" + b
			if !allowed(p.Pub, p.PubDeny, "$JS.API.CONSUMER.CREATE."+stream+".c1") {
				if r != RoleAdmin && allowed(p.Pub, p.PubDeny, ack(stream)) {
					t.Errorf("%s may acknowledge %s's messages without watching it", r, stream)
				}
				continue
			}
			checked++
			if p.Resp && !allowed(p.Pub, p.PubDeny, ack(stream)) {
				t.Errorf("%s watches %s and answers requests but may not publish its acks", r, stream)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no role watches a bucket")
	}
	// Nothing outside the KV streams: the events stream's consumers keep
	// their acknowledgements to themselves.
	for _, r := range Roles {
		if p := Permissions(r); r != RoleAdmin && allowed(p.Pub, p.PubDeny, ack(bus.StreamEvents)) {
			t.Errorf("%s may acknowledge %s's messages", r, bus.StreamEvents)
		}
	}
}
