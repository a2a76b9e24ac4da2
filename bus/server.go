package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	// MonitorPort, when > 0, serves the HTTP monitoring endpoints.
	MonitorPort int
	// ReadyTimeout bounds the wait for JetStream to answer. Default 30s.
	ReadyTimeout time.Duration
	// Log receives the server's log lines. Zero value: discarded.
	Log *zerolog.Logger
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

// waitJetStream polls the JetStream API until it answers: in a cluster that
// means a meta leader exists.
func (s *Server) waitJetStream(timeout time.Duration) error {
	nc, err := nats.Connect("", nats.InProcessServer(s.Server), nats.Name("stoker-bus-ready"))
	if err != nil {
		return fmt.Errorf("bus: in-process connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, last = js.AccountInfo(ctx)
		cancel()
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("bus: JetStream not ready after %s: %w", timeout, last)
}

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
