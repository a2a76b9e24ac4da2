package bus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// ServerConfig configures an embedded NATS server with JetStream.
type ServerConfig struct {
	// Name is the server name (unique in a cluster). Default: "stoker".
	Name string
	// Host to listen on. Default 0.0.0.0 when Port is set, 127.0.0.1 for
	// a random port.
	Host string
	// Port for clients; -1 picks a random free port (tests). 0 means 4222.
	Port int
	// StoreDir keeps JetStream data; required.
	StoreDir string
	// ClusterName, ClusterPort and Routes join a JetStream cluster.
	ClusterName string
	ClusterHost string
	ClusterPort int
	Routes      []string
	// MonitorPort, when > 0, serves the HTTP monitoring endpoints (no
	// authentication) on MonitorHost, default 127.0.0.1.
	MonitorPort int
	MonitorHost string
	// ReadyTimeout bounds the wait for JetStream to answer. Default 30s.
	ReadyTimeout time.Duration
	// Log receives the server's log lines. Zero value: discarded.
	Log *zerolog.Logger
	// Auth, when set, runs the server in operator mode: only users signed
	// by these accounts' keys connect; anonymous connections are refused.
	// Nil: no authentication (tests where auth is irrelevant, --insecure).
	Auth *ServerAuth
	// JWTDir keeps the account resolver's JWTs. Default <StoreDir>/jwt.
	JWTDir string
	// ClientTLS, when set, is required of every client connection (but
	// in-process ones); RouteTLS secures cluster routes (bus/auth builds
	// both).
	ClientTLS, RouteTLS *tls.Config
}

// ServerAuth is what an operator-mode server trusts (bus/auth builds it).
type ServerAuth struct {
	Operator      string            // operator JWT
	SystemAccount string            // SYS account public key
	Accounts      map[string]string // account public key → account JWT
}

// Server is a running embedded NATS server.
type Server struct {
	*server.Server
	cfg ServerConfig
}

// StartServer starts an embedded NATS server and returns once JetStream
// answers API requests (not merely once the listener is up).
func StartServer(cfg ServerConfig) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("bus: StoreDir is required for JetStream")
	}
	if cfg.Name == "" {
		cfg.Name = "stoker"
	}
	if cfg.Port == 0 {
		cfg.Port = 4222
	}
	if cfg.Host == "" {
		cfg.Host = "0.0.0.0"
		if cfg.Port < 0 {
			cfg.Host = "127.0.0.1"
		}
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		MaxPayload: 8 << 20,
	}
	if cfg.MonitorPort > 0 {
		opts.HTTPPort = cfg.MonitorPort
		opts.HTTPHost = cfg.MonitorHost
		if opts.HTTPHost == "" {
			opts.HTTPHost = "127.0.0.1"
		}
	}
	if cfg.ClientTLS != nil {
		opts.TLS, opts.TLSConfig, opts.TLSTimeout = true, cfg.ClientTLS, 2
	}
	var resolver *server.DirAccResolver
	if cfg.Auth != nil {
		var err error
		if resolver, err = operatorMode(opts, cfg); err != nil {
			return nil, err
		}
	}
	if cfg.ClusterName != "" || len(cfg.Routes) > 0 {
		if cfg.ClusterName == "" {
			cfg.ClusterName = "stoker"
		}
		opts.Cluster.Name = cfg.ClusterName
		opts.Cluster.Host = cfg.ClusterHost
		if opts.Cluster.Host == "" {
			opts.Cluster.Host = "0.0.0.0"
		}
		opts.Cluster.Port = cfg.ClusterPort
		if opts.Cluster.Port == 0 {
			opts.Cluster.Port = 6222
		}
		if cfg.RouteTLS != nil {
			opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = cfg.RouteTLS, 2
		}
		for _, r := range cfg.Routes {
			u, err := url.Parse(strings.TrimSpace(r))
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("bus: route %q is not a URL such as nats://host:6222", r)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	if cfg.Port > 0 {
		// nats-server only logs a failed listen and then never becomes
		// ready; say what is wrong at once instead.
		addr := net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("bus: cannot listen on %s: %w (another stoker up or NATS server? choose another --port)", addr, err)
		}
		l.Close()
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		if resolver != nil {
			resolver.Close()
		}
		return nil, fmt.Errorf("bus: %w", err)
	}
	if cfg.Log != nil {
		ns.SetLoggerV2(&serverLog{l: *cfg.Log}, false, false, false)
	}
	ns.Start()
	if !ns.ReadyForConnections(cfg.ReadyTimeout) {
		ns.Shutdown()
		return nil, fmt.Errorf("bus: server %s not ready for connections after %s", cfg.Name, cfg.ReadyTimeout)
	}
	s := &Server{Server: ns, cfg: cfg}
	if err := s.waitJetStream(cfg.ReadyTimeout); err != nil {
		if len(opts.Routes) == 0 && opts.Cluster.Name == "" {
			ns.Shutdown()
			return nil, err
		}
		// A cluster node waits for its peers (they may start later, or be
		// slow to elect a meta leader): it serves clients and JetStream
		// answers once the cluster forms. Exiting would only make that
		// take longer.
		if cfg.Log != nil {
			cfg.Log.Warn().Err(err).Msg("JetStream cluster not formed yet; serving and waiting for the other nodes")
		}
	}
	return s, nil
}

