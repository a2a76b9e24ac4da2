package agent

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// Defaults.
const (
	DefaultWorkDir           = "./work"
	DefaultHeartbeatInterval = svc.DefaultHeartbeatInterval
	DefaultKillGrace         = 5 * time.Second
	DefaultRegisterTimeout   = 2 * time.Second
	DefaultRelaunchBackoff   = 500 * time.Millisecond
	// DefaultCommandSkew is how far the agent's clock may be behind a
	// scheduler's before a command past its ValidUntil is still accepted.
	DefaultCommandSkew = 2 * time.Second
	// DefaultLogsMaxBytes is the tail returned when a LogsRequest says 0.
	DefaultLogsMaxBytes = 1 << 20
	// minMemoryMB is the floor of the memory default.
	minMemoryMB = 512
	// retainFinished bounds finishedExecutors and finishedDrivers, as
	// Spark's spark.worker.ui.retainedExecutors/Drivers (1000) do.
	retainFinished = 1000
)

// Config configures an agent.
type Config struct {
	// NC is the connection the agent uses; the caller owns (and closes) it.
	NC *nats.Conn
	// ID is part of every service's Config so cmd/stoker can wire them
	// alike; the agent does not use it (its identity is WorkerID).
	ID  string
	Log zerolog.Logger

	// NATSURL is given to every child as STOKER_NATS_URL. Required.
	NATSURL string
	// WorkerID names the worker (schemas.ValidID). Default: the id kept in
	// <WorkDir>/worker-id, created the first time as the hostname plus a
	// short random suffix (DefaultWorkerID).
	WorkerID string
	// Host is the address reported at registration. Default: the hostname.
	Host string
	// Cores offered to the cluster. Default runtime.NumCPU().
	Cores int
	// MemoryMB offered to the cluster. Default: total memory minus 1 GiB,
	// at least 512.
	MemoryMB int64
	// WorkDir holds <appid>/<execid>/ and <driverid>/ directories with each
	// child's stdout and stderr. Default ./work; created; made absolute.
	WorkDir string
	// HeartbeatInterval until the registration reply says otherwise. Default 1s.
	HeartbeatInterval time.Duration
	// KillGrace is the wait between SIGTERM and SIGKILL. Default 5s.
	KillGrace time.Duration
	// RegisterTimeout bounds one registration attempt. Default 2s.
	RegisterTimeout time.Duration
	// CommandReplyPrefixes, when set, are the only reply-subject prefixes a
	// command may carry (bus/auth.CommandReplyPrefixes: the scheduler's and
	// recovery's inboxes); others are dropped. Empty: no check (a bus
	// without authentication, where anyone can send commands anyway).
	CommandReplyPrefixes []string
	// TLSCA is the CA file children are told to trust (STOKER_TLS_CA).
	TLSCA string
	// PID is reported at registration and in answers to pings. Default os.Getpid().
	PID int
	// PingWait is how long Start collects answers on stoker.worker.<wid>.ping
	// from other live agents holding the id. Default 300ms.
	PingWait time.Duration
	// Launcher starts executors and drivers. Default: ProcessLauncher (real
	// processes) enforcing memory as EnforceMemory says; SimLauncher for
	// simulated agents.
	Launcher Launcher
	// EnforceMemory is how executors are held to their memory grant:
	// EnforceAuto (the default, ""), EnforceCgroup, EnforceRlimit or
	// EnforceOff. Only for the default launcher.
	EnforceMemory string
	// CgroupParent is the cgroup v2 directory executors' cgroups are
	// created in. Default: the agent's own cgroup, when it is delegated.
	CgroupParent string
	// RelaunchBackoff is the first wait before a supervised driver that
	// exited non-zero is started again; it doubles up to 30s. Default 500ms.
	RelaunchBackoff time.Duration
	// LogMaxBytes, when > 0, rolls each child's stdout and stderr at this
	// size, keeping LogMaxFiles rolled files (Spark's
	// spark.executor.logs.rolling.maxSize and maxRetainedFiles). It
	// configures the default ProcessLauncher only.
	LogMaxBytes int64
	LogMaxFiles int
	// CleanupInterval, when > 0, turns worker cleanup on (Spark's
	// spark.worker.cleanup.enabled and interval): the work dirs of apps and
	// drivers the agent no longer runs whose newest file is older than
	// AppDataTTL (default 7 days, spark.worker.cleanup.appDataTtl) are
	// removed (cleanup.go).
	CleanupInterval time.Duration
	AppDataTTL      time.Duration
	// CommandSkew: a launch or kill that arrives later than its
	// ValidUntil (the end of its sender's lease authority) plus this is
	// refused as stale: it was held in a partitioned link while another
	// scheduler may have taken over. Default 2s; negative: no check.
	CommandSkew time.Duration
	// StopAfterDisconnect chooses what a cut-off agent does with its
	// children (Nomad's disconnect.stop_on_client_after). Zero (the
	// default): it keeps them, the cluster declares the worker DEAD after
	// the worker timeout and replaces them, and both copies run until the
	// link heals (at least once). Positive: once the agent has lost the
	// cluster for this long (no round trip to its NATS server, or no
	// heartbeat acknowledged by a heartbeat service that hears a quorum of
	// the bus) it kills every executor and driver itself, once per loss,
	// and reports them KILLED when the bus is back (at most once, if this
	// plus KillGrace is below the worker timeout).
	StopAfterDisconnect time.Duration
	// Resources are the custom resources offered, name → addresses
	// (--resource gpu=0,1,2,3). ResourceDiscovery names a script per
	// resource printing {"name":..., "addresses":[...]}. Without a gpu
	// resource, nvidia-smi on PATH is asked for GPU indexes unless
	// NoGPUDetect.
	Resources         schemas.Resources
	ResourceDiscovery map[string]string
	NoGPUDetect       bool
	// Labels are the worker's placement labels (--label zone=a).
	Labels schemas.Labels
}

