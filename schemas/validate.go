package schemas

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Bounds on what a request may carry. They keep one bad client from filling
// a KV value (1 MiB max on default servers) or a process table.
const (
	MaxIDLen       = 64
	MaxNameLen     = 128
	MaxHostLen     = 255
	MaxArgs        = 256
	MaxArgLen      = 4096
	MaxEnv         = 128
	MaxEnvLen      = 4096
	MaxCores       = 4096
	MaxMemoryMB    = 64 << 20 // 64 TiB
	MaxReportItems = 10000
	// MaxExecutorsRequested bounds an elastic app's requested total.
	MaxExecutorsRequested = 100000
	// MaxKillExecutors bounds the executor ids an app record keeps to kill.
	MaxKillExecutors = 1000
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid request")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// idChars reports whether s is a NATS subject token and a KV key at once
// (no dots, wildcards or spaces): ^[A-Za-z0-9][A-Za-z0-9_-]*$. A loop, not
// a regexp: every executor record read is checked by its ids, and the
// regexp was 1.4 % of the CPU placing 100,000 executors (issue 12).
// FuzzValidID holds it to the expression.
func idChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case (c == '-' || c == '_') && i > 0:
		default:
			return false
		}
	}
	return len(s) > 0
}

// ValidID checks that s can be used as a worker, app or driver id.
func ValidID(kind, s string) error {
	if s == "" {
		return invalid("%s id is empty", kind)
	}
	if len(s) > MaxIDLen {
		return invalid("%s id %.20q... is longer than %d characters", kind, s, MaxIDLen)
	}
	if !idChars(s) {
		return invalid("%s id %q must start with a letter or digit and use only letters, digits, '-' and '_'", kind, s)
	}
	return nil
}

// ValidAppID checks an application id (app-...).
func ValidAppID(s string) error {
	if err := ValidID("app", s); err != nil {
		return err
	}
	if !strings.HasPrefix(s, AppIDPrefix) {
		return invalid("app id %q must start with %q", s, AppIDPrefix)
	}
	return nil
}

// ValidDriverID checks a driver id (driver-...).
func ValidDriverID(s string) error {
	if err := ValidID("driver", s); err != nil {
		return err
	}
	if !strings.HasPrefix(s, DriverIDPrefix) {
		return invalid("driver id %q must start with %q", s, DriverIDPrefix)
	}
	return nil
}

// ValidResources checks cores and memory.
func ValidResources(what string, cores int, memoryMB int64) error {
	if cores <= 0 {
		return invalid("%s cores must be > 0, got %d", what, cores)
	}
	if cores > MaxCores {
		return invalid("%s cores must be <= %d, got %d", what, MaxCores, cores)
	}
	if memoryMB <= 0 {
		return invalid("%s memory must be > 0, got %d MB", what, memoryMB)
	}
	if memoryMB > MaxMemoryMB {
		return invalid("%s memory must be <= %d MB, got %d", what, int64(MaxMemoryMB), memoryMB)
	}
	return nil
}

// ValidCommand checks an argv and an environment list (KEY=VALUE).
func ValidCommand(what string, argv, env []string) error {
	if len(argv) == 0 || strings.TrimSpace(argv[0]) == "" {
		return invalid("%s command is empty", what)
	}
	if len(argv) > MaxArgs {
		return invalid("%s command has %d arguments, at most %d", what, len(argv), MaxArgs)
	}
	for i, a := range argv {
		if len(a) > MaxArgLen {
			return invalid("%s argument %d is longer than %d bytes", what, i, MaxArgLen)
		}
	}
	if len(env) > MaxEnv {
		return invalid("%s has %d environment entries, at most %d", what, len(env), MaxEnv)
	}
	for _, e := range env {
		if len(e) > MaxEnvLen {
			return invalid("%s environment entry is longer than %d bytes", what, MaxEnvLen)
		}
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return invalid("%s environment entry %q is not KEY=VALUE", what, e)
		}
	}
	return nil
}

