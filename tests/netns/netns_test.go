package netns

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as the program run inside a namespace:
// NETNS_HELPER=listen ADDR   accepts TCP and echoes, and prints UDP datagrams;
// NETNS_HELPER=dial ADDR     exits 0 if a TCP echo round trip works in 1s;
// NETNS_HELPER=udp ADDR      sends one datagram "ping" to ADDR.
func TestMain(m *testing.M) {
	switch os.Getenv("NETNS_HELPER") {
	case "":
		os.Exit(m.Run())
	case "listen":
		helperListen(os.Getenv("NETNS_ADDR"))
	case "dial":
		if err := dial(os.Getenv("NETNS_ADDR")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	case "udp":
		c, err := net.Dial("udp", os.Getenv("NETNS_ADDR"))
		if err == nil {
			_, err = c.Write([]byte("ping"))
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

func helperListen(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			fmt.Printf("udp %s %s\n", from, buf[:n])
		}
	}()
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(0)
		}
		go func() {
			defer c.Close()
			line, _ := bufio.NewReader(c).ReadString('\n')
			_, _ = c.Write([]byte(line))
		}()
	}
}

func dial(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("hi\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "hi\n" {
		return fmt.Errorf("echo: %q %v", line, err)
	}
	return nil
}

// listener is a helper process listening on nd's address.
type listener struct {
	addr  string
	lines chan string
}

func listen(t *testing.T, nd *Node) *listener {
	t.Helper()
	l := &listener{addr: nd.IP + ":7000", lines: make(chan string, 16)}
	cmd := nd.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "NETNS_HELPER=listen", "NETNS_ADDR="+l.addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	go func() {
		for sc.Scan() {
			l.lines <- sc.Text()
		}
	}()
	select {
	case line := <-l.lines:
		if line != "ready" {
			t.Fatalf("helper: %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("helper listener not ready")
	}
	return l
}

// reaches reports whether a TCP round trip from inside from (nil: the test
// process) to l works.
func reaches(t *testing.T, from *Node, l *listener) bool {
	t.Helper()
	if from == nil {
		return dial(l.addr) == nil
	}
	cmd := from.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "NETNS_HELPER=dial", "NETNS_ADDR="+l.addr)
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return err == nil
}

// udpArrives reports whether one datagram from inside from reaches l.
func udpArrives(t *testing.T, from *Node, l *listener) bool {
	t.Helper()
	cmd := from.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "NETNS_HELPER=udp", "NETNS_ADDR="+l.addr)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("udp send: %v: %s", err, out)
	}
	select {
	case line := <-l.lines:
		return strings.HasPrefix(line, "udp "+from.IP+":")
	case <-time.After(500 * time.Millisecond):
		return false
	}
}

func TestNet_CutHealDropPartition(t *testing.T) {
	n := New(t)
	a, b, c := n.Node("a"), n.Node("b"), n.Node("c")
	la, lb, lc := listen(t, a), listen(t, b), listen(t, c)
	check := func(what string, from *Node, l *listener, want bool) {
		t.Helper()
		if got := reaches(t, from, l); got != want {
			t.Fatalf("%s: reaches = %v, want %v", what, got, want)
		}
	}
	check("a→b", a, lb, true)
	check("test→a", nil, la, true)

	n.Cut(a)
	check("cut: a→b", a, lb, false)
	check("cut: b→a", b, la, false)
	check("cut: test→a", nil, la, false)
	check("cut: b→c", b, lc, true)
	n.HealNode(a)
	check("healed: a→b", a, lb, true)

	n.Partition([]*Node{a, b}, []*Node{c})
	check("partition: a→b", a, lb, true)
	check("partition: a→c", a, lc, false)
	check("partition: c→b", c, lb, false)
	check("partition: test→c", nil, lc, true)
	n.Heal()
	check("healed: c→a", c, la, true)

	n.DropOut(a)
	if udpArrives(t, a, lb) {
		t.Fatal("drop out: a's datagram reached b")
	}
	if !udpArrives(t, b, la) {
		t.Fatal("drop out: b's datagram did not reach a")
	}
	n.Heal()
	n.DropIn(a)
	if !udpArrives(t, a, lb) {
		t.Fatal("drop in: a's datagram did not reach b")
	}
	if udpArrives(t, b, la) {
		t.Fatal("drop in: b's datagram reached a")
	}
	n.Heal()
	check("healed: b→a", b, la, true)
}

func TestNet_Delay(t *testing.T) {
	n := New(t)
	a, b := n.Node("a"), n.Node("b")
	lb := listen(t, b)
	if err := n.Delay(a, 150*time.Millisecond); errors.Is(err, ErrNoNetem) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if !reaches(t, a, lb) {
		t.Fatal("delayed link does not connect")
	}
	// A round trip crosses the delay at least twice; reported, not asserted
	// against the wall clock beyond that lower bound.
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("round trip through a 150ms delay took %s", took)
	}
}

// TestNet_CleanedUp checks that a finished test leaves no namespace behind.
func TestNet_CleanedUp(t *testing.T) {
	var ns string
	t.Run("inner", func(t *testing.T) {
		n := New(t)
		ns = n.Node("x").NS
	})
	if ns == "" {
		t.Skip("harness unavailable")
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), ns) {
		t.Fatalf("namespace %s left behind:\n%s", ns, out)
	}
}
