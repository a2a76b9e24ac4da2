package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/services/svc"
)

// Environment fallbacks. --nats reads STOKER_NATS_URL and --log-level
// STOKER_LOG_LEVEL; every other flag reads STOKER_<COMMAND>_<FLAG>, e.g.
// STOKER_AGENT_CORES for `stoker agent --cores`. The command's own prefix
// keeps them apart from the STOKER_CORES an agent gives its children.
const (
	envNATSURL  = schemas.EnvNATSURL
	envLogLevel = "STOKER_LOG_LEVEL"
)

// envName is the environment variable a flag falls back to.
func envName(cmd, flagName string) string {
	switch flagName {
	case "nats":
		return envNATSURL
	case "creds":
		return envCreds
	case "tls-ca":
		return envTLSCA
	case "log-level":
		return envLogLevel
	}
	up := func(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }
	return "STOKER_" + up(cmd) + "_" + up(flagName)
}

// listValue marks flags that accumulate (--env K=V ...); they take no
// environment fallback, since a fallback would mix with the command line.
type listValue interface{ isList() }

// applyEnv sets each flag from its environment variable, before the command
// line is parsed so that the command line wins.
func applyEnv(fs *flag.FlagSet, cmd string, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil {
			return
		}
		if _, ok := f.Value.(listValue); ok {
			return
		}
		name := envName(cmd, f.Name)
		v := getenv(name)
		if v == "" {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = usagef("%s=%q: %v", name, v, e)
		}
	})
	return err
}

// parseArgs parses flags and returns the positional arguments. With
// interspersed, flags may also follow positional arguments; "--" ends flags
// either way.
func parseArgs(fs *flag.FlagSet, args []string, interspersed bool) ([]string, error) {
	if !interspersed {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		return fs.Args(), nil
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// sizeFlag is a memory size in megabytes, given as 512m, 4g, 2048.
type sizeFlag int64

func (s *sizeFlag) String() string {
	if s == nil || *s == 0 {
		return ""
	}
	return strings.ToLower(schemas.FormatMemoryMB(int64(*s)))
}

func (s *sizeFlag) Set(v string) error {
	mb, err := schemas.ParseMemoryMB(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(mb)
	return nil
}

func sizeVar(fs *flag.FlagSet, name string, defMB int64, usage string) *sizeFlag {
	s := sizeFlag(defMB)
	fs.Var(&s, name, usage)
	return &s
}

// offDuration is a duration flag where "off" (or 0) means zero.
type offDuration time.Duration

func (d *offDuration) String() string {
	if *d == 0 {
		return "off"
	}
	return time.Duration(*d).String()
}

func (d *offDuration) Set(v string) error {
	if v == "off" || v == "0" {
		*d = 0
		return nil
	}
	x, err := time.ParseDuration(v)
	if err != nil || x < 0 {
		return fmt.Errorf("want a duration like 4s, or off")
	}
	*d = offDuration(x)
	return nil
}

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}
func (*listFlag) isList() {}

// jsonFlag declares --json.
func jsonFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("json", false, "print JSON for scripts instead of a table")
}

// logLevelFlag declares --log-level (STOKER_LOG_LEVEL).
func logLevelFlag(fs *flag.FlagSet) *string {
	return fs.String("log-level", "info", "log level: trace, debug, info, warn, error [$"+envLogLevel+"]")
}

// newLogger builds the stderr logger of a service command.
func newLogger(e *env, level string) (zerolog.Logger, error) {
	l, err := svc.NewLogger(e.stderr, level)
	if err != nil {
		return l, usagef("--log-level %q: %v", level, err)
	}
	return l, nil
}

// writeJSON prints v indented, for --json.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// positive checks a count flag.
func positive(name string, v int) error {
	if v <= 0 {
		return usagef("--%s must be > 0, got %d", name, v)
	}
	return nil
}

// needSize checks that a size flag was given a value.
func needSize(name string, v *sizeFlag) error {
	if *v <= 0 {
		return usagef("--%s is required (e.g. 512m or 4g)", name)
	}
	return nil
}

// envList validates KEY=VALUE entries.
func envList(l listFlag) ([]string, error) {
	for _, kv := range l {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, usagef("--env %q is not KEY=VALUE", kv)
		}
	}
	return []string(l), nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// printFlags lists flags GNU style (--name), with defaults and the
// environment variable each falls back to.
func printFlags(w io.Writer, cmd string, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		if _, ok := f.Value.(*sizeFlag); ok {
			typ = "size"
		}
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintln(w, line)
		extra := ""
		switch f.DefValue {
		case "", "0", "0s", "false", "[]":
		default:
			extra = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		if _, ok := f.Value.(listValue); !ok {
			if name := envName(cmd, f.Name); !strings.Contains(usage, name) {
				extra += " [$" + name + "]"
			}
		}
		fmt.Fprintf(w, "        %s%s\n", strings.ReplaceAll(usage, "\n", "\n        "), extra)
	})
}

