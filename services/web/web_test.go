package web

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stoker/stoker/schemas"
)

func TestParsePasswordFile(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, in string
		users    int
		err      string
	}{
		{"two users and comments", "# logins\nalice admin " + h + "\n\nbob viewer " + h + "\n", 2, ""},
		{"bad role", "alice root " + h, 0, "not viewer or admin"},
		{"plain password", "alice admin secret", 0, "not a bcrypt hash"},
		{"missing field", "alice " + h, 0, "want"},
		{"duplicate", "a admin " + h + "\na viewer " + h, 0, "twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			us, err := ParsePasswordFile(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || len(us) != tc.users {
				t.Fatalf("got %d users, %v", len(us), err)
			}
		})
	}
}

func TestLogin_Check(t *testing.T) {
	h, _ := HashPassword("correct horse")
	l := newLogin([]User{{Name: "alice", Role: RoleAdmin, Hash: []byte(h)}, {Name: "bob", Role: RoleViewer, Hash: []byte(h)}})
	for _, tc := range []struct {
		user, pass string
		role       Role
		ok         bool
	}{
		{"alice", "correct horse", RoleAdmin, true},
		{"alice", "correct horse", RoleAdmin, true}, // cached
		{"bob", "correct horse", RoleViewer, true},
		{"alice", "wrong", "", false},
		{"carol", "correct horse", "", false},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth(tc.user, tc.pass)
		role, ok := l.check(r)
		if role != tc.role || ok != tc.ok {
			t.Errorf("%s/%s: got %q %v, want %q %v", tc.user, tc.pass, role, ok, tc.role, tc.ok)
		}
	}
	if _, ok := l.check(httptest.NewRequest("GET", "/", nil)); ok {
		t.Error("no credentials accepted")
	}
}