func validName(what, s string) error {
	if len(s) > MaxNameLen {
		return invalid("%s is longer than %d characters", what, MaxNameLen)
	}
	return nil
}

// Validate checks a worker registration.
func (m *RegisterWorker) Validate() error {
	if err := ValidID("worker", m.WorkerID); err != nil {
		return err
	}
	if m.Instance == "" || len(m.Instance) > MaxIDLen {
		return invalid("instance must be 1 to %d characters", MaxIDLen)
	}
	if len(m.Host) > MaxHostLen {
		return invalid("host is longer than %d characters", MaxHostLen)
	}
	if err := ValidResources("worker", m.Cores, m.MemoryMB); err != nil {
		return err
	}
	if len(m.Executors)+len(m.Drivers) > MaxReportItems {
		return invalid("registration lists more than %d executors and drivers", MaxReportItems)
	}
	if err := m.Resources.Validate(); err != nil {
		return err
	}
	return m.Labels.Validate()
}

// Validate checks a heartbeat.
func (m *Heartbeat) Validate() error { return ValidID("worker", m.WorkerID) }

// Validate checks a leaving notice.
func (m *WorkerLeaving) Validate() error { return ValidID("worker", m.WorkerID) }

// Validate checks a driver submission.
func (m *SubmitDriver) Validate() error {
	if err := validName("driver name", m.Name); err != nil {
		return err
	}
	if err := ValidResources("driver", m.Cores, m.MemoryMB); err != nil {
		return err
	}
	if err := m.Resources.Validate(); err != nil {
		return err
	}
	if err := ValidConstraints(m.Constraints); err != nil {
		return err
	}
	if err := ValidArtifacts("driver", m.Artifacts); err != nil {
		return err
	}
	return ValidCommand("driver", m.Command, m.Env)
}

// Validate checks an application registration.
func (m *RegisterApp) Validate() error {
	if err := validName("app name", m.Name); err != nil {
		return err
	}
	if m.DriverID != "" {
		if err := ValidDriverID(m.DriverID); err != nil {
			return err
		}
	}
	if err := ValidResources("executor", m.Executor.Cores, m.Executor.MemoryMB); err != nil {
		return err
	}
	if m.MaxCores < 0 {
		return invalid("max cores must be >= 0 (0 means no cap), got %d", m.MaxCores)
	}
	if m.RunOnce && m.MaxCores == 0 {
		return invalid("run_once needs max_cores (how many executors run the command once)")
	}
	if m.MaxCores > 0 && m.MaxCores < m.Executor.Cores {
		return invalid("max cores %d is less than the cores of one executor (%d)", m.MaxCores, m.Executor.Cores)
	}
	if err := m.Executor.Resources.Validate(); err != nil {
		return err
	}
	if err := ValidConstraints(m.Constraints); err != nil {
		return err
	}
	if m.InitialExecutors < 0 || m.InitialExecutors > MaxExecutorsRequested {
		return invalid("initial executors must be 0 to %d, got %d", MaxExecutorsRequested, m.InitialExecutors)
	}
	if err := ValidArtifacts("executor", m.Executor.Artifacts); err != nil {
		return err
	}
	return ValidCommand("executor", m.Executor.Command, m.Executor.Env)
}

// Validate checks an unregistration.
func (m *UnregisterApp) Validate() error {
	if err := ValidAppID(m.AppID); err != nil {
		return err
	}
	switch m.State {
	case "", AppFinished, AppFailed, AppKilled:
		return nil
	}
	return invalid("final app state must be FINISHED, FAILED or KILLED, got %q", m.State)
}

// Validate checks an executor request.
func (m *ExecutorRequest) Validate() error {
	if err := ValidAppID(m.AppID); err != nil {
		return err
	}
	if m.Total == nil && len(m.Kill) == 0 {
		return invalid("executor request names neither total nor kill")
	}
	if m.Total != nil && (*m.Total < 0 || *m.Total > MaxExecutorsRequested) {
		return invalid("total executors must be 0 to %d, got %d", MaxExecutorsRequested, *m.Total)
	}
	if len(m.Kill) > MaxKillExecutors {
		return invalid("at most %d executors to kill at once, got %d", MaxKillExecutors, len(m.Kill))
	}
	for _, id := range m.Kill {
		if id < 0 {
			return invalid("executor id must be >= 0, got %d", id)
		}
	}
	return nil
}

