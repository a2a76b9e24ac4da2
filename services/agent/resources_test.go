package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

func TestService_Resources_RegisteredAndInTheExecutorsEnvironment(t *testing.T) {
	e := newEnv(t)
	script := filepath.Join(t.TempDir(), "fpga.sh")
	if err := os.WriteFile(script, []byte(`#!/bin/sh
echo '{"name":"fpga","addresses":["f0","f1"]}'
`), 0o755); err != nil {
		t.Fatal(err)
	}
	var workDir string
	s := startAgent(t, e.srv.URL(), func(c *Config) {
		workDir = c.WorkDir
		c.Resources = schemas.Resources{"gpu": {"0", "1", "2", "3"}}
		c.ResourceDiscovery = map[string]string{"fpga": script}
		c.Labels = schemas.Labels{"zone": "a"}
	})
	waitRegistered(t, s)
	regs := e.c.registrations()
	r := regs[len(regs)-1]
	if !slices.Equal(r.Resources["gpu"], []string{"0", "1", "2", "3"}) || !slices.Equal(r.Resources["fpga"], []string{"f0", "f1"}) ||
		r.Labels["zone"] != "a" {
		t.Fatalf("registered resources %v labels %v", r.Resources, r.Labels)
	}
	app := newAppID()
	var ack schemas.Ack
	err := call(t, e.nc, bus.WorkerCmdLaunchSubject(testWID), &schemas.LaunchExecutor{
		AppID: app, ExecutorID: 1, Cores: 1, MemoryMB: 100,
		Resources: schemas.Resources{"gpu": {"1", "3"}},
		Command:   sh(`echo "gpu=$STOKER_RESOURCE_GPU cuda=$CUDA_VISIBLE_DEVICES"`),
	}, &ack)
	if err != nil || !ack.OK {
		t.Fatalf("launch: %+v %v", ack, err)
	}
	e.c.waitReport(schemas.ExecutorKey(app, 1), "EXITED")
	out := readFile(t, filepath.Join(workDir, app, "1", "stdout"))
	if want := "gpu=1,3 cuda=1,3"; strings.TrimSpace(out) != want {
		t.Fatalf("stdout %q, want %q", out, want)
	}
}

func TestConfig_Resources_Errors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.sh")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho '{\"name\":\"gpu\",\"addresses\":[\"0\"]}'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"script names another resource", Config{ResourceDiscovery: map[string]string{"fpga": bad}}, `names resource "gpu", want "fpga"`},
		{"script missing", Config{ResourceDiscovery: map[string]string{"fpga": "/nonexistent/x"}}, "discovery script /nonexistent/x"},
		{"both addresses and script", Config{Resources: schemas.Resources{"gpu": {"0"}}, ResourceDiscovery: map[string]string{"gpu": bad}}, "both addresses and a discovery script"},
		{"bad label", Config{Labels: schemas.Labels{"Zone": "a"}}, "label key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.NoGPUDetect = true
			err := tc.cfg.resolveResources()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestConfig_Resources_NvidiaSMI(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "nvidia-smi")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1 $2\" = \"--query-gpu=index --format=csv,noheader\" ] || exit 9\nprintf '0\\n1\\n'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := nvidiaSMI
	nvidiaSMI = fake
	t.Cleanup(func() { nvidiaSMI = old })
	var c Config
	if err := c.resolveResources(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Resources["gpu"], []string{"0", "1"}) {
		t.Fatalf("gpus %v, want [0 1]", c.Resources)
	}
	c = Config{NoGPUDetect: true}
	if err := c.resolveResources(); err != nil || c.Resources != nil {
		t.Fatalf("NoGPUDetect: %v %v", c.Resources, err)
	}
}