func TestCheckPost(t *testing.T) {
	form := func(tok string) string { return url.Values{"csrf": {tok}}.Encode() }
	const tok = "0123456789abcdef0123456789abcdef"
	cases := []struct {
		name                 string
		ctype, body, origin  string
		cookie, header, site string
		ok                   bool
	}{
		{"form with token", "application/x-www-form-urlencoded", form(tok), "", tok, "", "", true},
		{"form same origin", "application/x-www-form-urlencoded", form(tok), "http://example.test", tok, "", "", true},
		{"form without token", "application/x-www-form-urlencoded", "", "", tok, "", "", false},
		{"form wrong token", "application/x-www-form-urlencoded", form("x" + tok[1:]), "", tok, "", "", false},
		{"form no cookie", "application/x-www-form-urlencoded", form(tok), "", "", "", "", false},
		{"cross-site origin", "application/x-www-form-urlencoded", form(tok), "http://evil.test", tok, "", "", false},
		{"cross-site fetch", "application/json", "{}", "", "", "", "cross-site", false},
		{"json", "application/json", "{}", "", "", "", "", true},
		{"json cross-site origin", "application/json", "{}", "https://evil.test", "", "", "", false},
		{"text plain", "text/plain", "{}", "", "", "", "", false},
		{"header token", "text/plain", "", "", tok, tok, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "http://example.test/api/v1/apps/x/kill", strings.NewReader(tc.body))
			r.Header.Set("Content-Type", tc.ctype)
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if tc.site != "" {
				r.Header.Set("Sec-Fetch-Site", tc.site)
			}
			if tc.header != "" {
				r.Header.Set("X-CSRF-Token", tc.header)
			}
			if tc.cookie != "" {
				r.Header.Set("Cookie", csrfCookie+"="+tc.cookie)
			}
			if err := checkPost(r); (err == nil) != tc.ok {
				t.Fatalf("checkPost = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:80": true, "[::1]:8080": true,
		"0.0.0.0:8080": false, ":8080": false, "10.0.0.5:8080": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestNew_RefusesNonLoopbackWithoutLogin(t *testing.T) {
	_, err := New(Config{Addr: "0.0.0.0:8080"})
	if err == nil || !strings.Contains(err.Error(), "--password-file") {
		t.Fatalf("non-loopback without login: %v", err)
	}
	// With --insecure (or a login) the address passes; the missing
	// connection is the next complaint.
	if _, err := New(Config{Addr: "0.0.0.0:8080", Insecure: true}); err == nil || strings.Contains(err.Error(), "loopback") {
		t.Fatalf("insecure: %v", err)
	}
}

func exit(n int) *int { return &n }

func testSnapshot() *snapshot {
	now := time.Now()
	return &snapshot{
		Status: &schemas.Status{Leader: &schemas.LeaderView{ID: "s1", Epoch: 7}, State: schemas.ClusterAlive,
			CoresTotal: 8, CoresUsed: 3, MemoryTotalMB: 4096, MemoryUsedMB: 1536},
		Workers: []schemas.WorkerView{
			{ID: "w1", State: schemas.WorkerAlive, Cores: 4, CoresUsed: 3, MemoryMB: 2048, MemoryUsedMB: 1536},
			{ID: "w2", State: schemas.WorkerAlive, Cores: 4, MemoryMB: 2048},
			{ID: "w3", State: schemas.WorkerDead, Cores: 4, MemoryMB: 2048},
		},
		Apps: []schemas.AppView{
			{ID: "app-1", Name: "pi", State: schemas.AppRunning, CoresGranted: 2, SubmittedAt: now, Executors: []schemas.ExecutorView{
				{ID: 0, WorkerID: "w1", State: schemas.ExecutorRunning}, {ID: 1, WorkerID: "w1", State: schemas.ExecutorFailed, ExitCode: exit(1)}}},
			{ID: "app-0", Name: "old", State: schemas.AppFinished, SubmittedAt: now.Add(-time.Hour)},
		},
		Drivers: []schemas.Driver{{ID: "driver-1", State: schemas.DriverRunning, WorkerID: "w1", Cores: 1, MemoryMB: 512, Command: []string{"./pi"}}},
	}
}

func TestMetricValues(t *testing.T) {
	got := map[string]float64{}
	for _, m := range metricValues(testSnapshot()) {
		name := m.desc.String()
		name = name[strings.Index(name, `"`)+1:]
		name = name[:strings.Index(name, `"`)]
		got[name+"/"+strings.Join(m.labels, ",")] = m.value
	}
	want := map[string]float64{
		"stoker_workers/ALIVE": 2, "stoker_workers/DEAD": 1, "stoker_workers/DECOMMISSIONED": 0,
		"stoker_cores/": 8, "stoker_cores_used/": 3, "stoker_memory_bytes/": 4096 << 20, "stoker_memory_used_bytes/": 1536 << 20,
		"stoker_apps/RUNNING": 1, "stoker_apps/FINISHED": 1, "stoker_apps/WAITING": 0,
		"stoker_executors/RUNNING": 1, "stoker_executors/FAILED": 1, "stoker_drivers/RUNNING": 1,
		"stoker_leader_epoch/": 7, "stoker_cluster_state/ALIVE": 1, "stoker_cluster_state/RECOVERING": 0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

func TestToSpark(t *testing.T) {
	s := toSpark("nats://h:4222", testSnapshot())
	if s.URL != "nats://h:4222" || s.AliveWorkers != 2 || len(s.Workers) != 3 || s.Cores != 8 || s.CoresUsed != 3 ||
		s.Memory != 4096 || s.MemoryUsed != 1536 || s.Status != "ALIVE" {
		t.Fatalf("summary %+v", s)
	}
	if len(s.ActiveApps) != 1 || s.ActiveApps[0].ID != "app-1" || len(s.CompletedApps) != 1 ||
		len(s.ActiveDrivers) != 1 || s.ActiveDrivers[0].MainClass != "./pi" || len(s.CompletedDrivers) != 0 {
		t.Fatalf("apps/drivers %+v", s)
	}
	if w := s.Workers[0]; w.CoresFree != 1 || w.MemoryFree != 512 {
		t.Fatalf("worker %+v", w)
	}
}

func TestTemplatesRender(t *testing.T) {
	sn := testSnapshot()
	// The first worker drains: its record is ALIVE, pages show DECOMMISSIONING.
	sn.Workers[0].State = schemas.WorkerAlive
	sn.Workers[0].Drain = &schemas.Drain{Since: time.Now(), Deadline: time.Now().Add(5 * time.Minute), By: "agent"}
	for name, data := range map[string]any{
		"overview": overview{snapshot: sn, WorkersAlive: 2, WorkersDead: 1, RunningApps: sn.Apps[:1], DoneApps: sn.Apps[1:]},
		"worker":   workerData{Worker: sn.Workers[0], Executors: executorRows(sn.Apps), Drivers: sn.Drivers},
		"app":      appData{App: &sn.Apps[0], Duration: "3s"},
		"driver":   driverData{Driver: &sn.Drivers[0], Stdout: "pi is 3.14"},
		"logs":     logData{ID: "driver-1", Stream: "stdout", Text: "<b>hi</b>"},
		"events":   eventsData{Kinds: []string{"app"}},
		"error":    nil,
	} {
		var b strings.Builder
		if err := pages()[name].Execute(&b, page{Title: name, CanAdmin: true, CSRF: "tok", Data: data}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name == "logs" && strings.Contains(b.String(), "<b>hi</b>") {
			t.Error("log text not escaped")
		}
		if (name == "overview" || name == "worker") && !strings.Contains(b.String(), ">DECOMMISSIONING<") {
			t.Errorf("%s: the draining worker is not shown DECOMMISSIONING", name)
		}
		if name == "worker" && !strings.Contains(b.String(), "drain by agent since") {
			t.Error("worker: the drain is not described")
		}
		if name == "overview" && (!strings.Contains(b.String(), `/api/v1/apps/app-1/kill`) || strings.Contains(b.String(), `/api/v1/apps/app-0/kill`)) {
			t.Error("overview: want a kill button for the running app only")
		}
	}
}