// Validate checks a kill request.
func (m *KillRequest) Validate() error {
	if strings.HasPrefix(m.ID, DriverIDPrefix) {
		return ValidDriverID(m.ID)
	}
	return ValidAppID(m.ID)
}

// Validate checks an app heartbeat.
func (m *AppHeartbeat) Validate() error { return ValidAppID(m.AppID) }

// Validate checks a list request.
func (m *ListRequest) Validate() error {
	if len(m.IDs) > MaxReportItems {
		return invalid("at most %d ids", MaxReportItems)
	}
	if len(m.States) > 16 {
		return invalid("at most 16 states")
	}
	for _, st := range m.States {
		if len(st) == 0 || len(st) > 32 {
			return invalid("state %q: not a state name", st)
		}
	}
	return nil
}

// Validate checks a cordon request.
func (m *CordonRequest) Validate() error { return ValidID("worker", m.WorkerID) }

// Validate checks a drain request.
func (m *DrainRequest) Validate() error {
	if err := ValidID("worker", m.WorkerID); err != nil {
		return err
	}
	if m.DeadlineMS < 0 || m.DeadlineMS > MaxDrainDeadline.Milliseconds() {
		return invalid("deadline must be between 0 and %s, got %dms", MaxDrainDeadline, m.DeadlineMS)
	}
	if len(m.Instance) > 128 {
		return invalid("instance too long")
	}
	return nil
}

// Validate checks a launch command.
func (m *LaunchExecutor) Validate() error {
	if err := ValidAppID(m.AppID); err != nil {
		return err
	}
	if m.ExecutorID < 0 {
		return invalid("executor id must be >= 0")
	}
	if err := ValidResources("executor", m.Cores, m.MemoryMB); err != nil {
		return err
	}
	if err := m.Resources.Validate(); err != nil {
		return err
	}
	if err := ValidArtifacts("executor", m.Artifacts); err != nil {
		return err
	}
	return ValidCommand("executor", m.Command, m.Env)
}

// Validate checks a batch of executor launches: 1 to MaxLaunchBatch, each
// valid as a launch of its own.
func (m *LaunchExecutors) Validate() error {
	return validBatch("launches", m.Launches, MaxLaunchBatch, (*LaunchExecutor).Validate)
}

// Validate checks a driver launch command.
func (m *LaunchDriver) Validate() error {
	if err := ValidDriverID(m.DriverID); err != nil {
		return err
	}
	if err := ValidResources("driver", m.Cores, m.MemoryMB); err != nil {
		return err
	}
	if err := m.Resources.Validate(); err != nil {
		return err
	}
	if err := ValidArtifacts("driver", m.Artifacts); err != nil {
		return err
	}
	return ValidCommand("driver", m.Command, m.Env)
}

// Validate checks a kill command.
func (m *Kill) Validate() error {
	if (m.DriverID == "") == (m.AppID == "") {
		return invalid("kill names exactly one of driver_id or app_id")
	}
	if m.DriverID != "" {
		return ValidDriverID(m.DriverID)
	}
	return ValidAppID(m.AppID)
}

// Validate checks a batch of kills: 1 to MaxKillBatch, each valid as a
// kill of its own.
func (m *KillExecutors) Validate() error {
	return validBatch("kills", m.Kills, MaxKillBatch, (*Kill).Validate)
}

// Validate checks a master-changed command.
func (m *MasterChanged) Validate() error {
	if m.Epoch == 0 {
		return invalid("epoch must be > 0")
	}
	return nil
}

