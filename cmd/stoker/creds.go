package main

// Finding and minting credentials.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/services/registration"
)

// Environment variables for credentials and TLS (flags --creds, --tls-ca).
const (
	envCreds = "STOKER_CREDS"
	envTLSCA = "STOKER_TLS_CA"
	envData  = "STOKER_DATA"
)

// natsFlags are --nats, --creds and --tls-ca, on every command that connects.
type natsFlags struct{ url, creds, ca *string }

// natsFlag declares --nats (STOKER_NATS_URL, default bus.DefaultURL),
// --creds (STOKER_CREDS) and --tls-ca (STOKER_TLS_CA).
func natsFlag(fs *flag.FlagSet) *natsFlags {
	return &natsFlags{
		url:   fs.String("nats", bus.DefaultURL, "NATS server URL(s), comma separated [$"+envNATSURL+"]"),
		creds: fs.String("creds", "", "credentials file (default: found in $STOKER_DATA or ./data, then ~/.config/stoker) [$"+envCreds+"]"),
		ca:    fs.String("tls-ca", "", "CA certificate that signed the bus's (default: next to the credentials) [$"+envTLSCA+"]"),
	}
}

// natsTarget is where and as whom a command connects.
type natsTarget struct {
	URL, Creds, CA string
	// Looked lists where credentials were searched, for error messages.
	Looked []string
}

// target resolves the flags: --creds, else the first of
// $STOKER_DATA/creds/<role>.creds (./data when unset) and
// ~/.config/stoker/<role>.creds for each role in order.
func (f *natsFlags) target(roles ...auth.Role) natsTarget {
	t := natsTarget{URL: *f.url, Creds: *f.creds, CA: *f.ca}
	if t.Creds == "" {
		t.Creds, t.Looked = findCreds(roles...)
	}
	if t.CA == "" && t.Creds != "" {
		t.CA = caNextTo(t.Creds)
	}
	return t
}

// findCreds looks for a role's credential where `stoker up` writes it.
func findCreds(roles ...auth.Role) (string, []string) {
	var dirs []string
	data := os.Getenv(envData)
	if data == "" {
		data = "data"
	}
	dirs = append(dirs, filepath.Join(data, auth.CredsDir))
	if cfg, err := os.UserConfigDir(); err == nil {
		dirs = append(dirs, filepath.Join(cfg, "stoker"))
	}
	var looked []string
	for _, dir := range dirs {
		for _, r := range roles {
			p := filepath.Join(dir, string(r)+".creds")
			looked = append(looked, p)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				if abs, err := filepath.Abs(p); err == nil {
					p = abs
				}
				return p, looked
			}
		}
	}
	return "", looked
}

// caNextTo is the CA `stoker up` writes beside the credentials
// (<root>/tls/ca.pem for <root>/creds/x.creds), if it exists.
func caNextTo(creds string) string {
	p := filepath.Join(filepath.Dir(filepath.Dir(creds)), "tls", "ca.pem")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// connect dials the target.
func (t natsTarget) connect(o bus.ConnectOptions) (*nats.Conn, error) {
	o.Creds, o.CA = t.Creds, t.CA
	nc, err := bus.Connect(t.URL, o)
	if err != nil && errors.Is(err, bus.ErrAuth) && t.Creds == "" && len(t.Looked) > 0 {
		return nil, fmt.Errorf("%w; no credentials in %s", err, strings.Join(t.Looked, ", "))
	}
	return nc, err
}

func init() {
	register(&command{
		name: "creds", group: "Cluster", summary: "mint a credential from the signing keys on this machine",
		usage: "[--init] [--role ROLE --name NAME] [--auth-dir ./data] [--ttl 0] [--out FILE]",
		details: `Signs a user credential (.creds) with the role's key from <auth-dir>/auth/,
as ` + "`stoker up`" + ` and ` + "`stoker bus`" + ` create it. For an agent the name is its
worker id; for an app, its app id. Roles: ` + roleList() + `.
--init first creates the keys and the fixed roles' credentials
(<auth-dir>/creds/<role>.creds) if missing, as ` + "`stoker bus`" + ` does on first start:
for a cluster whose nodes must share one set (compose's build step).`,
		examples: []string{
			"stoker creds --role agent --name gpu-1 --out gpu-1.creds",
			"stoker creds --role viewer --name alice --ttl 720h --auth-dir /var/lib/stoker",
			"stoker creds --init --auth-dir deploy/.build/auth",
		},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			dir := fs.String("auth-dir", "./data", "directory holding auth/ (stoker up's --data, stoker bus's --auth-dir)")
			role := fs.String("role", "", "role: "+roleList())
			name := fs.String("name", "", "user name: worker id for agent, app id for app")
			ttl := fs.Duration("ttl", 0, "lifetime (0: no expiry)")
			out := fs.String("out", "", "write to this file (0600) instead of stdout")
			initKeys := fs.Bool("init", false, "create the keys and the fixed roles' credentials in --auth-dir if missing")
			return func(_ context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("unexpected arguments %q", strings.Join(args, " "))
				}
				if *initKeys {
					if _, _, err := auth.Install(*dir); err != nil {
						return err
					}
					// The CA (and a certificate for this machine): every
					// node makes its own certificate from this CA.
					if _, err := auth.EnsureTLS(*dir, "init", nil); err != nil {
						return err
					}
					if *role == "" {
						return nil
					}
				}
				r, err := auth.ParseRole(*role)
				if err != nil {
					return usagef("--role: %v", err)
				}
				if *name == "" {
					*name = string(r)
				}
				keys, err := auth.Load(filepath.Join(*dir, auth.KeysDir))
				if err != nil {
					return err
				}
				c, err := keys.Mint(r, *name, *ttl)
				if err != nil {
					return err
				}
				if *out == "" {
					_, err = e.stdout.Write(c)
					return err
				}
				return auth.WriteSecret(*out, c)
			}
		},
	})
}