// resourcesFlag collects --resource NAME=ADDR[,ADDR...] (repeatable).
type resourcesFlag schemas.Resources

func (r *resourcesFlag) String() string { return schemas.Resources(*r).String() }
func (r *resourcesFlag) Set(v string) error {
	name, addrs, err := schemas.ParseResourceAddrs(v)
	if err != nil {
		return err
	}
	if *r == nil {
		*r = resourcesFlag{}
	}
	if _, dup := (*r)[name]; dup {
		return fmt.Errorf("resource %s given twice", name)
	}
	(*r)[name] = addrs
	return nil
}
func (*resourcesFlag) isList() {}

// amountsFlag collects --executor-resource / --driver-resource NAME=COUNT.
type amountsFlag schemas.Amounts

func (a *amountsFlag) String() string { return schemas.Amounts(*a).String() }
func (a *amountsFlag) Set(v string) error {
	name, n, err := schemas.ParseResourceAmount(v)
	if err != nil {
		return err
	}
	if *a == nil {
		*a = amountsFlag{}
	}
	(*a)[name] = n
	return nil
}
func (*amountsFlag) isList() {}

// discoveryFlag collects --resource-discovery NAME=SCRIPT.
type discoveryFlag map[string]string

func (d *discoveryFlag) String() string {
	var parts []string
	for k, v := range *d {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, " ")
}
func (d *discoveryFlag) Set(v string) error {
	name, script, ok := strings.Cut(v, "=")
	if !ok || name == "" || script == "" {
		return fmt.Errorf("resource discovery %q: want NAME=SCRIPT, e.g. gpu=/opt/spark/getGpus.sh", v)
	}
	if err := (schemas.Amounts{name: 1}).Validate(); err != nil {
		return fmt.Errorf("resource discovery %q: %w", v, err)
	}
	if *d == nil {
		*d = discoveryFlag{}
	}
	(*d)[name] = script
	return nil
}
func (*discoveryFlag) isList() {}

// labelsFlag collects --label KEY=VALUE[,KEY=VALUE...] (repeatable).
type labelsFlag schemas.Labels

func (l *labelsFlag) String() string { return schemas.Labels(*l).String() }
func (l *labelsFlag) Set(v string) error {
	if *l == nil {
		*l = labelsFlag{}
	}
	return schemas.ParseLabels(schemas.Labels(*l), v)
}
func (*labelsFlag) isList() {}

// constraintsFlag collects --constraint KEY=VALUE or KEY!=VALUE (repeatable).
type constraintsFlag []string

func (c *constraintsFlag) String() string { return strings.Join(*c, ",") }
func (c *constraintsFlag) Set(v string) error {
	if _, err := schemas.ParseConstraint(v); err != nil {
		return err
	}
	*c = append(*c, v)
	return nil
}
func (*constraintsFlag) isList() {}