// Validate checks a worker's recovery answer.
func (m *WorkerReport) Validate() error {
	if err := ValidID("worker", m.WorkerID); err != nil {
		return err
	}
	if len(m.Executors)+len(m.Drivers) > MaxReportItems {
		return invalid("report lists more than %d executors and drivers", MaxReportItems)
	}
	return nil
}

// Validate checks a batch of state reports: 1 to MaxStateBatch, each
// valid alone.
func (m *StateChanges) Validate() error {
	return validBatch("reports", m.Reports, MaxStateBatch, (*StateChange).Validate)
}

// validBatch checks a batch of 1 to most items, each valid alone.
func validBatch[T any](noun string, items []T, most int, valid func(*T) error) error {
	if len(items) == 0 || len(items) > most {
		return invalid("a batch holds 1 to %d %s, not %d", most, noun, len(items))
	}
	for i := range items {
		if err := valid(&items[i]); err != nil {
			return fmt.Errorf("%s %d: %w", strings.TrimSuffix(noun, "s"), i, err)
		}
	}
	return nil
}

// Validate checks a state change report.
func (m *StateChange) Validate() error {
	if err := ValidID("worker", m.WorkerID); err != nil {
		return err
	}
	switch {
	case m.DriverID != "" && m.AppID == "":
		if err := ValidDriverID(m.DriverID); err != nil {
			return err
		}
		switch DriverState(m.State) {
		case DriverRunning, DriverRelaunching, DriverFinished, DriverFailed, DriverKilled, DriverError:
			return nil
		}
		return invalid("driver state %q is not one an agent reports", m.State)
	case m.AppID != "" && m.DriverID == "":
		if err := ValidAppID(m.AppID); err != nil {
			return err
		}
		switch ExecutorState(m.State) {
		case ExecutorRunning, ExecutorExited, ExecutorFailed, ExecutorKilled:
			return nil
		}
		return invalid("executor state %q is not one an agent reports", m.State)
	}
	return invalid("state change names exactly one of driver_id or app_id")
}

// Validate checks a logs request.
func (m *LogsRequest) Validate() error {
	if m.MaxBytes < 0 {
		return invalid("max_bytes must be >= 0")
	}
	if strings.HasPrefix(m.ID, DriverIDPrefix) {
		return ValidDriverID(m.ID)
	}
	_, _, err := ParseExecutorKey(m.ID)
	return err
}

// ParseMemoryMB parses sizes such as 512m, 4g, 1.5g, 2048 (megabytes) or
// 1024k into megabytes.
func ParseMemoryMB(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "b")
	if t == "" {
		return 0, invalid("size is empty (try 512m or 4g)")
	}
	mult := 1.0
	switch t[len(t)-1] {
	case 'k':
		mult = 1.0 / 1024
	case 'm':
		mult = 1
	case 'g':
		mult = 1024
	case 't':
		mult = 1024 * 1024
	}
	if mult != 1 || t[len(t)-1] == 'm' {
		t = t[:len(t)-1]
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f != f {
		return 0, invalid("size %q is not a number with an optional k, m, g or t suffix (try 512m or 4g)", s)
	}
	mb := int64(f * mult)
	if mb <= 0 {
		return 0, invalid("size %q must be at least 1 MB", s)
	}
	if mb > MaxMemoryMB {
		return 0, invalid("size %q is larger than %d MB", s, int64(MaxMemoryMB))
	}
	return mb, nil
}

// FormatMemoryMB renders megabytes for people: 512M, 4.0G.
func FormatMemoryMB(mb int64) string {
	if mb >= 1024 && mb%1024 == 0 {
		return fmt.Sprintf("%dG", mb/1024)
	}
	if mb >= 1024 {
		return fmt.Sprintf("%.1fG", float64(mb)/1024)
	}
	return fmt.Sprintf("%dM", mb)
}

// FormatCores renders a number of cores for people: "1 core", "4 cores".
func FormatCores(n int) string {
	if n == 1 {
		return "1 core"
	}
	return fmt.Sprintf("%d cores", n)
}
