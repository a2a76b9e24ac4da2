package auth

import (
	"fmt"
	"strings"
)

// Markdown renders the roles table for docs/security.md (TestRolesDoc
// checks the doc holds exactly this text between its markers).
func Markdown() string {
	var b strings.Builder
	b.WriteString("| role | user name | may publish | may subscribe | answers requests |\n")
	b.WriteString("| --- | --- | --- | --- | --- |\n")
	for _, r := range Roles {
		p := Permissions(r)
		pub := codeList(p.Pub)
		if len(p.PubDeny) > 0 {
			pub += " except " + codeList(p.PubDeny)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r, userName(r), pub, codeList(p.Sub), yesNo(p.Resp))
	}
	return b.String()
}

func userName(r Role) string {
	switch r {
	case RoleAgent:
		return "worker id"
	case RoleApp:
		return "app id"
	case RoleJoin:
		return "token id"
	case RoleAdmin, RoleViewer:
		return "free (`stoker up` writes `admin`, `viewer`)"
	}
	return "instance id (or the role's name)"
}

// codeList prints subjects, folding the JetStream grants per stream.
func codeList(subjects []string) string {
	var plain []string
	js := map[string][]string{} // stream → verbs
	var order []string
	for _, s := range subjects {
		stream, verb, ok := jsGrant(s)
		if !ok {
			plain = append(plain, "`"+s+"`")
			continue
		}
		if _, seen := js[stream]; !seen {
			order = append(order, stream)
		}
		js[stream] = appendOnce(js[stream], verb)
	}
	for _, st := range order {
		plain = append(plain, fmt.Sprintf("JetStream %s on `%s`", strings.Join(js[st], "/"), st))
	}
	if len(plain) == 0 {
		return "—"
	}
	return strings.Join(plain, ", ")
}

// jsGrant names a JetStream API or KV subject's stream and what it allows.
func jsGrant(s string) (stream, verb string, ok bool) {
	for _, g := range []struct{ prefix, verb string }{
		{"$JS.API.STREAM.CREATE.", "create"}, {"$JS.API.STREAM.UPDATE.", "update"}, {"$JS.API.STREAM.INFO.", "info"},
		{"$JS.API.DIRECT.GET.", "get"}, {"$JS.API.STREAM.MSG.GET.", "get"}, {"$JS.API.CONSUMER.CREATE.", "consume"}, {"$JS.API.CONSUMER.DELETE.", "consume"},
		{"$JS.API.CONSUMER.INFO.", "consume"}, {"$JS.FC.", "consume"}, {"$JS.ACK.", "consume"}, {"$KV.", "put"},
	} {
		if rest, found := strings.CutPrefix(s, g.prefix); found {
			stream, _, _ = strings.Cut(rest, ".")
			if g.prefix == "$KV." {
				stream = "KV_" + stream
			}
			return stream, g.verb, true
		}
	}
	return "", "", false
}

func appendOnce(l []string, v string) []string {
	for _, x := range l {
		if x == v {
			return l
		}
	}
	return append(l, v)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
