package main

// `stoker web`: the web UI, JSON API, REST submission and /metrics
// (services/web), a client of the cluster over NATS like any other.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/services/web"
)

// webFlags are the web service's own flags, on `stoker web` and `stoker up`.
type webFlags struct {
	addr, passwordFile *string
}

func bindWebFlags(fs *flag.FlagSet, addrUsage, passwordFlag string) *webFlags {
	return &webFlags{
		addr:         fs.String("web-addr", web.DefaultAddr, addrUsage),
		passwordFile: fs.String(passwordFlag, "", `web logins, one "name viewer|admin bcrypt-hash" a line (stoker web-passwd makes a line); required off loopback unless --insecure`),
	}
}

// users reads --password-file (none: no login).
func (f *webFlags) users() ([]web.User, error) {
	if *f.passwordFile == "" {
		return nil, nil
	}
	fh, err := os.Open(*f.passwordFile)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	users, err := web.ParsePasswordFile(fh)
	if err != nil {
		return nil, fmt.Errorf("password file %s: %w", *f.passwordFile, err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("%s: no users", *f.passwordFile)
	}
	return users, nil
}

func init() {
	register(&command{
		name: "web", group: "Services", summary: "serve the web UI, JSON API, REST submission and Prometheus /metrics",
		usage: "[--web-addr 127.0.0.1:8080] [--creds viewer.creds] [--admin-creds admin.creds] [--password-file FILE] [--insecure] [--nats URL]",
		details: `Serves the cluster's pages (overview, workers, applications, drivers, logs,
events; live, without reload), the JSON API under /api/v1, a Spark-shaped
/json summary, Prometheus metrics at /metrics, /healthz and /readyz. It
reads the cluster over NATS with the viewer credential (--creds; default:
viewer.creds where stoker up writes it). Kill buttons and POST /api/v1/drivers
need --admin-creds; without it they are absent and the endpoints answer 403.
On a non-loopback --web-addr a --password-file login is required unless
--insecure. See docs/web.md.`,
		examples: []string{
			"stoker web",
			"stoker web --admin-creds ./data/creds/admin.creds",
			"stoker web --web-addr 0.0.0.0:8080 --password-file ./web.passwd --admin-creds ./data/creds/admin.creds",
		},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			url := natsFlag(fs)
			wf := bindWebFlags(fs, "address the web UI listens on", "password-file")
			adminCreds := fs.String("admin-creds", "", "admin credential for kill and submit (default: none, read only)")
			insecure := fs.Bool("insecure", false, "serve a non-loopback --web-addr WITHOUT a login")
			level := logLevelFlag(fs)
			return func(ctx context.Context, args []string) error {
				if err := noArgs("web", args); err != nil {
					return err
				}
				users, err := wf.users()
				if err != nil {
					return usagef("%v", err)
				}
				log, err := newLogger(e, *level)
				if err != nil {
					return err
				}
				t := url.target(auth.RoleViewer, auth.RoleAdmin)
				nc, err := t.connect(bus.ConnectOptions{Name: "stoker-web", Retry: true, Log: &log})
				if err != nil {
					return err
				}
				defer nc.Close()
				var admin *nats.Conn
				if *adminCreds != "" {
					at := natsTarget{URL: t.URL, Creds: *adminCreds, CA: t.CA}
					if at.CA == "" {
						at.CA = caNextTo(*adminCreds)
					}
					if admin, err = at.connect(bus.ConnectOptions{Name: "stoker-web-admin", Retry: true, Log: &log}); err != nil {
						return fmt.Errorf("--admin-creds: %w", err)
					}
					defer admin.Close()
				}
				s, err := startWeb(web.Config{Addr: *wf.addr, Viewer: nc, Admin: admin, BusURL: t.URL, Users: users,
					Insecure: *insecure}, log)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "Stoker web UI at %s\n", s.URL())
				<-ctx.Done()
				s.Stop()
				return nil
			}
		},
	})
	register(&command{
		name: "web-passwd", group: "Other", summary: "print a --password-file line (bcrypt) for a web login",
		usage: "NAME viewer|admin   (reads the password from stdin)",
		examples: []string{
			"printf '%s' \"$PASSWORD\" | stoker web-passwd alice admin >> web.passwd",
		},
		setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
			return func(ctx context.Context, args []string) error {
				if len(args) != 2 || (args[1] != string(web.RoleViewer) && args[1] != string(web.RoleAdmin)) {
					return usagef("want NAME and a role (viewer or admin)")
				}
				pw, err := io.ReadAll(io.LimitReader(os.Stdin, 4096))
				if err != nil {
					return err
				}
				p := strings.TrimRight(string(pw), "\r\n")
				if len(p) < 8 {
					return usagef("the password on stdin must have at least 8 characters")
				}
				h, err := web.HashPassword(p)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "%s %s %s\n", args[0], args[1], h)
				return nil
			}
		},
	})
}

// startWeb builds and starts the web service.
func startWeb(cfg web.Config, log zerolog.Logger) (*web.Server, error) {
	cfg.Log = log.With().Str("service", "web").Logger()
	s, err := web.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// webAdminPasswordFile is where `stoker up` keeps the web UI's admin
// password, beside the cluster's other credentials.
func webAdminPasswordFile(data string) string {
	return filepath.Join(data, "creds", "web-admin.password")
}

// webAdminLogin is the login `stoker up` gives its web UI when no
// --web-password-file is set: user "admin" with a random password made on
// first start and kept 0600 in <data>/creds, so the kill buttons and REST
// submission need what the bus credentials need: read access to the data dir.
func webAdminLogin(data string) ([]web.User, string, error) {
	path := webAdminPasswordFile(data)
	pw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		b := make([]byte, 18)
		if _, err := rand.Read(b); err != nil {
			return nil, "", err
		}
		pw = []byte(base64.RawURLEncoding.EncodeToString(b))
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, "", err
		}
		if err := os.WriteFile(path, append(pw, '\n'), 0o600); err != nil {
			return nil, "", err
		}
	} else if err != nil {
		return nil, "", fmt.Errorf("web admin password: %w", err)
	}
	hash, err := web.HashPassword(strings.TrimSpace(string(pw)))
	if err != nil {
		return nil, "", err
	}
	return []web.User{{Name: "admin", Role: web.RoleAdmin, Hash: []byte(hash)}}, path, nil
}
