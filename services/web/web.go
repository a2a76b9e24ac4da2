// Package web is `stoker web`: the cluster's web UI, JSON API, REST
// submission and Prometheus metrics. It reaches the cluster only over NATS,
// as any client does: the stoker.api.* endpoints through sdk.Client, logs
// through the agents' logs subject and live updates from the events
// subjects (stoker.events.>), which every state change of a KV record
// publishes.
package web

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/sdk"
)

// DefaultAddr is where `stoker web` and `stoker up` listen by default.
const DefaultAddr = "127.0.0.1:8080"

// Config is a web service.
type Config struct {
	// Addr is the listen address (host:port; port 0 picks one).
	Addr string
	// Viewer is the connection every read goes through (a viewer or admin
	// credential). Required.
	Viewer *nats.Conn
	// Admin, when set, is an admin connection: kill buttons and submission
	// go through it. Nil: they are absent and the POST endpoints answer 403.
	Admin *nats.Conn
	// BusURL is shown on the overview.
	BusURL string
	// Users are the logins (HTTP Basic, bcrypt hashes).
	Users []User
	// Anonymous is the role of a request that presents no login: viewer
	// when there are no Users, none (a login is required) otherwise. Never
	// admin by default: pages that kill and submit run code on the
	// cluster, and an open admin port is Spark's CVE-2018-11770 again.
	Anonymous Role
	// Insecure allows a non-loopback Addr without a login.
	Insecure bool
	Log      zerolog.Logger
}

// Server is a running web service.
type Server struct {
	cfg      Config
	viewer   *sdk.Client
	admin    *sdk.Client // nil: read only
	login    *login      // nil: no login
	srv      *http.Server
	ln       net.Listener
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	done     chan struct{}
	stopOnce sync.Once
}

// New checks cfg and builds the service (not yet listening).
func New(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Anonymous == "" && len(cfg.Users) == 0 {
		cfg.Anonymous = RoleViewer
	}
	if cfg.Anonymous != "" && cfg.Anonymous != RoleViewer && cfg.Anonymous != RoleAdmin {
		return nil, fmt.Errorf("web: anonymous role %q is not viewer or admin", cfg.Anonymous)
	}
	if !IsLoopback(cfg.Addr) && cfg.Anonymous != "" && !cfg.Insecure {
		return nil, fmt.Errorf("web: %s is not a loopback address: give a --password-file (a login for viewers and admins) or --insecure to serve the cluster's pages to anyone who reaches it", cfg.Addr)
	}
	if cfg.Viewer == nil {
		return nil, errors.New("web: a NATS connection is required")
	}
	_ = pages() // parsed now: a broken template fails the start, not a page
	s := &Server{cfg: cfg, viewer: sdk.NewClient(cfg.Viewer), login: newLogin(cfg.Users), done: make(chan struct{})}
	if cfg.Admin != nil {
		s.admin = sdk.NewClient(cfg.Admin)
	}
	s.initMetrics()
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Start listens and serves in the background.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("web: listen on %s: %w (choose another with --web-addr)", s.cfg.Addr, err)
	}
	s.ln = ln
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Log.Error().Err(err).Msg("web server stopped")
		}
	}()
	s.cfg.Log.Info().Str("url", s.URL()).Bool("admin", s.admin != nil).Bool("login", s.login != nil).Msg("web UI up")
	return nil
}

// URL is http://<listen address>.
func (s *Server) URL() string {
	if s.ln == nil {
		return "http://" + s.cfg.Addr
	}
	return "http://" + s.ln.Addr().String()
}

// Stop closes the listener and the live streams; idempotent.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.ln == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			_ = s.srv.Close()
		}
		<-s.done
	})
}

type ctxKey int

const roleKey ctxKey = 0

// roleOf is the request's role: the login's, or the anonymous role that
// wrap put there; viewer where wrap did not run.
func roleOf(r *http.Request) Role {
	if v, ok := r.Context().Value(roleKey).(Role); ok {
		return v
	}
	return RoleViewer
}

// challenge answers 401 with a Basic challenge, so a browser asks for a login.
func challenge(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Basic realm="stoker", charset="UTF-8"`)
	http.Error(w, msg, http.StatusUnauthorized)
}

// loginPage asks an anonymous visitor for a login (a link on every page),
// then sends a logged-in one back to the overview.
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, _, has := r.BasicAuth(); !has || s.login == nil {
		if s.login == nil {
			http.Error(w, "this web service has no logins (start it with --password-file)", http.StatusNotFound)
			return
		}
		challenge(w, "log in")
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// canAdmin: the request may kill and submit.
func (s *Server) canAdmin(r *http.Request) bool {
	return s.admin != nil && roleOf(r) == RoleAdmin
}

const csrfCookie = "stoker_csrf"

// csrfToken is the request's CSRF token, set as a same-site cookie when new.
func csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 32 {
		return c.Value
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: tok, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	return tok
}

// checkPost guards a state-changing request: a cross-site Origin (or
// Sec-Fetch-Site) is refused; a form must carry the cookie's CSRF token; a
// non-form body must be JSON (which a cross-site page cannot send without a
// CORS preflight this server never grants).
func checkPost(r *http.Request) error {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return fmt.Errorf("cross-site request from %q refused", o)
		}
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return errors.New("cross-site request refused")
	}
	if isForm(r) {
		c, err := r.Cookie(csrfCookie)
		if err != nil || !sameToken(c.Value, r.PostFormValue("csrf")) {
			return errors.New("missing or wrong CSRF token: reload the page and try again")
		}
		return nil
	}
	if c, err := r.Cookie(csrfCookie); err == nil && sameToken(c.Value, r.Header.Get("X-CSRF-Token")) {
		return nil
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		return errors.New("a POST must be a form with its CSRF token or an application/json body")
	}
	return nil
}

func isForm(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/x-www-form-urlencoded") || strings.HasPrefix(ct, "multipart/form-data")
}

// statusWriter records the status code for the request counter.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// wrap adds the login, security headers and the request counter.
func (s *Server) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		defer func() { s.requests.WithLabelValues(r.Method, fmt.Sprint(sw.code)).Inc() }()
		hd := w.Header()
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
		hd.Set("Referrer-Policy", "same-origin")
		if r.URL.Path != "/healthz" {
			role := s.cfg.Anonymous
			if _, _, has := r.BasicAuth(); has && s.login != nil {
				var ok bool
				if role, ok = s.login.check(r); !ok {
					role = ""
				}
			}
			if role == "" {
				challenge(sw, "login required")
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), roleKey, role))
		}
		h.ServeHTTP(sw, r)
	})
}
