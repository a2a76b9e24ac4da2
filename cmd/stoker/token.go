package main

// stoker token create|ls|revoke, and joining an agent with a token.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/schemas"
)

func init() {
	register(&command{
		name: "token", group: "Cluster", summary: "make, list and revoke join tokens for new agents (admin)", interspersed: true,
		usage: "create [--role agent] [--ttl 1h] | ls [--json] | revoke ID",
		details: `A join token lets a new machine join once, without copying keys by hand:
` + "`stoker agent --join-token T`" + ` presents it, receives a credential confined to its
own worker id and keeps it (0600) in its work dir for restarts. A token
carries a short-lived join credential (it may only ask to join) and the CA;
the cluster keeps only a hash of its secret. Revoked or expired tokens are
refused; agents that already joined keep their credentials.`,
		examples: []string{
			"T=$(stoker token create --ttl 1h)",
			"stoker agent --join-token \"$T\" --nats nats://10.0.0.1:4222 --id gpu-1",
			"stoker token ls",
			"stoker token revoke tok-0a1b2c3d4e5f",
		},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url, asJSON := natsFlag(fs), jsonFlag(fs)
			role := fs.String("role", "agent", "role the token joins as (agent)")
			ttl := fs.Duration("ttl", time.Hour, "how long the token may be used")
			return func(ctx context.Context, args []string) error {
				if len(args) == 0 {
					return usagef("token: want create, ls or revoke ID")
				}
				t := url.target(auth.RoleAdmin)
				switch args[0] {
				case "create":
					if len(args) > 1 || *ttl <= 0 {
						return usagef("token create takes no arguments and a positive --ttl")
					}
					return withConn(t, func(nc *nats.Conn) error {
						var out schemas.TokenCreated
						if err := bus.Call(ctx, nc, bus.APITokensCreate, &schemas.TokenCreate{Role: *role, TTLMS: ttl.Milliseconds()}, &out); err != nil {
							return err
						}
						fmt.Fprintf(e.stderr, "token %s, valid until %s\n", out.ID, out.ExpiresAt.Local().Format(time.RFC3339))
						fmt.Fprintln(e.stdout, out.Token)
						return nil
					})
				case "ls":
					return withConn(t, func(nc *nats.Conn) error {
						var out schemas.TokenList
						if err := bus.Call(ctx, nc, bus.APITokensList, &schemas.ListRequest{}, &out); err != nil {
							return err
						}
						if *asJSON {
							return json.NewEncoder(e.stdout).Encode(out.Tokens)
						}
						tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
						fmt.Fprintln(tw, "ID\tROLE\tEXPIRES\tREVOKED\tJOINED")
						for _, tk := range out.Tokens {
							fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%v\n", tk.ID, tk.Role, tk.ExpiresAt.Local().Format(time.RFC3339), tk.Revoked, tk.Joined)
						}
						return tw.Flush()
					})
				case "revoke":
					if len(args) != 2 {
						return usagef("token revoke takes one token id")
					}
					return withConn(t, func(nc *nats.Conn) error {
						var ack schemas.Ack
						if err := bus.Call(ctx, nc, bus.APITokensRevoke, &schemas.TokenRevoke{ID: args[1]}, &ack); err != nil {
							return err
						}
						fmt.Fprintln(e.stdout, ack.Message)
						return nil
					})
				}
				return usagef("token: unknown subcommand %q (create, ls, revoke)", args[0])
			}
		},
	})
}

// joinWithToken exchanges a join token for this agent's credential, kept
// (0600) in workDir with the token's CA; it returns the target to use.
func joinWithToken(ctx context.Context, t natsTarget, token, workDir, wid string) (natsTarget, error) {
	jt, err := auth.DecodeToken(token)
	if err != nil {
		return t, err
	}
	if t.CA == "" && jt.CA != "" {
		t.CA = filepath.Join(workDir, "ca.pem")
		if err := auth.WriteSecret(t.CA, []byte(jt.CA)); err != nil {
			return t, err
		}
	}
	creds, err := joinCreds(ctx, t, jt, wid)
	if err != nil {
		return t, err
	}
	t.Creds = filepath.Join(workDir, agentCredsFile)
	if err := auth.WriteSecret(t.Creds, creds); err != nil {
		return t, err
	}
	return t, nil
}

// joinCreds exchanges a join token for worker wid's agent credential.
func joinCreds(ctx context.Context, t natsTarget, jt auth.JoinToken, wid string) ([]byte, error) {
	nc, err := bus.Connect(t.URL, bus.ConnectOptions{Name: "stoker-join-" + wid, CredsData: []byte(jt.Creds), CA: t.CA})
	if err != nil {
		return nil, fmt.Errorf("join token %s: %w", jt.ID, err)
	}
	defer nc.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var reply schemas.JoinReply
	if err := bus.Call(cctx, nc, bus.APITokensJoin, &schemas.JoinRequest{TokenID: jt.ID, Secret: jt.Secret, WorkerID: wid}, &reply); err != nil {
		return nil, fmt.Errorf("join with token %s: %w", jt.ID, err)
	}
	return []byte(reply.Creds), nil
}
