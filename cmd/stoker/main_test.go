package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// testEnv is an env with captured output and the given variables.
func testEnv(vars map[string]string) (*env, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return &env{stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }}, &out, &errb
}

// runCmd runs `stoker args...` with no network: every case here fails or
// succeeds before a connection is made.
func runCmd(t *testing.T, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	e, out, errb := testEnv(vars)
	code := run(context.Background(), e, args)
	return code, out.String(), errb.String()
}

func TestRun_UsageErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no command", nil, "Usage: stoker"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", []string{"workers", "--bogus"}, "flag provided but not defined"},
		{"workers extra args", []string{"workers", "x", "y"}, "takes at most one ID"},
		{"submit empty command", []string{"submit", "--"}, "no command given"},
		{"submit zero cores", []string{"submit", "--driver-cores", "0", "--", "ls"}, "--driver-cores must be > 0"},
		{"submit negative cores", []string{"submit", "--driver-cores=-2", "--", "ls"}, "--driver-cores must be > 0"},
		{"submit bad memory", []string{"submit", "--driver-memory", "lots", "--", "ls"}, "not a number"},
		{"submit zero memory", []string{"submit", "--driver-memory", "0", "--", "ls"}, "at least 1 MB"},
		{"submit bad env", []string{"submit", "--env", "NOEQUALS", "--", "ls"}, "not KEY=VALUE"},
		{"submit blank command", []string{"submit", "--", " "}, "command is empty"},
		{"run no command", []string{"run"}, "no command given"},
		{"run zero cores", []string{"run", "--executor-cores", "0", "--", "sleep", "1"}, "--executor-cores must be > 0"},
		{"run max below executor", []string{"run", "--executor-cores", "4", "--max-cores", "2", "--", "x"}, "--max-cores 2 is less than the cores of one executor"},
		{"run executors over the cap", []string{"run", "--executors", "3", "--executor-cores", "2", "--total-executor-cores", "4", "--", "x"}, "--executors 3 of 2 cores need 6 cores, more than --max-cores 4"},
		{"run negative executors", []string{"run", "--executors=-1", "--", "x"}, "--executors must be between 1 and"},
		{"agent bad enforce-memory", []string{"agent", "--enforce-memory", "lots"}, "--enforce-memory must be one of auto, cgroup, rlimit, off"},
		{"scheduler negative default cores", []string{"scheduler", "--default-cores=-2"}, "--default-cores must be >= 0"},
		{"scheduler zero max launching", []string{"scheduler", "--max-in-flight=0"}, "--max-in-flight must be > 0, or -1"},
		{"bench max launching below -1", []string{"bench", "--max-in-flight=-5"}, "--max-in-flight must be > 0, or -1"},
		{"scheduler zero flow target", []string{"scheduler", "--flow-target=0s"}, "--flow-target must be > 0, or negative"},
		{"bench zero flow target", []string{"bench", "--flow-target=0s"}, "--flow-target must be > 0, or negative"},
		{"run negative max", []string{"run", "--max-cores=-1", "--", "x"}, "--max-cores must be >= 0"},
		{"kill no id", []string{"kill"}, "expected one driver or app id"},
		{"kill bad id", []string{"kill", "worker-1"}, "is not a driver id"},
		{"kill two ids", []string{"kill", "driver-1", "driver-2"}, "expected one"},
		{"logs bad id", []string{"logs", "nope"}, "is not a driver id or <appid>.<execid>"},
		{"logs negative max", []string{"logs", "driver-1", "--max-bytes=-1"}, "--max-bytes must be >= 0"},
		{"up zero workers", []string{"up", "--workers", "0"}, "--workers must be > 0"},
		{"up bad memory", []string{"up", "--memory-per-worker", "2q"}, "not a number"},
		{"up timeout below interval", []string{"up", "--worker-timeout", "1s", "--heartbeat-interval", "2s"}, "must exceed"},
		{"up bad port", []string{"up", "--port", "70000"}, "--port must be"},
		{"up bad retries", []string{"up", "--max-executor-retries", "0"}, "--max-executor-retries must be > 0"},
		{"agent zero cores", []string{"agent", "--cores", "0"}, "--cores must be > 0"},
		{"agent bad id", []string{"agent", "--id", "a.b"}, "--id"},
		{"agent bad memory", []string{"agent", "--memory", "-4g"}, "at least 1 MB"},
		{"agent sim fail rate", []string{"agent", "--simulate", "2", "--sim-fail-rate", "1.5"}, "--sim-fail-rate must be in [0,1]"},
		{"agent sim flags alone", []string{"agent", "--sim-run-time", "1s"}, "need --simulate N"},
		{"bench zero agents", []string{"bench", "--agents", "0"}, "--agents must be > 0"},
		{"bench unknown scenario", []string{"bench", "--scenarios", "speed"}, `unknown "speed"`},
		{"bench dead fraction", []string{"bench", "--dead-fraction", "1"}, "--dead-fraction must be in (0,1)"},
		{"agent sim negative", []string{"agent", "--simulate=-1"}, "--simulate must be >= 0"},
		{"bus needs data", []string{"bus"}, "--data is required"},
		{"init bad replicas", []string{"init", "--replicas", "0"}, "--replicas must be > 0"},
		{"init too many replicas", []string{"init", "--replicas", "7"}, "replicas must be 1..5"},
		{"init lease below minimum", []string{"init", "--lease-ttl", "10ms"}, "below 100ms"},
		{"up replicas on one node", []string{"up", "--replicas", "3"}, "needs a JetStream cluster"},
		{"bus bad lease", []string{"bus", "--data", "x", "--lease-ttl", "0s"}, "--lease-ttl must be > 0"},
		{"registration bad id", []string{"registration", "--id", "bad id"}, "--id"},
		{"recovery bad timeout", []string{"recovery", "--recovery-timeout", "0s"}, "--recovery-timeout must be > 0"},
		{"bad env fallback", []string{"up"}, "STOKER_UP_WORKERS"},
		{"version args", []string{"version", "x"}, "no arguments"},
		{"run bad constraint", []string{"run", "--constraint", "zone~a", "--", "x"}, `constraint "zone~a": want KEY=VALUE or KEY!=VALUE`},
		{"submit bad constraint", []string{"submit", "--constraint", "Zone=a", "--", "x"}, "constraint key"},
		{"run bad resource amount", []string{"run", "--executor-resource", "gpu=0", "--", "x"}, "resource gpu amount must be 1 to"},
		{"submit bad driver resource", []string{"submit", "--driver-resource", "gpu", "--", "x"}, "want NAME=COUNT"},
		{"agent bad resource", []string{"agent", "--resource", "gpu=0,0"}, "lists address \"0\" twice"},
		{"agent bad label", []string{"agent", "--label", "zone"}, "want KEY=VALUE"},
		{"scheduler bad selection policy", []string{"scheduler", "--worker-selection-policy", "MOST_FREE"}, "--worker-selection-policy: worker selection policy \"MOST_FREE\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{}
			if tt.name == "bad env fallback" {
				vars["STOKER_UP_WORKERS"] = "many"
			}
			code, _, stderr := runCmd(t, vars, tt.args...)
			if code != exitUsage {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, exitUsage, stderr)
			}
			if !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.wantErr)
			}
		})
	}
}

