package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/auth"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
	"github.com/stoker/stoker/services/scheduler"
	"github.com/stoker/stoker/services/web"
)

// startWebCluster is a secured `stoker up` cluster with its web UI on a
// random loopback port; it returns the cluster and the UI's base URL.
func startWebCluster(t *testing.T) (*upCluster, string) {
	t.Helper()
	// Anonymous admin keeps these tests about the pages, not the login
	// (TestWeb_UpDefault_AnonymousIsViewer tests the default).
	c := startTestClusterWith(t, func(o *upOptions) { o.webAddr = "127.0.0.1:0"; o.webAnonymous = web.RoleAdmin })
	if c.web == nil {
		t.Fatal("stoker up started no web UI")
	}
	return c, c.web.URL()
}

// httpc is a browser-like client: cookies kept, redirects not followed.
func httpc(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, hc *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func getJSON(t *testing.T, hc *http.Client, u string, v any) {
	t.Helper()
	code, body := get(t, hc, u)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v in %s", u, err, body)
	}
}

func post(t *testing.T, hc *http.Client, u, ctype, body string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", u, strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// submitREST submits `command` through POST /api/v1/drivers.
func submitREST(t *testing.T, hc *http.Client, base string, command ...string) string {
	t.Helper()
	b, _ := json.Marshal(web.SubmitRequest{Command: command, MemoryMB: 64})
	code, body := post(t, hc, base+"/api/v1/drivers", "application/json", string(b))
	if code != http.StatusCreated {
		t.Fatalf("submit: %d %s", code, body)
	}
	var r web.SubmitReply
	if err := json.Unmarshal([]byte(body), &r); err != nil || !strings.HasPrefix(r.DriverID, schemas.DriverIDPrefix) {
		t.Fatalf("submit reply %s: %v", body, err)
	}
	return r.DriverID
}

func waitDriver(t *testing.T, hc *http.Client, base, id string, state schemas.DriverState) schemas.Driver {
	t.Helper()
	var d schemas.Driver
	bustest.Eventually(t, 20*time.Second, fmt.Sprintf("driver %s %s", id, state), func() bool {
		getJSON(t, hc, base+"/api/v1/drivers/"+id, &d)
		return d.State == state
	})
	return d
}

// TestWeb_APIAndPages: every JSON endpoint and page of a real cluster,
// REST submission and kill, the Spark /json summary.
func TestWeb_APIAndPages(t *testing.T) {
	c, base := startWebCluster(t)
	hc := httpc(t)
	host := hostname()
	w1 := upWorkerID(host, 1)

	var st schemas.Status
	bustest.Eventually(t, 20*time.Second, "cluster ALIVE with a leader", func() bool {
		getJSON(t, hc, base+"/api/v1/status", &st)
		return st.State == schemas.ClusterAlive && st.Leader != nil
	})
	var workers []schemas.WorkerView
	getJSON(t, hc, base+"/api/v1/workers", &workers)
	if len(workers) != 2 {
		t.Fatalf("workers: %+v", workers)
	}
	var spark map[string]any
	getJSON(t, hc, base+"/json", &spark)
	for k, want := range map[string]any{"aliveworkers": 2.0, "cores": 4.0, "memory": 2048.0, "status": "ALIVE", "url": c.url} {
		if spark[k] != want {
			t.Errorf("/json %s = %v, want %v", k, spark[k], want)
		}
	}
	for _, k := range []string{"workers", "coresused", "memoryused", "activeapps", "completedapps", "activedrivers", "completeddrivers"} {
		if _, ok := spark[k]; !ok {
			t.Errorf("/json lacks %s", k)
		}
	}

	// REST submission, then the driver's page and kill.
	id := submitREST(t, hc, base, "sh", "-c", "echo hello-from-driver; sleep 60")
	d := waitDriver(t, hc, base, id, schemas.DriverRunning)
	bustest.Eventually(t, 10*time.Second, "driver page shows its output", func() bool {
		code, body := get(t, hc, base+"/drivers/"+id)
		return code == 200 && strings.Contains(body, "hello-from-driver")
	})
	code, body := get(t, hc, base+"/logs/"+id)
	if code != 200 || !strings.Contains(body, "hello-from-driver") {
		t.Fatalf("log page: %d %s", code, body)
	}
	var logs schemas.LogsReply
	getJSON(t, hc, base+"/api/v1/logs/"+id, &logs)
	if !strings.Contains(string(logs.Data), "hello-from-driver") {
		t.Fatalf("logs API: %q", logs.Data)
	}
	code, body = get(t, hc, base+"/workers/"+d.WorkerID)
	if code != 200 || !strings.Contains(body, id) {
		t.Fatalf("worker page: %d, lacks %s", code, id)
	}
	var drivers []schemas.Driver
	getJSON(t, hc, base+"/api/v1/drivers", &drivers)
	if len(drivers) != 1 || drivers[0].ID != id {
		t.Fatalf("drivers: %+v", drivers)
	}
	if code, body := post(t, hc, base+"/api/v1/drivers/"+id+"/kill", "application/json", "{}"); code != 200 {
		t.Fatalf("kill: %d %s", code, body)
	}
	waitDriver(t, hc, base, id, schemas.DriverKilled)

	// Bad requests: a JSON error, nothing created.
	for _, tc := range []struct{ body, want string }{
		{`{"command": ["true"`, "malformed JSON"},
		{`{"cores": 1}`, "missing field: command"},
		{`{"command": ["true"], "bogus": 1}`, "unknown field"},
		{`{"command": ["true"], "cores": -1}`, "cores"},
	} {
		code, body := post(t, hc, base+"/api/v1/drivers", "application/json", tc.body)
		var e struct{ Error string }
		if code != 400 || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, tc.want) {
			t.Errorf("POST %s: %d %s, want 400 with %q", tc.body, code, body, tc.want)
		}
	}
	getJSON(t, hc, base+"/api/v1/drivers", &drivers)
	if len(drivers) != 1 {
		t.Fatalf("a bad request created a driver: %+v", drivers)
	}
	if code, body := post(t, hc, base+"/api/v1/drivers/driver-20200101000000-0000/kill", "application/json", "{}"); code < 400 || code >= 500 || !strings.Contains(body, "error") {
		t.Errorf("kill unknown driver: %d %s", code, body)
	}
	if code, _ := post(t, hc, base+"/api/v1/apps/"+id+"/kill", "application/json", "{}"); code != 400 {
		t.Errorf("kill a driver id on the apps endpoint: %d, want 400", code)
	}

	// An application with executors: page, executors API, kill from the form.
	anc := c.adminConn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	app, err := sdk.RegisterApp(ctx, anc, schemas.RegisterApp{Name: "webtest", MaxCores: 2,
		Executor: schemas.ExecutorSpec{Command: []string{"sh", "-c", "echo exec-out; sleep 60"}, Cores: 1, MemoryMB: 64}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close(context.Background(), schemas.AppFinished) })
	var execs []struct {
		AppID    string `json:"app_id"`
		ID       int    `json:"id"`
		WorkerID string `json:"worker_id"`
		State    string `json:"state"`
	}
	bustest.Eventually(t, 20*time.Second, "two executors RUNNING", func() bool {
		getJSON(t, hc, base+"/api/v1/executors", &execs)
		n := 0
		for _, x := range execs {
			if x.AppID == app.ID && x.State == string(schemas.ExecutorRunning) {
				n++
			}
		}
		return n == 2
	})
	var apps []schemas.AppView
	getJSON(t, hc, base+"/api/v1/apps", &apps)
	if len(apps) != 1 || apps[0].ID != app.ID || len(apps[0].Executors) != 2 {
		t.Fatalf("apps: %+v", apps)
	}
	code, page := get(t, hc, base+"/apps/"+app.ID)
	if code != 200 || !strings.Contains(page, "/logs/"+app.ID+".0?stream=stderr") || !strings.Contains(page, w1[:len(w1)-1]) || !strings.Contains(page, "RUNNING") {
		t.Fatalf("app page: %d\n%s", code, page)
	}
	bustest.Eventually(t, 10*time.Second, "executor stdout", func() bool {
		code, body := get(t, hc, base+"/logs/"+app.ID+".0")
		return code == 200 && strings.Contains(body, "exec-out")
	})
	code, page = get(t, hc, base+"/")
	if code != 200 || !strings.Contains(page, w1) || !strings.Contains(page, app.ID) || !strings.Contains(page, c.url) {
		t.Fatalf("overview: %d\n%s", code, page)
	}
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("overview has no kill form:\n%s", page)
	}
	// The form without its token, or from another site, is refused.
	form := url.Values{"csrf": {m[1]}}.Encode()
	if code, _ := post(t, hc, base+"/api/v1/apps/"+app.ID+"/kill", "application/x-www-form-urlencoded", ""); code != 403 {
		t.Errorf("form kill without CSRF token: %d, want 403", code)
	}
	if code, _ := post(t, hc, base+"/api/v1/apps/"+app.ID+"/kill", "application/x-www-form-urlencoded", form, "Origin", "http://evil.example"); code != 403 {
		t.Errorf("cross-site form kill: %d, want 403", code)
	}
	if code, _ := post(t, hc, base+"/api/v1/apps/"+app.ID+"/kill", "text/plain", "{}"); code != 403 {
		t.Errorf("text/plain kill (a cross-site simple request): %d, want 403", code)
	}
	if code, body := post(t, hc, base+"/api/v1/apps/"+app.ID+"/kill", "application/x-www-form-urlencoded", form); code != http.StatusSeeOther {
		t.Fatalf("form kill: %d %s", code, body)
	}
	bustest.Eventually(t, 20*time.Second, "app KILLED", func() bool {
		var a schemas.AppView
		getJSON(t, hc, base+"/api/v1/apps/"+app.ID, &a)
		return a.State == schemas.AppKilled
	})

	// Events: all, by kind, bad kind; the events page.
	var evs []bus.StoredEvent
	getJSON(t, hc, base+"/api/v1/events?kind=driver", &evs)
	seen := map[string]bool{}
	for _, e := range evs {
		if e.Kind != "driver" {
			t.Fatalf("kind=driver gave %+v", e)
		}
		seen[e.State] = true
	}
	if !seen["RUNNING"] || !seen["KILLED"] {
		t.Errorf("driver events: %+v", evs)
	}
	if code, _ := get(t, hc, base+"/api/v1/events?kind=bogus"); code != 400 {
		t.Errorf("kind=bogus: %d", code)
	}
	if code, body := get(t, hc, base+"/events?kind=app"); code != 200 || !strings.Contains(body, app.ID) {
		t.Errorf("events page: %d", code)
	}
	for _, p := range []string{"/healthz", "/readyz", "/assets/app.js", "/assets/style.css"} {
		if code, body := get(t, hc, base+p); code != 200 {
			t.Errorf("%s: %d %s", p, code, body)
		}
	}
	if code, _ := get(t, hc, base+"/apps/app-20200101000000-0000"); code != 404 {
		t.Errorf("unknown app page: %d, want 404", code)
	}
}