// operatorMode sets opts for decentralized JWT auth: the operator, the
// system account, and a full directory resolver preloaded with the account
// JWTs (so a node needs no push to know them, and keeps pushed updates
// across restarts).
func operatorMode(opts *server.Options, cfg ServerConfig) (*server.DirAccResolver, error) {
	a := cfg.Auth
	oc, err := jwt.DecodeOperatorClaims(a.Operator)
	if err != nil {
		return nil, fmt.Errorf("bus: operator JWT: %w", err)
	}
	dir := cfg.JWTDir
	if dir == "" {
		dir = filepath.Join(cfg.StoreDir, "jwt")
	}
	res, err := server.NewDirAccResolver(dir, 0, 2*time.Minute, server.NoDelete, server.FetchTimeout(time.Second))
	if err != nil {
		return nil, fmt.Errorf("bus: account resolver in %s: %w", dir, err)
	}
	for pub, j := range a.Accounts {
		if err := res.Store(pub, j); err != nil {
			res.Close()
			return nil, fmt.Errorf("bus: store account %s: %w", pub, err)
		}
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{oc}
	opts.SystemAccount = a.SystemAccount
	opts.AccountResolver = res
	// Connect storms with auth otherwise fail with "expected 'PONG', got
	// 'PING'" (SECURITY-NOTES trap 12).
	opts.DisableShortFirstPing = true
	return res, nil
}

// waitJetStream waits until JetStream is up, and in a cluster until a meta
// leader exists. It asks the server itself (Healthz), not a client
// connection, which would need credentials (SECURITY-NOTES trap 14).
func (s *Server) waitJetStream(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		st := s.Healthz(&server.HealthzOptions{JSMetaOnly: true})
		if st != nil && st.StatusCode == 200 {
			return nil
		}
		if st != nil {
			last = fmt.Errorf("%s", st.Error)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bus: JetStream not ready after %s: %w", timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Secure reports whether the server authenticates its clients.
func (s *Server) Secure() bool { return s.cfg.Auth != nil }

// URL is the nats:// URL clients on this machine use.
func (s *Server) URL() string {
	addr := s.Addr()
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return s.ClientURL()
	}
	host := s.cfg.Host
	if host == "0.0.0.0" || host == "" || host == "::" {
		host = "127.0.0.1"
	}
	return fmt.Sprintf("nats://%s", net.JoinHostPort(host, fmt.Sprint(tcp.Port)))
}

// Stop shuts the server down and waits for it.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

// serverLog adapts zerolog to nats-server's logger.
type serverLog struct{ l zerolog.Logger }

func (s *serverLog) Noticef(format string, v ...any) { s.l.Info().Msgf(format, v...) }
func (s *serverLog) Warnf(format string, v ...any)   { s.l.Warn().Msgf(format, v...) }
func (s *serverLog) Fatalf(format string, v ...any)  { s.l.Error().Msgf(format, v...) }
func (s *serverLog) Errorf(format string, v ...any)  { s.l.Error().Msgf(format, v...) }
func (s *serverLog) Debugf(format string, v ...any)  { s.l.Debug().Msgf(format, v...) }
func (s *serverLog) Tracef(format string, v ...any)  { s.l.Trace().Msgf(format, v...) }