var singleDash = regexp.MustCompile(`\n  -[^-]`)

func TestRun_HelpForEveryCommand(t *testing.T) {
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			for _, args := range [][]string{{c.name, "--help"}, {"help", c.name}} {
				code, out, stderr := runCmd(t, nil, args...)
				if code != exitOK {
					t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
				}
				if !strings.Contains(out, "Usage: stoker "+c.name) {
					t.Errorf("%v: help lacks usage line:\n%s", args, out)
				}
				if singleDash.MatchString(out) {
					t.Errorf("%v: help shows single-dash flags:\n%s", args, out)
				}
			}
		})
	}
	code, out, _ := runCmd(t, nil, "help")
	if code != exitOK || !strings.Contains(out, "submit") || !strings.Contains(out, "Exit codes") ||
		!strings.Contains(out, "STOKER_<COMMAND>_<FLAG>") {
		t.Errorf("stoker help: exit %d, output:\n%s", code, out)
	}
	// Each flag's help names the variable it falls back to, and it works.
	_, out, _ = runCmd(t, nil, "init", "--help")
	if !strings.Contains(out, "[$STOKER_INIT_LEASE_TTL]") {
		t.Errorf("init --help lacks the lease TTL's variable:\n%s", out)
	}
	code, _, stderr := runCmd(t, map[string]string{"STOKER_INIT_REPLICAS": "9"}, "init")
	if code != exitUsage || !strings.Contains(stderr, "replicas must be 1..5, got 9") {
		t.Errorf("STOKER_INIT_REPLICAS=9: exit %d, %s", code, stderr)
	}
}

