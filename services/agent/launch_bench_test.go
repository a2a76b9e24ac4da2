package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// BenchmarkLaunch is one executor's start by the agent's process launcher
// (its work dir, credential file, stdout/stderr files, own process group)
// against a bare fork/exec of the same command in the same run: what the
// agent adds to the 500-sleep figure of issue 12. Each child is a `sleep`,
// killed after the timing. Run:
//
//	go test ./services/agent -run '^$' -bench Launch -benchtime 500x -count 5
func BenchmarkLaunch(b *testing.B) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		b.Skip("no sleep")
	}
	env := append(os.Environ(), "STOKER_APP_ID=app-1")
	b.Run("Agent", func(b *testing.B) {
		dir := b.TempDir()
		var kids []Child
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c, err := ProcessLauncher{}.Launch(ChildSpec{Key: fmt.Sprintf("app-1.%d", i), Argv: []string{sleep, "600"}, Env: env,
				Dir: filepath.Join(dir, "app-1", fmt.Sprint(i)), Creds: "-----BEGIN NATS USER JWT-----\nx\n", MemoryMB: 16})
			if err != nil {
				b.Fatal(err)
			}
			kids = append(kids, c)
		}
		b.StopTimer()
		for _, c := range kids {
			c.Signal(syscall.SIGKILL)
			c.Wait()
		}
	})
	b.Run("BareForkExec", func(b *testing.B) {
		var kids []*exec.Cmd
		for i := 0; i < b.N; i++ {
			cmd := exec.Command(sleep, "600")
			cmd.Env = env
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			kids = append(kids, cmd)
		}
		b.StopTimer()
		for _, c := range kids {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	})
}
