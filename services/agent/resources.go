package agent

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/stoker/stoker/schemas"
)

// discoveryTimeout bounds one discovery script or nvidia-smi run.
const discoveryTimeout = 30 * time.Second

// nvidiaSMI is the GPU lister the agent asks when the operator named no gpu
// resource and it is on PATH (a variable so tests can point elsewhere).
var nvidiaSMI = "nvidia-smi"

// resolveResources completes c.Resources: every discovery script is run
// (Spark's spark.worker.resource.<name>.discoveryScript: it prints
// {"name":...,"addresses":[...]}), then, without a gpu resource, nvidia-smi
// is asked for GPU indexes when it is on PATH. Explicit addresses win over
// a script for the same name only if both are given: that is an error.
func (c *Config) resolveResources() error {
	if c.Resources == nil {
		c.Resources = schemas.Resources{}
	}
	for name, script := range c.ResourceDiscovery {
		if _, ok := c.Resources[name]; ok {
			return fmt.Errorf("agent: resource %s has both addresses and a discovery script", name)
		}
		addrs, err := runDiscovery(name, script)
		if err != nil {
			return fmt.Errorf("agent: resource %s: %w", name, err)
		}
		c.Resources[name] = addrs
	}
	if _, ok := c.Resources[schemas.ResourceGPU]; !ok && !c.NoGPUDetect {
		if addrs, err := detectGPUs(); err == nil && len(addrs) > 0 {
			c.Resources[schemas.ResourceGPU] = addrs
		} else if err != nil && !errors.Is(err, exec.ErrNotFound) {
			c.Log.Warn().Err(err).Msg("nvidia-smi is on PATH but did not list GPUs; offering none")
		}
	}
	if len(c.Resources) == 0 {
		c.Resources = nil
	}
	if err := c.Resources.Validate(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return c.Labels.Validate()
}

// runDiscovery runs a discovery script and parses Spark's JSON.
func runDiscovery(name, script string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), discoveryTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, script).Output()
	if err != nil {
		return nil, fmt.Errorf("discovery script %s: %w%s", script, err, stderrOf(err))
	}
	addrs, err := schemas.ParseDiscovery(name, out)
	if err != nil {
		return nil, fmt.Errorf("discovery script %s: %w", script, err)
	}
	return addrs, nil
}

// detectGPUs lists GPU indexes with nvidia-smi; exec.ErrNotFound when it
// is not on PATH.
func detectGPUs() ([]string, error) {
	path, err := exec.LookPath(nvidiaSMI)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), discoveryTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--query-gpu=index", "--format=csv,noheader").Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w%s", path, err, stderrOf(err))
	}
	var addrs []string
	for _, line := range strings.Split(string(out), "\n") {
		if l := strings.TrimSpace(line); l != "" {
			addrs = append(addrs, l)
		}
	}
	return addrs, nil
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return ": " + strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}
