// Package auth holds Stoker's identities on NATS: the operator, the SYS and
// STOKER accounts, one scoped signing key per role, the user credentials
// minted with them, and the table of what each role may publish and
// subscribe to.
//
// The roles table is pure data, and the only place permissions are written:
// the scoped signing keys carry it as their templates ({{name()}} is the
// user's name: a worker id, an app id, a service instance id), and
// docs/security.md prints it (TestRolesDoc keeps the two equal).
//
// It does not promise anything about a process that holds a credential:
// whoever reads a .creds file is that identity until it expires.
package auth

import (
	"fmt"
	"slices"
	"strings"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// Role names a kind of identity. Each role has its own scoped signing key.
type Role string

// The roles.
const (
	// RoleAgent is one worker agent; the user name is its worker id.
	RoleAgent Role = "agent"
	// RoleScheduler and RoleRecovery are the only roles that may send
	// worker commands.
	RoleScheduler Role = "scheduler"
	RoleRecovery  Role = "recovery"
	// RoleRegistration and RoleHeartbeat are the other services.
	RoleRegistration Role = "registration"
	RoleHeartbeat    Role = "heartbeat"
	// RoleAdmin is the operator at the keyboard: everything but forging
	// worker commands.
	RoleAdmin Role = "admin"
	// RoleViewer reads: lists, status, logs, events, KV by direct get.
	RoleViewer Role = "viewer"
	// RoleApp is one application (its driver and its executors); the user
	// name is the app id.
	RoleApp Role = "app"
	// RoleJoin is a join token's credential: it may only ask for an agent
	// credential.
	RoleJoin Role = "join"
)

// Roles lists every role, in the order docs show them.
var Roles = []Role{RoleAgent, RoleScheduler, RoleRecovery, RoleRegistration, RoleHeartbeat,
	RoleAdmin, RoleViewer, RoleApp, RoleJoin}

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	if slices.Contains(Roles, Role(s)) {
		return Role(s), nil
	}
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = string(r)
	}
	return "", fmt.Errorf("unknown role %q (one of %s)", s, strings.Join(names, ", "))
}

// Name is the template a scoped signing key expands into the user's name.
const Name = "{{name()}}"

// Perms is what one role may do. Subjects may contain Name.
type Perms struct {
	Pub, Sub []string // allowed
	PubDeny  []string
	// Resp lets the role answer requests it received (publish once to
	// each reply subject), whatever the requester's inbox.
	Resp bool
	// Inbox is the role's inbox prefix (nats.CustomInboxPrefix, which
	// bus.Connect sets from the credential); Sub includes Inbox+".>".
	Inbox string
}

// InboxPrefix is the inbox prefix of user name in role: _INBOX_<role>_<name>.
func InboxPrefix(r Role, name string) string { return bus.InboxPrefix(string(r), name) }

// CommandReplyPrefixes are the reply-subject prefixes of the roles allowed
// to send worker commands.
var CommandReplyPrefixes = []string{InboxPrefix(RoleScheduler, ""), InboxPrefix(RoleRecovery, "")}

// Buckets every service reads and writes, and the events stream.
var serviceBuckets = []string{bus.BucketWorkers, bus.BucketDrivers, bus.BucketApps,
	bus.BucketExecutors, bus.BucketLeader, bus.BucketCluster}

// KVRead is what reading bucket b by key needs: stream info and direct get
// (no consumer, so no JetStream delivery to a subject of the caller's
// choosing: SECURITY-NOTES trap 9).
func KVRead(b string) []string {
	s := "KV_" + b
	// Buckets are provisioned with direct gets off (reads answered by the
	// stream leader, never a stale replica), so a KV Get is a
	// $JS.API.STREAM.MSG.GET; direct get stays for stores not yet updated.
	return []string{"$JS.API.STREAM.INFO." + s, "$JS.API.STREAM.MSG.GET." + s, "$JS.API.DIRECT.GET." + s, "$JS.API.DIRECT.GET." + s + ".>"}
}

// StreamRead is what reading stream s by direct get needs (no consumer).
// Agents read the artifacts object store so (bus.FetchArtifact).
func StreamRead(s string) []string {
	return []string{"$JS.API.STREAM.INFO." + s, "$JS.API.DIRECT.GET." + s, "$JS.API.DIRECT.GET." + s + ".>"}
}

// KVWatch adds what watching, listing keys and history need: an ordered
// consumer and its flow control (trap 8), and the acknowledgement
// subjects of the stream's consumers. An ordered consumer acknowledges
// nothing, but each message it delivers carries a $JS.ACK reply; to a
// role that may answer requests (Resp) and may not publish there, the bus
// records every such reply as a response permission, kept a minute and
// pruned by scanning them all: up to 600,000 of them for a service
// watching 10,000 records a second. The records and the scans were half
// the bus's CPU delivering to the services (issue 12). Acknowledging a KV stream's messages
// grants nothing a writer of the bucket does not already have.
func KVWatch(b string) []string {
	s := "KV_" + b
	return append(KVRead(b), "$JS.API.CONSUMER.CREATE."+s+".>", "$JS.API.CONSUMER.DELETE."+s+".>",
		"$JS.API.CONSUMER.INFO."+s+".>", "$JS.FC."+s+".>", "$JS.ACK."+s+".>")
}