func roleList() string {
	var s []string
	for _, r := range auth.Roles {
		s = append(s, string(r))
	}
	return strings.Join(s, ", ")
}

// installAuth loads (or creates, on first start) the keys and the fixed
// roles' credentials under root.
func installAuth(root string) (*auth.Keys, *bus.ServerAuth, error) {
	keys, _, err := auth.Install(root)
	if err != nil {
		return nil, nil, fmt.Errorf("credentials in %s: %w", root, err)
	}
	trust, err := keys.Trust()
	if err != nil {
		return nil, nil, err
	}
	return keys, trust, nil
}

// appCredsMinter is the scheduler's AppCreds from the keys in dir (only
// the app role's signing key is needed), or nil when dir has none.
func appCredsMinter(keys *auth.Keys) func(string) ([]byte, error) {
	if keys == nil || keys.Signers[auth.RoleApp] == nil {
		return nil
	}
	k := keys.Only(auth.RoleApp)
	return func(appID string) ([]byte, error) { return k.Mint(auth.RoleApp, appID, 0) }
}

// loadKeysIfAny loads the keys under root/auth; missing: nil, nil.
func loadKeysIfAny(root string) (*auth.Keys, error) {
	if root == "" {
		return nil, nil
	}
	if _, err := os.Stat(filepath.Join(root, auth.KeysDir)); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return auth.Load(filepath.Join(root, auth.KeysDir))
}

// withAppCreds is s with the scheduler minting app credentials from keys.
func withAppCreds(s schedulerSettings, keys *auth.Keys) schedulerSettings {
	s.appCreds = appCredsMinter(keys)
	return s
}

// tlsOptions are --tls-cert, --tls-key, --tls-ca and --tls-san of `stoker
// up` and `stoker bus`.
type tlsOptions struct {
	cert, key, ca string
	sans          []string
}

func bindTLS(fs *flag.FlagSet, o *tlsOptions) {
	fs.StringVar(&o.cert, "tls-cert", "", "server certificate (PEM); default: made in <data>/tls from a CA made there on first start")
	fs.StringVar(&o.key, "tls-key", "", "key of --tls-cert")
	fs.StringVar(&o.ca, "tls-ca", "", "CA that signed --tls-cert (clients and the other nodes trust it)")
	fs.Func("tls-san", "extra host name or address for the made certificate (repeatable)", func(v string) error {
		o.sans = append(o.sans, v)
		return nil
	})
}

// secureServer sets cfg up for authentication and TLS from the keys and
// certificates under root (made on first start): operator mode, TLS for
// clients, mutual TLS for routes. It returns the keys and the CA file
// clients trust.
func secureServer(cfg *bus.ServerConfig, root string, t tlsOptions) (*auth.Keys, string, error) {
	keys, trust, err := installAuth(root)
	if err != nil {
		return nil, "", err
	}
	cfg.Auth = trust
	files := auth.TLSFiles{Cert: t.cert, Key: t.key, CA: t.ca}
	if files.Cert == "" {
		if files.Key != "" || files.CA != "" {
			return nil, "", usagef("--tls-cert, --tls-key and --tls-ca go together")
		}
		sans := append([]string{cfg.Host, cfg.Name}, t.sans...)
		if files, err = auth.EnsureTLS(root, cfg.Name, sans); err != nil {
			return nil, "", fmt.Errorf("TLS certificates in %s: %w", filepath.Join(root, auth.TLSDir), err)
		}
	} else if files.Key == "" || files.CA == "" {
		return nil, "", usagef("--tls-cert, --tls-key and --tls-ca go together")
	}
	if cfg.ClientTLS, err = auth.ServerTLS(files); err != nil {
		return nil, "", fmt.Errorf("TLS: %w", err)
	}
	if cfg.RouteTLS, err = auth.RouteTLS(files); err != nil {
		return nil, "", fmt.Errorf("route TLS: %w", err)
	}
	ca, _ := filepath.Abs(files.CA)
	return keys, ca, nil
}

// tokenMinter serves join tokens from keys (the agent and join signing
// keys), embedding the CA file's PEM; nil when keys lack them.
func tokenMinter(keys *auth.Keys, caFile string) registration.Tokens {
	if keys == nil || keys.Signers[auth.RoleAgent] == nil || keys.Signers[auth.RoleJoin] == nil {
		return nil
	}
	var ca []byte
	if caFile != "" {
		ca, _ = os.ReadFile(caFile)
	}
	return auth.Minter{Keys: keys.Only(auth.RoleAgent, auth.RoleJoin), CA: ca}
}