// TestWeb_ViewerOnly: without an admin credential there are no kill
// buttons and every POST answers 403; with a viewer login the same.
func TestWeb_ViewerOnly(t *testing.T) {
	c, adminBase := startWebCluster(t)
	hc := httpc(t)
	id := submitREST(t, hc, adminBase, "sleep", "60")
	waitDriver(t, hc, adminBase, id, schemas.DriverRunning)

	vnc, err := bus.Connect(c.url, bus.ConnectOptions{Name: t.Name(), Creds: auth.CredsPath(c.data, auth.RoleViewer), CA: c.ca})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vnc.Close)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	ro, err := startWeb(web.Config{Addr: "127.0.0.1:0", Viewer: vnc, BusURL: c.url}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ro.Stop)
	base := ro.URL()
	code, page := get(t, hc, base+"/")
	if code != 200 || !strings.Contains(page, id) || strings.Contains(page, "/kill") {
		t.Fatalf("read-only overview: %d, want the driver and no kill button:\n%s", code, page)
	}
	if code, body := post(t, hc, base+"/api/v1/drivers/"+id+"/kill", "application/json", "{}"); code != 403 {
		t.Fatalf("kill without admin: %d %s", code, body)
	}
	if code, _ := post(t, hc, base+"/api/v1/drivers", "application/json", `{"command":["true"]}`); code != 403 {
		t.Fatalf("submit without admin: %d", code)
	}

	// A login: viewer and admin users; the admin connection is there.
	h, err := web.HashPassword("viewer-pass")
	if err != nil {
		t.Fatal(err)
	}
	ha, _ := web.HashPassword("admin-pass")
	users := []web.User{{Name: "val", Role: web.RoleViewer, Hash: []byte(h)}, {Name: "ada", Role: web.RoleAdmin, Hash: []byte(ha)}}
	if _, err := startWeb(web.Config{Addr: "0.0.0.0:0", Viewer: vnc}, log); err == nil || !strings.Contains(err.Error(), "--password-file") {
		t.Fatalf("non-loopback without login: %v", err)
	}
	li, err := startWeb(web.Config{Addr: "0.0.0.0:0", Viewer: vnc, Admin: c.adminConn(t), BusURL: c.url, Users: users}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(li.Stop)
	base = "http://127.0.0.1:" + li.URL()[strings.LastIndex(li.URL(), ":")+1:]
	if code, _ := get(t, hc, base+"/api/v1/status"); code != 401 {
		t.Fatalf("no login: %d, want 401", code)
	}
	as := func(user, pass, method, path, body string) int {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.SetBasicAuth(user, pass)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := as("val", "wrong", "GET", "/", ""); code != 401 {
		t.Errorf("wrong password: %d", code)
	}
	if code := as("val", "viewer-pass", "GET", "/api/v1/workers", ""); code != 200 {
		t.Errorf("viewer GET: %d", code)
	}
	if code := as("val", "viewer-pass", "POST", "/api/v1/drivers/"+id+"/kill", "{}"); code != 403 {
		t.Errorf("viewer kill: %d, want 403", code)
	}
	if code := as("ada", "admin-pass", "POST", "/api/v1/drivers/"+id+"/kill", "{}"); code != 200 {
		t.Errorf("admin kill: %d, want 200", code)
	}
	waitDriver(t, hc, adminBase, id, schemas.DriverKilled)
}

// TestWeb_EventStream: the SSE stream delivers a change after a record
// changes in the store.
func TestWeb_EventStream(t *testing.T) {
	_, base := startWebCluster(t)
	hc := &http.Client{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/events/stream", nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	lines := bufio.NewScanner(resp.Body)
	next := func() string {
		if !lines.Scan() {
			t.Fatalf("stream ended: %v", lines.Err())
		}
		return lines.Text()
	}
	for next() != "event: ready" {
	}
	start := time.Now()
	id := submitREST(t, httpc(t), base, "sleep", "1")
	for {
		if l := next(); strings.HasPrefix(l, "data: ") && strings.Contains(l, id) {
			var ev struct{ Kind, ID, State string }
			if err := json.Unmarshal([]byte(strings.TrimPrefix(l, "data: ")), &ev); err != nil || ev.Kind != "driver" {
				t.Fatalf("event %q: %v", l, err)
			}
			t.Logf("first SSE update %s after the submission (%s)", time.Since(start), ev.State)
			return
		}
	}
}

// TestWeb_Metrics: /metrics parsed by the Prometheus text parser holds the
// known cluster's values.
func TestWeb_Metrics(t *testing.T) {
	_, base := startWebCluster(t)
	hc := httpc(t)
	var st schemas.Status
	bustest.Eventually(t, 20*time.Second, "cluster ALIVE", func() bool {
		getJSON(t, hc, base+"/api/v1/status", &st)
		return st.State == schemas.ClusterAlive && st.Leader != nil
	})
	id := submitREST(t, hc, base, "sleep", "60")
	waitDriver(t, hc, base, id, schemas.DriverRunning)

	code, body := get(t, hc, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, body)
	}
	value := func(name string, labels ...string) float64 {
		t.Helper()
		f, ok := fams[name]
		if !ok {
			t.Fatalf("no %s in\n%s", name, body)
		}
	metrics:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
		t.Fatalf("no %s%v", name, labels)
		return 0
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"stoker_up", nil, 1},
		{"stoker_workers", []string{"state", "ALIVE"}, 2},
		{"stoker_workers", []string{"state", "DEAD"}, 0},
		{"stoker_cores", nil, 4},
		{"stoker_cores_used", nil, 1},
		{"stoker_memory_bytes", nil, 2048 << 20},
		{"stoker_memory_used_bytes", nil, 64 << 20},
		{"stoker_drivers", []string{"state", "RUNNING"}, 1},
		{"stoker_apps", []string{"state", "RUNNING"}, 0},
		{"stoker_leader_epoch", nil, float64(st.Leader.Epoch)},
		{"stoker_cluster_state", []string{"state", "ALIVE"}, 1},
		// The leading scheduler's pace, from stoker.leader.scheduler.status:
		// the window where it starts, nothing in flight.
		{"stoker_scheduler_window", nil, scheduler.MinInFlight},
		{"stoker_scheduler_max_in_flight", nil, scheduler.DefaultMaxInFlight},
		{"stoker_scheduler_launching", nil, 0},
		{"stoker_scheduler_killing", nil, 0},
		{"stoker_scheduler_window_cuts_total", nil, 0},
	} {
		if got := value(tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if value("stoker_web_requests_total", "method", "GET", "code", "200") < 2 {
		t.Error("request counter did not count")
	}
}

// TestWeb_UpDefault_AnonymousIsViewer: the web UI `stoker up` starts by
// default lets whoever reaches its port look, never act: submitting (code
// execution, Spark's CVE-2018-11770) and killing need the admin login whose
// password `stoker up` keeps 0600 in <data>/creds.
func TestWeb_UpDefault_AnonymousIsViewer(t *testing.T) {
	c := startTestClusterWith(t, func(o *upOptions) { o.webAddr = "127.0.0.1:0" })
	if c.web == nil || c.webPassword == "" {
		t.Fatalf("web %v, password file %q: want both", c.web, c.webPassword)
	}
	base := c.web.URL()
	fi, err := os.Stat(c.webPassword)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file %s: %v %v, want mode 0600", c.webPassword, fi, err)
	}
	pw, _ := os.ReadFile(c.webPassword)
	hc := httpc(t)
	code, body := get(t, hc, base+"/")
	if code != http.StatusOK || !strings.Contains(body, `href="/login"`) {
		t.Fatalf("anonymous overview: %d, want 200 with a login link", code)
	}
	req, _ := json.Marshal(web.SubmitRequest{Command: []string{"sleep", "60"}, MemoryMB: 64})
	code, body = post(t, hc, base+"/api/v1/drivers", "application/json", string(req))
	if code != http.StatusUnauthorized {
		t.Fatalf("anonymous submit: %d %s, want 401", code, body)
	}
	if ds, err := sdk.NewClient(c.adminConn(t)).Drivers(context.Background()); err != nil || len(ds) != 0 {
		t.Fatalf("drivers after a refused submit: %v %v, want none", ds, err)
	}
	as := func(user, pass string) int {
		r, _ := http.NewRequest("POST", base+"/api/v1/drivers", strings.NewReader(string(req)))
		r.Header.Set("Content-Type", "application/json")
		r.SetBasicAuth(user, pass)
		resp, err := hc.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := as("admin", "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d, want 401", code)
	}
	if code := as("admin", strings.TrimSpace(string(pw))); code != http.StatusCreated {
		t.Fatalf("admin login submit: %d, want 201", code)
	}
}

// TestWeb_SubmitPi_RunsToFinished: REST submission of the pi example in
// cluster mode: created, RUNNING, FINISHED with exit 0, its estimate in the
// logs API.
func TestWeb_SubmitPi_RunsToFinished(t *testing.T) {
	pi := filepath.Join(t.TempDir(), "pi")
	if out, err := exec.Command("go", "build", "-o", pi, "../../examples/pi").CombinedOutput(); err != nil {
		t.Fatalf("go build pi: %v\n%s", err, out)
	}
	_, base := startWebCluster(t)
	hc := httpc(t)
	id := submitREST(t, hc, base, pi, "--slices", "4")
	waitDriver(t, hc, base, id, schemas.DriverRunning)
	d := waitDriver(t, hc, base, id, schemas.DriverFinished)
	if d.ExitCode == nil || *d.ExitCode != 0 {
		t.Fatalf("pi driver ended %s with exit %v, want 0", d.State, d.ExitCode)
	}
	var logs schemas.LogsReply
	getJSON(t, hc, base+"/api/v1/logs/"+id, &logs)
	if !strings.Contains(string(logs.Data), "Pi is roughly 3.1") {
		t.Fatalf("pi's log: %q", logs.Data)
	}
}

// TestWeb_ResourcesLabelsCordon (issue 14): the overview's workers table
// and each worker's page show custom resources free/total, labels and the
// cordoned state, as `stoker workers` does; the app's, worker's pages show
// the exact addresses each executor was given. A `stoker up` whose local
// workers offer gpu=0,1 and carry zone=a.
func TestWeb_ResourcesLabelsCordon(t *testing.T) {
	c := startTestClusterWith(t, func(o *upOptions) {
		o.webAddr = "127.0.0.1:0"
		o.webAnonymous = web.RoleAdmin
		o.resources = schemas.Resources{"gpu": {"0", "1"}}
		o.labels = schemas.Labels{"zone": "a"}
	})
	base := c.web.URL()
	hc := httpc(t)
	host := hostname()
	w1, w2 := upWorkerID(host, 1), upWorkerID(host, 2)
	vars := c.clientVars()
	cli := func(args ...string) string {
		t.Helper()
		code, out, stderr := runCmd(t, vars, append(args, "--nats", c.url)...)
		if code != exitOK {
			t.Fatalf("stoker %s: exit %d\n%s%s", strings.Join(args, " "), code, out, stderr)
		}
		return out
	}
	if out := cli("cordon", w2); !strings.Contains(out, "cordoned") {
		t.Fatalf("cordon: %q", out)
	}
	// Three one-GPU executors, only w1 placeable: two run (gpu 0 and 1),
	// the third waits.
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	app, err := sdk.RegisterApp(rctx, c.adminConn(t), schemas.RegisterApp{Name: "gpus", MaxCores: 3,
		Executor: schemas.ExecutorSpec{Command: []string{"sleep", "120"}, Cores: 1, MemoryMB: 64, Resources: schemas.Amounts{"gpu": 1}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close(context.Background(), schemas.AppFinished) })
	appID := app.ID
	var av schemas.AppView
	bustest.Eventually(t, 30*time.Second, "two executors RUNNING with a GPU each", func() bool {
		getJSON(t, hc, base+"/api/v1/apps/"+appID, &av)
		n := 0
		for _, x := range av.Executors {
			if x.State == schemas.ExecutorRunning && len(x.Resources["gpu"]) == 1 {
				n++
			}
		}
		return n == 2
	})
	var addrs []string
	for _, x := range av.Executors {
		if x.State == schemas.ExecutorRunning {
			if x.WorkerID != w1 {
				t.Fatalf("executor %d placed on %s, cordoned", x.ID, x.WorkerID)
			}
			addrs = append(addrs, x.Resources.String())
		}
	}
	slices.Sort(addrs)
	if fmt.Sprint(addrs) != "[gpu=0 gpu=1]" {
		t.Fatalf("addresses given: %v", addrs)
	}

	// What `stoker workers` prints, the overview shows.
	table := cli("workers")
	if !strings.Contains(table, "gpu 0/2") || !strings.Contains(table, "gpu 2/2") || !strings.Contains(table, "zone=a") {
		t.Fatalf("stoker workers:\n%s", table)
	}
	bustest.Eventually(t, 10*time.Second, "overview shows the resources", func() bool {
		_, body := get(t, hc, base+"/")
		return strings.Contains(body, "gpu 0/2 free") && strings.Contains(body, "gpu 2/2 free")
	})
	_, body := get(t, hc, base+"/")
	workers := body[strings.Index(body, `id="workers"`):]
	workers = workers[:strings.Index(workers, "</table>")]
	rows := strings.Split(workers, "<tr>")
	row := func(id string) string {
		for _, r := range rows {
			if strings.Contains(r, `href="/workers/`+id+`"`) {
				return r
			}
		}
		t.Fatalf("no row for %s in\n%s", id, workers)
		return ""
	}
	if r := row(w1); !strings.Contains(r, "gpu 0/2 free") || !strings.Contains(r, "zone=a") || strings.Contains(r, "cordoned") {
		t.Errorf("overview row of %s: %s", w1, r)
	}
	if r := row(w2); !strings.Contains(r, "gpu 2/2 free") || !strings.Contains(r, "zone=a") || !strings.Contains(r, ">cordoned<") {
		t.Errorf("overview row of %s: %s", w2, r)
	}

	// The worker pages: resources with the addresses in use, labels, the
	// cordon, each executor's addresses.
	code, page1 := get(t, hc, base+"/workers/"+w1)
	if code != 200 || !strings.Contains(page1, "gpu 0/2") || !strings.Contains(page1, "in use: 0,1") ||
		!strings.Contains(page1, `id="worker-labels"`) || strings.Contains(page1, `id="cordoned"`) {
		t.Fatalf("worker page %s: %d\n%s", w1, code, page1)
	}
	for _, a := range []string{"gpu=0", "gpu=1"} {
		if !strings.Contains(page1, `<td class="mono">`+a+`</td>`) {
			t.Errorf("worker page %s lacks an executor with %s", w1, a)
		}
	}
	if code, page2 := get(t, hc, base+"/workers/"+w2); code != 200 || !strings.Contains(page2, `id="cordoned"`) || !strings.Contains(page2, "gpu 2/2") {
		t.Fatalf("worker page %s: %d\n%s", w2, code, page2)
	}
	code, appPage := get(t, hc, base+"/apps/"+appID)
	if code != 200 || !strings.Contains(appPage, `<td class="mono">gpu=0</td>`) || !strings.Contains(appPage, `<td class="mono">gpu=1</td>`) {
		t.Fatalf("app page: %d\n%s", code, appPage)
	}

	// Uncordoned: the page says so, and the waiting executor gets w2's gpu 0.
	cli("uncordon", w2)
	bustest.Eventually(t, 30*time.Second, "the third executor RUNNING on "+w2, func() bool {
		_, p := get(t, hc, base+"/workers/"+w2)
		return !strings.Contains(p, `id="cordoned"`) && strings.Contains(p, "gpu 1/2") && strings.Contains(p, `<td class="mono">gpu=0</td>`)
	})
}