func TestRun_Version(t *testing.T) {
	code, out, _ := runCmd(t, nil, "version")
	if code != exitOK || !strings.HasPrefix(out, "stoker "+svc.Version) {
		t.Errorf("version: exit %d, output %q", code, out)
	}
}

// parseWith runs a command's setup and flag parsing, without running it.
func parseWith(t *testing.T, name string, vars map[string]string, args []string) (*flag.FlagSet, []string, error) {
	t.Helper()
	c := lookup(name)
	if c == nil {
		t.Fatalf("no command %q", name)
	}
	e, _, _ := testEnv(vars)
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.setup(fs, e)
	if err := applyEnv(fs, name, e.getenv); err != nil {
		return fs, nil, err
	}
	pos, err := parseArgs(fs, args, c.interspersed)
	return fs, pos, err
}

func TestBindSubmit_Parse(t *testing.T) {
	tests := []struct {
		name string
		vars map[string]string
		args []string
		want schemas.SubmitDriver
		url  string
		wait bool
	}{
		{
			name: "defaults",
			args: []string{"--", "/bin/pi", "--slices", "4"},
			want: schemas.SubmitDriver{Name: "pi", Command: []string{"/bin/pi", "--slices", "4"}, Cores: 1, MemoryMB: 512},
			url:  bus.DefaultURL,
		},
		{
			name: "everything",
			args: []string{"--name", "job", "--supervise", "--driver-cores", "2", "--driver-memory", "1.5g",
				"--env", "A=1", "--env", "B=x=y", "--wait", "--nats", "nats://h:1", "--", "run.sh"},
			want: schemas.SubmitDriver{Name: "job", Command: []string{"run.sh"}, Env: []string{"A=1", "B=x=y"},
				Cores: 2, MemoryMB: 1536, Supervise: true},
			url: "nats://h:1", wait: true,
		},
		{
			name: "env fallbacks, command line wins",
			vars: map[string]string{"STOKER_NATS_URL": "nats://env:4222", "STOKER_SUBMIT_DRIVER_CORES": "3",
				"STOKER_SUBMIT_DRIVER_MEMORY": "2g"},
			args: []string{"--driver-memory", "1g", "sleep", "1"},
			want: schemas.SubmitDriver{Name: "sleep", Command: []string{"sleep", "1"}, Cores: 3, MemoryMB: 1024},
			url:  "nats://env:4222",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("submit", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			o := &submitOptions{}
			complete := bindSubmit(fs, o)
			if err := applyEnv(fs, "submit", func(k string) string { return tt.vars[k] }); err != nil {
				t.Fatal(err)
			}
			pos, err := parseArgs(fs, tt.args, false)
			if err != nil {
				t.Fatal(err)
			}
			if err := complete(pos); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(o.req, tt.want) {
				t.Errorf("request = %+v\nwant      %+v", o.req, tt.want)
			}
			if o.url.URL != tt.url || o.wait != tt.wait {
				t.Errorf("url, wait = %q, %v; want %q, %v", o.url.URL, o.wait, tt.url, tt.wait)
			}
		})
	}
}

