package svc

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestLockDir_SecondOwnerRefusedUntilReleased(t *testing.T) {
	dir := t.TempDir()
	first, err := LockDir(dir, NewOwner("stoker up", "nats://127.0.0.1:4222"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockDir(dir, NewOwner("stoker up", "nats://127.0.0.1:4223"))
	var locked *LockedError
	if !errors.As(err, &locked) || locked.Owner.PID != os.Getpid() {
		t.Fatalf("second LockDir: %v, want a *LockedError naming this process", err)
	}
	for _, want := range []string{dir, "stoker up", "nats://127.0.0.1:4222", "since", "stop it first"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	first.Release()
	first.Release()
	again, err := LockDir(dir, NewOwner("stoker bus", ""))
	if err != nil {
		t.Fatalf("LockDir after Release: %v", err)
	}
	again.Release()
}

// TestLockDir_HelperProcess holds a lock for TestLockDir_KilledOwnerTakenOver.
func TestLockDir_HelperProcess(t *testing.T) {
	dir := os.Getenv("STOKER_LOCK_HELPER_DIR")
	if dir == "" {
		t.Skip("helper process only")
	}
	if _, err := LockDir(dir, NewOwner("stoker agent", "helper")); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("locked\n")
	time.Sleep(time.Minute)
}

// A lock left by a SIGKILLed owner is free: the next owner takes it over
// and learns who held it.
func TestLockDir_KilledOwnerTakenOver(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockDir_HelperProcess$")
	cmd.Env = append(os.Environ(), "STOKER_LOCK_HELPER_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("helper: %q %v", line, err)
	}
	var locked *LockedError
	if _, err := LockDir(dir, NewOwner("stoker agent", "")); !errors.As(err, &locked) || locked.Owner.PID != cmd.Process.Pid {
		t.Fatalf("LockDir while the helper holds it: %v, want the helper (pid %d) named", err, cmd.Process.Pid)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	l, err := LockDir(dir, NewOwner("stoker agent", ""))
	if err != nil {
		t.Fatalf("LockDir after the owner was killed: %v", err)
	}
	defer l.Release()
	if l.Previous.PID != cmd.Process.Pid || l.Previous.Command != "stoker agent" {
		t.Fatalf("previous owner %+v, want the killed helper (pid %d)", l.Previous, cmd.Process.Pid)
	}
}