// KVWrite adds puts, creates, updates and deletes.
func KVWrite(b string) []string { return append(KVWatch(b), "$KV."+b+".>") }

// StreamOwn is what creating (or updating) stream s and consuming it needs.
func StreamOwn(s string) []string {
	return []string{"$JS.API.STREAM.CREATE." + s, "$JS.API.STREAM.UPDATE." + s, "$JS.API.STREAM.INFO." + s,
		"$JS.API.CONSUMER.CREATE." + s + ".>", "$JS.API.CONSUMER.DELETE." + s + ".>",
		"$JS.API.CONSUMER.INFO." + s + ".>", "$JS.FC." + s + ".>"}
}

// servicePub is what every service publishes: KV on every bucket, events,
// account info. Services no longer create or update the buckets (the
// store's owner, bus.Provision, does: stoker up, stoker bus, stoker init),
// so the StreamOwn rights here are more than a service needs.
func servicePub() []string {
	out := []string{"$JS.API.INFO", bus.Events}
	for _, b := range serviceBuckets {
		out = append(out, KVWrite(b)...)
		out = append(out, StreamOwn("KV_"+b)...)
	}
	return append(out, StreamOwn(bus.StreamEvents)...)
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// worker is stoker.worker.<Name>.<rest>.
func worker(rest string) string { return "stoker.worker." + Name + "." + rest }

// app is stoker.app.<Name>.<rest>.
func app(rest string) string { return "stoker.app." + Name + "." + rest }

// Permissions is the roles table.
func Permissions(r Role) Perms {
	inbox := InboxPrefix(r, Name)
	p := Perms{Inbox: inbox}
	switch r {
	case RoleAgent:
		p.Pub = []string{worker("register"), worker("heartbeat"), worker("state"), worker("states"), worker("leave"), worker("drain"), worker("ping")}
		p.Pub = append(p.Pub, StreamRead(bus.StreamArtifacts)...)
		p.Sub = []string{worker("cmd.>"), worker("logs"), worker("ping")}
		p.Resp = true
	case RoleScheduler:
		p.Pub = append([]string{bus.WorkerCmd, "stoker.leader.>"}, servicePub()...)
		p.Sub = []string{"stoker.leader.>", "$SRV.>", bus.ConnClosed}
		p.Resp = true
	case RoleRecovery:
		p.Pub = append([]string{bus.WorkerCmd, "stoker.app.*.master"}, servicePub()...)
		p.Sub = []string{"$SRV.>"}
		p.Resp = true
	case RoleRegistration:
		p.Pub = append(KVWrite(bus.BucketTokens), servicePub()...)
		p.Pub = append(p.Pub, StreamOwn("KV_"+bus.BucketTokens)...)
		// The artifact collector (registration's retention): list and
		// read objects' metadata by direct get, write a delete marker
		// guarded by its sequence, purge the deleted object's chunks.
		p.Pub = append(p.Pub, StreamRead(bus.StreamArtifacts)...)
		p.Pub = append(p.Pub, bus.ArtifactMeta, "$JS.API.STREAM.PURGE."+bus.StreamArtifacts)
		p.Sub = []string{bus.WorkerRegister, bus.WorkerLeave, bus.WorkerDrain, bus.WorkerState, bus.WorkerStates, "stoker.api.>",
			bus.AppRegister, bus.AppUnregister, bus.AppExecutors, "$SRV.>"}
		p.Resp = true
	case RoleHeartbeat:
		p.Pub = servicePub()
		p.Sub = []string{bus.WorkerHeartbeat, bus.AppHeartbeat, "$SRV.>", bus.ConnClosed}
		p.Resp = true
	case RoleAdmin:
		p.Pub = []string{">"}
		p.PubDeny = []string{bus.WorkerCmd}
		p.Sub = []string{">"}
		p.Resp = true
	case RoleViewer:
		p.Pub = []string{bus.APIWorkersList, bus.APIDriversList, bus.APIAppsList, bus.APIStatus, bus.SchedulerStatus,
			bus.WorkerLogs, "$SRV.>", "$JS.API.INFO"}
		for _, b := range append(serviceBuckets, bus.BucketTokens) {
			p.Pub = append(p.Pub, KVRead(b)...)
		}
		p.Pub = append(p.Pub, "$JS.API.STREAM.INFO."+bus.StreamEvents)
		p.Sub = []string{bus.Events}
	case RoleApp:
		p.Pub = []string{app(">"), bus.APIAppsList}
		p.Sub = []string{app(">")}
		p.Resp = true
	case RoleJoin:
		p.Pub = []string{bus.APITokensJoin}
	default:
		return Perms{}
	}
	if p.Inbox != "" {
		p.Sub = append(p.Sub, p.Inbox+".>")
	}
	p.Pub, p.Sub = dedupe(p.Pub), dedupe(p.Sub)
	return p
}

// ValidName checks a user name before it is minted into a credential: the
// templates insert it raw into subjects, so a name such as "*" or "a.b"
// would widen the grant (SECURITY-NOTES trap 5).
func ValidName(r Role, name string) error {
	switch r {
	case RoleApp:
		return schemas.ValidAppID(name)
	case RoleAgent:
		return schemas.ValidID("worker", name)
	}
	return schemas.ValidID(string(r), name)
}
