package schemas

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Custom resources (Spark 3.0's resource scheduling) and placement rules
// (worker labels and constraints): the wire shapes, their validation and
// the pure matching the scheduler uses.

// Bounds on resources and labels.
const (
	MaxResourceNames  = 16
	MaxAddresses      = 1024
	MaxAddressLen     = 64
	MaxLabels         = 32
	MaxLabelLen       = 64
	MaxConstraints    = 16
	MaxResourceAmount = MaxAddresses
)

// ResourceGPU is the resource name agents detect with nvidia-smi and whose
// addresses an executor also gets as CUDA_VISIBLE_DEVICES.
const ResourceGPU = "gpu"

// Resources maps a resource name to addresses (what a worker offers, what
// an executor was given). Addresses are opaque strings ("0", "1", "mig-3").
type Resources map[string][]string

// Amounts maps a resource name to how many addresses one executor (or a
// driver) needs.
type Amounts map[string]int

// nameRE is a resource name or a label key: lower-case, as Spark's
// spark.worker.resource.<name>.
var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)

// labelValueRE is a label value: no separators of the flag syntax.
var labelValueRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`)

func validKey(what, s string) error {
	if s == "" || len(s) > MaxLabelLen || !nameRE.MatchString(s) {
		return invalid("%s %q must be 1 to %d characters: a lower-case letter, then letters, digits, '-' or '_'", what, s, MaxLabelLen)
	}
	return nil
}

// Validate checks names and addresses: at most MaxResourceNames names,
// each with 1 to MaxAddresses distinct addresses without ',' or spaces.
func (r Resources) Validate() error {
	if len(r) > MaxResourceNames {
		return invalid("at most %d resource names, got %d", MaxResourceNames, len(r))
	}
	for name, addrs := range r {
		if err := validKey("resource name", name); err != nil {
			return err
		}
		if len(addrs) == 0 || len(addrs) > MaxAddresses {
			return invalid("resource %s must have 1 to %d addresses, got %d", name, MaxAddresses, len(addrs))
		}
		seen := make(map[string]bool, len(addrs))
		for _, a := range addrs {
			if a == "" || len(a) > MaxAddressLen || strings.ContainsAny(a, ", \t\n=") {
				return invalid("resource %s address %q must be 1 to %d characters without ',', '=' or spaces", name, a, MaxAddressLen)
			}
			if seen[a] {
				return invalid("resource %s lists address %q twice", name, a)
			}
			seen[a] = true
		}
	}
	return nil
}

// Count is the number of addresses of each name.
func (r Resources) Count(name string) int { return len(r[name]) }

// String is "gpu=0,1 fpga=a" with names sorted (the flag syntax).
func (r Resources) String() string {
	var parts []string
	for _, n := range sortedKeys(r) {
		parts = append(parts, n+"="+strings.Join(r[n], ","))
	}
	return strings.Join(parts, " ")
}

// Validate checks names and amounts (1 to MaxResourceAmount).
func (a Amounts) Validate() error {
	if len(a) > MaxResourceNames {
		return invalid("at most %d resource names, got %d", MaxResourceNames, len(a))
	}
	for name, n := range a {
		if err := validKey("resource name", name); err != nil {
			return err
		}
		if n <= 0 || n > MaxResourceAmount {
			return invalid("resource %s amount must be 1 to %d, got %d", name, MaxResourceAmount, n)
		}
	}
	return nil
}

// String is "gpu=1 fpga=2" with names sorted (the flag syntax).
func (a Amounts) String() string {
	var parts []string
	for _, n := range sortedKeys(a) {
		parts = append(parts, n+"="+strconv.Itoa(a[n]))
	}
	return strings.Join(parts, " ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ParseResourceAddrs parses one --resource flag, "gpu=0,1,2,3".
func ParseResourceAddrs(s string) (string, []string, error) {
	name, list, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok || name == "" || list == "" {
		return "", nil, fmt.Errorf("resource %q: want NAME=ADDR[,ADDR...], e.g. gpu=0,1,2,3", s)
	}
	addrs := strings.Split(list, ",")
	for i := range addrs {
		addrs[i] = strings.TrimSpace(addrs[i])
	}
	if err := (Resources{name: addrs}).Validate(); err != nil {
		return "", nil, fmt.Errorf("resource %q: %w", s, err)
	}
	return name, addrs, nil
}

// ParseResourceAmount parses one --executor-resource/--driver-resource
// flag, "gpu=1".
func ParseResourceAmount(s string) (string, int, error) {
	name, num, ok := strings.Cut(strings.TrimSpace(s), "=")
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if !ok || name == "" || err != nil {
		return "", 0, fmt.Errorf("resource amount %q: want NAME=COUNT, e.g. gpu=1", s)
	}
	if err := (Amounts{name: n}).Validate(); err != nil {
		return "", 0, fmt.Errorf("resource amount %q: %w", s, err)
	}
	return name, n, nil
}

// DiscoveredResource is what a discovery script prints: Spark's
// ResourceInformation JSON, {"name":"gpu","addresses":["0","1"]}.
type DiscoveredResource struct {
	Name      string   `json:"name"`
	Addresses []string `json:"addresses"`
}

// ParseDiscovery parses a discovery script's output for the resource want.
func ParseDiscovery(want string, out []byte) ([]string, error) {
	var d DiscoveredResource
	if err := json.Unmarshal(out, &d); err != nil {
		return nil, fmt.Errorf(`discovery output is not {"name":%q,"addresses":[...]}: %v`, want, err)
	}
	if d.Name != want {
		return nil, fmt.Errorf("discovery output names resource %q, want %q", d.Name, want)
	}
	if err := (Resources{want: d.Addresses}).Validate(); err != nil {
		return nil, err
	}
	return d.Addresses, nil
}

// ---- Labels and constraints --------------------------------------------

// Labels are a worker's key=value labels (`stoker agent --label zone=a`).
type Labels map[string]string

// Validate checks label keys and values.
func (l Labels) Validate() error {
	if len(l) > MaxLabels {
		return invalid("at most %d labels, got %d", MaxLabels, len(l))
	}
	for k, v := range l {
		if err := validKey("label key", k); err != nil {
			return err
		}
		if len(v) > MaxLabelLen || !labelValueRE.MatchString(v) {
			return invalid("label %s value %q must be 1 to %d characters: letters, digits, '.', '_', '/', '-'", k, v, MaxLabelLen)
		}
	}
	return nil
}

// String is "disk=ssd,zone=a" (the flag syntax, keys sorted).
func (l Labels) String() string {
	var parts []string
	for _, k := range sortedKeys(l) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

// ParseLabels parses "zone=a,disk=ssd" into l (repeated flags add up).
func ParseLabels(l Labels, s string) error {
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return fmt.Errorf("label %q: want KEY=VALUE[,KEY=VALUE...], e.g. zone=a,disk=ssd", kv)
		}
		if err := (Labels{k: v}).Validate(); err != nil {
			return fmt.Errorf("label %q: %w", kv, err)
		}
		l[k] = v
	}
	return nil
}

// Constraint is one placement rule on worker labels: "zone=a" (the worker
// has label zone with value a) or "zone!=a" (it has not: a worker without
// the label matches).
type Constraint struct {
	Key   string
	Value string
	Not   bool
}

// ParseConstraint parses "key=value" or "key!=value".
func ParseConstraint(s string) (Constraint, error) {
	var c Constraint
	k, v, ok := strings.Cut(s, "!=")
	if ok {
		c.Not = true
	} else if k, v, ok = strings.Cut(s, "="); !ok {
		return c, invalid("constraint %q: want KEY=VALUE or KEY!=VALUE, e.g. zone=a", s)
	}
	c.Key, c.Value = strings.TrimSpace(k), strings.TrimSpace(v)
	if err := validKey("constraint key", c.Key); err != nil {
		return c, invalid("constraint %q: %v", s, err)
	}
	if len(c.Value) > MaxLabelLen || !labelValueRE.MatchString(c.Value) {
		return c, invalid("constraint %q: value must be 1 to %d characters: letters, digits, '.', '_', '/', '-'", s, MaxLabelLen)
	}
	return c, nil
}

// String is the constraint's syntax.
func (c Constraint) String() string {
	if c.Not {
		return c.Key + "!=" + c.Value
	}
	return c.Key + "=" + c.Value
}

// Match reports whether a worker with labels l satisfies c.
func (c Constraint) Match(l Labels) bool {
	v, ok := l[c.Key]
	return (ok && v == c.Value) != c.Not
}

// ValidConstraints checks a list of constraints as they travel (strings).
func ValidConstraints(cs []string) error {
	if len(cs) > MaxConstraints {
		return invalid("at most %d constraints, got %d", MaxConstraints, len(cs))
	}
	for _, s := range cs {
		if _, err := ParseConstraint(s); err != nil {
			return err
		}
	}
	return nil
}

// ParseConstraints parses valid constraint strings; a bad one is skipped
// (records are validated on the way in).
func ParseConstraints(cs []string) []Constraint {
	out := make([]Constraint, 0, len(cs))
	for _, s := range cs {
		if c, err := ParseConstraint(s); err == nil {
			out = append(out, c)
		}
	}
	return out
}

// MatchAll reports whether labels satisfy every constraint.
func MatchAll(cs []Constraint, l Labels) bool {
	for _, c := range cs {
		if !c.Match(l) {
			return false
		}
	}
	return true
}

// ---- Environment ---------------------------------------------------------

// ResourceEnv is the variable carrying one resource's addresses to a
// child: STOKER_RESOURCE_<NAME> (upper case, '-' as '_').
func ResourceEnv(name string) string {
	return EnvResourcePrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// ResourceVars are the environment entries for assigned addresses, in name
// order: STOKER_RESOURCE_<NAME>=a,b for each, and CUDA_VISIBLE_DEVICES for
// gpu (what CUDA programs read).
func ResourceVars(r Resources) []string {
	var env []string
	for _, n := range sortedKeys(r) {
		list := strings.Join(r[n], ",")
		env = append(env, EnvEntry(ResourceEnv(n), list))
		if n == ResourceGPU {
			env = append(env, EnvEntry(EnvCUDAVisibleDevices, list))
		}
	}
	return env
}

// SortAddresses orders addresses numerically when they are numbers, else
// as strings: "2" before "10".
func SortAddresses(a []string) {
	slices.SortFunc(a, compareAddr)
}

func compareAddr(x, y string) int {
	nx, ex := strconv.Atoi(x)
	ny, ey := strconv.Atoi(y)
	switch {
	case ex == nil && ey == nil:
		return nx - ny
	case ex == nil:
		return -1
	case ey == nil:
		return 1
	}
	return strings.Compare(x, y)
}

// ResourcesFree is "gpu 2/4" (free/total) for each custom resource the
// worker offers, names sorted, comma-separated; "" when it offers none.
// `stoker workers` and the web UI show it.
func (v WorkerView) ResourcesFree() string {
	var parts []string
	for _, n := range sortedKeys(v.Resources) {
		total := len(v.Resources[n])
		parts = append(parts, fmt.Sprintf("%s %d/%d", n, total-len(v.ResourcesUsed[n]), total))
	}
	return strings.Join(parts, ", ")
}