// applyDefaults fills zero fields and validates the result.
func (c *Config) applyDefaults() error {
	if c.NC == nil {
		return errors.New("agent: Config.NC is required")
	}
	if strings.TrimSpace(c.NATSURL) == "" {
		return errors.New("agent: Config.NATSURL is required (children get it as STOKER_NATS_URL)")
	}
	hostname, _ := os.Hostname()
	if c.WorkDir == "" {
		c.WorkDir = DefaultWorkDir
	}
	abs, err := filepath.Abs(c.WorkDir)
	if err != nil {
		return fmt.Errorf("agent: work dir %q: %w", c.WorkDir, err)
	}
	c.WorkDir = abs
	if c.WorkerID == "" {
		if c.WorkerID, err = DefaultWorkerID(c.WorkDir); err != nil {
			return fmt.Errorf("agent: worker id: %w", err)
		}
	}
	if c.PID == 0 {
		c.PID = os.Getpid()
	}
	if err := schemas.ValidID("worker", c.WorkerID); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if c.Host == "" {
		c.Host = hostname
	}
	if len(c.Host) > schemas.MaxHostLen {
		return fmt.Errorf("agent: host is longer than %d characters", schemas.MaxHostLen)
	}
	if c.LogMaxBytes < 0 || c.LogMaxFiles < 0 {
		return errors.New("agent: log rolling size and file count must be >= 0")
	}
	if c.Launcher == nil {
		c.Launcher = ProcessLauncher{LogMaxBytes: c.LogMaxBytes, LogMaxFiles: c.LogMaxFiles}
	}
	if c.CleanupInterval > 0 && c.AppDataTTL <= 0 {
		c.AppDataTTL = DefaultAppDataTTL
	}
	if c.Cores == 0 {
		c.Cores = runtime.NumCPU()
	}
	if c.MemoryMB == 0 {
		c.MemoryMB = defaultMemoryMB()
	}
	if err := schemas.ValidResources("worker", c.Cores, c.MemoryMB); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if c.CommandSkew == 0 {
		c.CommandSkew = DefaultCommandSkew
	}
	if c.StopAfterDisconnect < 0 {
		return fmt.Errorf("agent: StopAfterDisconnect must be >= 0 (0 keeps children), got %s", c.StopAfterDisconnect)
	}
	if err := c.resolveResources(); err != nil {
		return err
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
		n   string
	}{
		{&c.HeartbeatInterval, DefaultHeartbeatInterval, "HeartbeatInterval"},
		{&c.KillGrace, DefaultKillGrace, "KillGrace"},
		{&c.RegisterTimeout, DefaultRegisterTimeout, "RegisterTimeout"},
		{&c.RelaunchBackoff, DefaultRelaunchBackoff, "RelaunchBackoff"},
		{&c.PingWait, DefaultPingWait, "PingWait"},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < 0 {
			return fmt.Errorf("agent: %s must be > 0, got %s", d.n, *d.v)
		}
	}
	return nil
}

// defaultMemoryMB is the machine's total memory minus 1 GiB for the system,
// at least 512 MB (1 GiB when /proc/meminfo cannot be read).
func defaultMemoryMB() int64 {
	total, err := totalMemoryMB("/proc/meminfo")
	if err != nil {
		return 1024
	}
	return max(total-1024, minMemoryMB)
}

// totalMemoryMB reads MemTotal from a meminfo file.
func totalMemoryMB(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: MemTotal %q: %w", path, fields[1], err)
			}
			return kb / 1024, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no MemTotal line", path)
}
