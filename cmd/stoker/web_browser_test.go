package main

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
	"github.com/stoker/stoker/services/web"
)

var screenshotDir = flag.String("screenshots", "", "keep the browser test's screenshots in this directory (default: the test's temp dir)")

// chromiumPath finds a Chromium to drive, or "".
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestWeb_Browser drives headless Chromium against a real cluster: the
// overview shows the workers, an application registered meanwhile appears
// without a reload, the kill button (after its confirmation) ends it KILLED
// with its executors' processes gone, and a driver's log page shows its
// output. Screenshots of each page are written (see -screenshots).
func TestWeb_Browser(t *testing.T) {
	chrome := chromiumPath()
	if chrome == "" {
		t.Skip("no chromium binary in PATH (Debian: apt-get install chromium; .ci/run installs it): browser test skipped")
	}
	dir := *screenshotDir
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The local workers offer two fake GPUs each and carry a label, so the
	// pages show resources, labels and (later) a cordon.
	c := startTestClusterWith(t, func(o *upOptions) {
		o.webAddr, o.webAnonymous = "127.0.0.1:0", web.RoleAdmin
		o.resources, o.labels = schemas.Resources{"gpu": {"0", "1"}}, schemas.Labels{"zone": "a"}
	})
	base := c.web.URL()
	hc := httpc(t)
	w1 := upWorkerID(hostname(), 1)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome), chromedp.NoSandbox,
		chromedp.WindowSize(1400, 900), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()
	// Accept the kill button's confirmation.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", chrome, err)
	}
	dialogs := chromedp.Events(bctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			_, _ = chromedp.Call(bctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG (below: JPEG)
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	waitText := func(sel, want string, timeout time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		// The page may be between two documents (a form's redirect): a
		// failed look is a "not yet".
		bustest.Eventually(t, timeout, sel+" shows "+want, func() bool {
			s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
			return err == nil && strings.Contains(s, want)
		})
		return time.Since(start)
	}

	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("workers"))); err != nil {
		t.Fatal(err)
	}
	t.Logf("overview loaded in %s", time.Since(start))
	if s := text("#workers"); !strings.Contains(s, w1) || !strings.Contains(s, "ALIVE") ||
		!strings.Contains(s, "gpu 2/2 free") || !strings.Contains(s, "zone=a") {
		t.Fatalf("overview workers: %q", s)
	}
	waitText("#live", "live", 10*time.Second) // the SSE stream is open
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__noReload = true`)); err != nil {
		t.Fatal(err)
	}
	shot("overview-idle")

	// An application appears without a reload.
	anc := c.adminConn(t)
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	app, err := sdk.RegisterApp(rctx, anc, schemas.RegisterApp{Name: "browser-app", MaxCores: 2,
		Executor: schemas.ExecutorSpec{Command: []string{"sleep", "120"}, Cores: 1, MemoryMB: 64, Resources: schemas.Amounts{"gpu": 1}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close(context.Background(), schemas.AppFinished) })
	lat := waitText("#running-apps", app.ID, 10*time.Second)
	t.Logf("app appeared live %s after registration", lat)
	if stillSame, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__noReload === true`)); err != nil || !stillSame {
		t.Fatalf("the page was reloaded (marker gone: %v)", err)
	}
	var av schemas.AppView
	bustest.Eventually(t, 20*time.Second, "two executors RUNNING", func() bool {
		getJSON(t, hc, base+"/api/v1/apps/"+app.ID, &av)
		n := 0
		for _, x := range av.Executors {
			if x.State == schemas.ExecutorRunning && x.PID > 0 {
				n++
			}
		}
		return n == 2
	})
	waitText("#summary", "2 / 4", 10*time.Second) // cores used, live
	shot("overview-running")

	// The application page, then its kill button.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/apps/"+app.ID), chromedp.WaitVisible(chromedp.ID("executors"))); err != nil {
		t.Fatal(err)
	}
	if s := text("#executors"); !strings.Contains(s, "RUNNING") || !strings.Contains(s, "stdout") || !strings.Contains(s, "gpu=0") {
		t.Fatalf("app page executors (with their GPU addresses): %q", s)
	}
	shot("app")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#app form.kill button`))); err != nil {
		t.Fatal(err)
	}
	waitText("#app-state", "KILLED", 20*time.Second)
	for _, x := range av.Executors {
		pid := x.PID
		bustest.Eventually(t, 10*time.Second, "executor process exits", func() bool {
			return syscall.Kill(pid, 0) == syscall.ESRCH
		})
	}
	shot("app-killed")

	// A driver and its log page.
	id := submitREST(t, hc, base, "sh", "-c", "echo browser-driver-says-hi; sleep 60")
	waitDriver(t, hc, base, id, schemas.DriverRunning)
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/logs/"+id), chromedp.WaitVisible(chromedp.ID("log-text"))); err != nil {
		t.Fatal(err)
	}
	waitText("#log-text", "browser-driver-says-hi", 10*time.Second)
	shot("logs")
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/drivers/"+id), chromedp.WaitVisible(chromedp.ID("driver"))); err != nil {
		t.Fatal(err)
	}
	shot("driver")
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/workers/"+w1), chromedp.WaitVisible(chromedp.ID("worker"))); err != nil {
		t.Fatal(err)
	}
	shot("worker")

	// A cordon shows on the overview without a reload, and on the
	// worker's page with its resources and labels.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("workers"))); err != nil {
		t.Fatal(err)
	}
	waitText("#live", "live", 10*time.Second)
	if code, out, errOut := runCmd(t, c.clientVars(), "cordon", w1, "--nats", c.url); code != exitOK {
		t.Fatalf("stoker cordon: %d %s %s", code, out, errOut)
	}
	waitText("#workers", "cordoned", 10*time.Second)
	shot("overview-cordoned")
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/workers/"+w1), chromedp.WaitVisible(chromedp.ID("worker"))); err != nil {
		t.Fatal(err)
	}
	if s := text("#worker"); !strings.Contains(s, "cordoned") || !strings.Contains(s, "gpu 2/2") || !strings.Contains(s, "zone=a") {
		t.Fatalf("worker page: %q", s)
	}
	shot("worker-cordoned")
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/events"), chromedp.WaitVisible(chromedp.ID("events"))); err != nil {
		t.Fatal(err)
	}
	if s := text("#events"); !strings.Contains(s, app.ID) || !strings.Contains(s, "KILLED") {
		t.Fatalf("events page: %q", s)
	}
	shot("events")
	t.Logf("screenshots in %s", dir)
}