func TestBindRun_Parse(t *testing.T) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o := &runOptions{}
	complete := bindRun(fs, o)
	pos, err := parseArgs(fs, []string{"--executor-cores", "2", "--executor-memory", "1g", "--max-cores", "4", "--", "./exec", "-v"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := complete(pos); err != nil {
		t.Fatal(err)
	}
	want := schemas.RegisterApp{Name: "exec", MaxCores: 4, RunOnce: true,
		Executor: schemas.ExecutorSpec{Command: []string{"./exec", "-v"}, Cores: 2, MemoryMB: 1024}}
	if !reflect.DeepEqual(o.req, want) {
		t.Errorf("request = %+v\nwant      %+v", o.req, want)
	}
	// Without --max-cores: one executor.
	fs = flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o = &runOptions{}
	complete = bindRun(fs, o)
	pos, _ = parseArgs(fs, []string{"--executor-cores", "2", "--", "./exec"}, false)
	if err := complete(pos); err != nil {
		t.Fatal(err)
	}
	if o.req.MaxCores != 2 || !o.req.RunOnce {
		t.Errorf("default run: max cores %d run once %v, want 2 and true", o.req.MaxCores, o.req.RunOnce)
	}
}

// --max-cores is Spark's cap on all cores (issue 9 item 5); --executors is
// the number of copies; --total-executor-cores is Spark's alias.
func TestBindRun_ExecutorsAndMaxCores(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		maxCores int // what the request asks: executors × cores
		note     string
	}{
		{"executors", []string{"--executors", "3"}, 3, ""},
		{"executors of 2 cores", []string{"--executors", "3", "--executor-cores", "2"}, 6, ""},
		{"executors under the cap", []string{"--executors", "2", "--max-cores", "8"}, 2, ""},
		{"max cores alone derives", []string{"--max-cores", "4"}, 4, "--max-cores 4 with 1 core per executor: 4 executor(s)"},
		{"spark's alias", []string{"--total-executor-cores", "5", "--executor-cores", "2"}, 4, "--max-cores 5 with 2 cores per executor: 2 executor(s)"},
		{"neither: one", nil, 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("run", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			o := &runOptions{}
			complete := bindRun(fs, o)
			pos, err := parseArgs(fs, append(tc.args, "--", "sleep", "1"), false)
			if err != nil {
				t.Fatal(err)
			}
			if err := complete(pos); err != nil {
				t.Fatal(err)
			}
			if o.req.MaxCores != tc.maxCores || !o.req.RunOnce {
				t.Errorf("max cores %d run once %v, want %d and true", o.req.MaxCores, o.req.RunOnce, tc.maxCores)
			}
			if !strings.HasPrefix(o.note, tc.note) || (tc.note == "") != (o.note == "") {
				t.Errorf("note %q, want one starting %q", o.note, tc.note)
			}
		})
	}
}

func TestBindUp_Defaults(t *testing.T) {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o := &upOptions{}
	complete := bindUp(fs, o)
	pos, err := parseArgs(fs, []string{"--workers", "3", "--memory-per-worker", "1g", "--spread-out=false"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := complete(pos); err != nil {
		t.Fatal(err)
	}
	if o.workers != 3 || o.memoryPerWorkerMB != 1024 || !o.sched.consolidate || o.port != 4222 || o.data != "./data" ||
		o.sched.maxRetries != 10 || o.coresPerWorker <= 0 || o.live.heartbeat != time.Second || o.live.workerTimeout != 5*time.Second ||
		o.store.LeaseTTL != 10*time.Second || o.store.Replicas != 1 {
		t.Errorf("options = %+v", o)
	}
}

func TestParseArgs_Interspersed(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantPos []string
		stderr  bool
	}{
		{"flag after id", []string{"driver-1", "--stderr"}, []string{"driver-1"}, true},
		{"flag before id", []string{"--stderr", "driver-1"}, []string{"driver-1"}, true},
		{"double dash", []string{"--", "--stderr"}, []string{"--stderr"}, false},
		{"no flags", []string{"a", "b"}, []string{"a", "b"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("logs", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			stderr := fs.Bool("stderr", false, "")
			pos, err := parseArgs(fs, tt.args, true)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(pos, tt.wantPos) || *stderr != tt.stderr {
				t.Errorf("pos, stderr = %q, %v; want %q, %v", pos, *stderr, tt.wantPos, tt.stderr)
			}
		})
	}
}

func TestKillTarget(t *testing.T) {
	for _, id := range []string{"driver-20260101000000-abcdef", "app-20260101000000-abcdef"} {
		if got, err := killTarget([]string{id}); err != nil || got != id {
			t.Errorf("killTarget(%q) = %q, %v", id, got, err)
		}
	}
}

func TestEnvName(t *testing.T) {
	tests := []struct{ cmd, flag, want string }{
		{"submit", "nats", "STOKER_NATS_URL"},
		{"agent", "log-level", "STOKER_LOG_LEVEL"},
		{"agent", "cores", "STOKER_AGENT_CORES"},
		{"up", "memory-per-worker", "STOKER_UP_MEMORY_PER_WORKER"},
	}
	for _, tt := range tests {
		if got := envName(tt.cmd, tt.flag); got != tt.want {
			t.Errorf("envName(%q, %q) = %q, want %q", tt.cmd, tt.flag, got, tt.want)
		}
	}
}

func TestUpWorkerID(t *testing.T) {
	long := strings.Repeat("h", 80)
	if got := upWorkerID(long, 12); len(got) > schemas.MaxIDLen || !strings.HasSuffix(got, "-12") {
		t.Errorf("upWorkerID(long) = %q", got)
	}
	if got := upWorkerID("box", 1); got != "box-1" {
		t.Errorf("upWorkerID(box, 1) = %q", got)
	}
}
