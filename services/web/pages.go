package web

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

//go:embed assets templates
var files embed.FS

var funcs = template.FuncMap{
	"mem": schemas.FormatMemoryMB,
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Local().Format("2006-01-02 15:04:05")
	},
	"exit": func(p *int) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprint(*p)
	},
	// res is a holder's assigned addresses, "gpu=0,1" ("-" for none).
	"res": func(r schemas.Resources) string {
		if len(r) == 0 {
			return "-"
		}
		return r.String()
	},
	"labels": func(l schemas.Labels) string {
		if len(l) == 0 {
			return "-"
		}
		return l.String()
	},
	// phase is the state a worker is shown in: DECOMMISSIONING while it
	// drains (the record stays ALIVE), as `stoker workers` shows it.
	"phase":    func(w schemas.WorkerView) string { return w.Phase() },
	"lower":    func(s any) string { return strings.ToLower(fmt.Sprint(s)) },
	"join":     strings.Join,
	"terminal": func(s any) bool { return isTerminal(fmt.Sprint(s)) },
	"dict":     func(apps []schemas.AppView, p page) appsArg { return appsArg{Apps: apps, P: p} },
	"kill": func(prefix, id, csrf string) killArg {
		return killArg{Action: prefix + id + "/kill", ID: id, CSRF: csrf}
	},
}

type appsArg struct {
	Apps []schemas.AppView
	P    page
}

type killArg struct{ Action, ID, CSRF string }

func isTerminal(state string) bool {
	switch state {
	case "FINISHED", "FAILED", "KILLED", "ERROR", "LOST", "EXITED", "DEAD", "DECOMMISSIONED":
		return true
	}
	return false
}

// pages are the templates, each the layout plus its own content, parsed
// on first use (New parses them at once, so a broken template still stops
// the web server at its start): every other stoker command links this
// package, and parsing at init cost each of them 0.3 MB of heap and the
// template engine's pages, the agent's idle RSS included.
var pages = sync.OnceValue(func() map[string]*template.Template {
	m := map[string]*template.Template{}
	names, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		panic(err)
	}
	for _, n := range names {
		if strings.HasSuffix(n, "/layout.html") {
			continue
		}
		m[strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")] =
			template.Must(template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html", n))
	}
	return m
})

// page is what every template gets.
type page struct {
	Title    string
	Nav      string
	BusURL   string
	CanAdmin bool
	CSRF     string
	Poll     int // > 0: the page also refreshes every Poll ms (logs)
	Err      string
	Data     any
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, name string, p page) {
	p.BusURL, p.CanAdmin, p.CSRF = s.cfg.BusURL, s.canAdmin(r), csrfToken(w, r)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := pages()[name].Execute(w, p); err != nil {
		s.cfg.Log.Warn().Err(err).Str("page", name).Msg("render")
	}
}

func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, err error) {
	w.WriteHeader(httpCode(err))
	s.render(w, r, "error", page{Title: "Error", Err: err.Error()})
}

// Handler is every route, behind the login when there is one.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	assets, _ := fs.Sub(files, "assets")
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.FileServerFS(assets)))
	mux.HandleFunc("GET /{$}", s.overviewPage)
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("GET /workers/{id}", s.workerPage)
	mux.HandleFunc("GET /apps/{id}", s.appPage)
	mux.HandleFunc("GET /drivers/{id}", s.driverPage)
	mux.HandleFunc("GET /logs/{id}", s.logPage)
	mux.HandleFunc("GET /events", s.eventsPage)
	mux.HandleFunc("GET /events/stream", s.eventStream)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.cfg.Viewer.IsConnected() {
			http.Error(w, "not connected to the bus", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if _, err := s.viewer.Status(ctx); err != nil {
			http.Error(w, "cluster API: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	s.apiRoutes(mux)
	return s.wrap(mux)
}

type overview struct {
	*snapshot
	WorkersAlive, WorkersDead int
	RunningApps, DoneApps     []schemas.AppView
	Executors                 int
}

func (s *Server) overviewPage(w http.ResponseWriter, r *http.Request) {
	sn, err := s.snapshot(r.Context())
	if err != nil {
		s.errorPage(w, r, err)
		return
	}
	o := overview{snapshot: sn}
	for _, wk := range sn.Workers {
		if wk.State == schemas.WorkerAlive {
			o.WorkersAlive++
		} else {
			o.WorkersDead++
		}
	}
	for _, a := range sn.Apps {
		if a.State.Terminal() {
			o.DoneApps = append(o.DoneApps, a)
		} else {
			o.RunningApps = append(o.RunningApps, a)
		}
	}
	s.render(w, r, "overview", page{Title: "Cluster", Nav: "overview", Data: o})
}

type workerData struct {
	Worker    schemas.WorkerView
	Executors []ExecutorRow
	Drivers   []schemas.Driver
}

func (s *Server) workerPage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	sn, err := s.snapshot(r.Context())
	if err != nil {
		s.errorPage(w, r, err)
		return
	}
	i := slices.IndexFunc(sn.Workers, func(wv schemas.WorkerView) bool { return wv.ID == id })
	if i < 0 {
		s.errorPage(w, r, fmt.Errorf("worker %s: %w", id, bus.ErrNotFound))
		return
	}
	d := workerData{Worker: sn.Workers[i]}
	for _, x := range executorRows(sn.Apps) {
		if x.WorkerID == id {
			d.Executors = append(d.Executors, x)
		}
	}
	for _, dr := range sn.Drivers {
		if dr.WorkerID == id {
			d.Drivers = append(d.Drivers, dr)
		}
	}
	s.render(w, r, "worker", page{Title: "Worker " + id, Data: d})
}

type appData struct {
	App      *schemas.AppView
	Duration string
	Events   []bus.StoredEvent
	EventErr string
}

func (s *Server) appPage(w http.ResponseWriter, r *http.Request) {
	a, err := s.viewer.App(r.Context(), r.PathValue("id"))
	if err != nil {
		s.errorPage(w, r, err)
		return
	}
	d := appData{App: a, Duration: time.Since(a.SubmittedAt).Round(time.Second).String()}
	d.Events, err = s.events(r.Context(), bus.EventQuery{Last: 2000}, a.ID)
	if err != nil {
		d.EventErr = err.Error()
	} else if a.State.Terminal() && len(d.Events) > 0 {
		d.Duration = d.Events[len(d.Events)-1].At.Sub(a.SubmittedAt).Round(time.Second).String()
	}
	s.render(w, r, "app", page{Title: "Application " + a.ID, Data: d})
}

type driverData struct {
	Driver *schemas.Driver
	Stdout string
	LogErr string
}

func (s *Server) driverPage(w http.ResponseWriter, r *http.Request) {
	dr, err := s.viewer.Driver(r.Context(), r.PathValue("id"))
	if err != nil {
		s.errorPage(w, r, err)
		return
	}
	d := driverData{Driver: dr}
	if dr.WorkerID != "" {
		if reply, err := s.viewer.Logs(r.Context(), schemas.LogsRequest{ID: dr.ID, MaxBytes: 64 << 10}); err != nil {
			d.LogErr = err.Error()
		} else {
			d.Stdout = string(reply.Data)
		}
	}
	s.render(w, r, "driver", page{Title: "Driver " + dr.ID, Data: d})
}

type logData struct {
	ID, Stream string
	Text       string
	Truncated  bool
}

func (s *Server) logPage(w http.ResponseWriter, r *http.Request) {
	req := logsRequest(r)
	d := logData{ID: req.ID, Stream: "stdout"}
	if req.Stderr {
		d.Stream = "stderr"
	}
	reply, err := s.viewer.Logs(r.Context(), req)
	if err != nil {
		s.errorPage(w, r, err)
		return
	}
	d.Text, d.Truncated = string(reply.Data), reply.Truncated
	s.render(w, r, "logs", page{Title: d.Stream + " of " + d.ID, Poll: 1000, Data: d})
}

type eventsData struct {
	Kind   string
	Kinds  []string
	Events []bus.StoredEvent
}

func (s *Server) eventsPage(w http.ResponseWriter, r *http.Request) {
	q, err := eventQuery(r)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		s.render(w, r, "error", page{Title: "Error", Err: err.Error()})
		return
	}
	evs, err := s.events(r.Context(), q, "")
	if err != nil {
		s.errorPage(w, r, err)
		return
	}
	slices.Reverse(evs) // newest first
	s.render(w, r, "events", page{Title: "Events", Nav: "events", Data: eventsData{Kind: q.Kind, Kinds: bus.EventKinds, Events: evs}})
}

// eventStream is Server-Sent Events: one "change" event per cluster event
// (stoker.events.>, published on every state change of a record), and a
// comment every 15s to keep proxies from closing the stream.
func (s *Server) eventStream(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch := make(chan *nats.Msg, 256)
	sub, err := s.cfg.Viewer.ChanSubscribe(bus.Events, ch)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	// The subscription must be live on the server before we say "ready".
	if err := s.cfg.Viewer.FlushTimeout(3 * time.Second); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	fmt.Fprint(w, "retry: 2000\nevent: ready\ndata: {}\n\n")
	fl.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
		case m := <-ch:
			var ev schemas.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				continue
			}
			b, _ := json.Marshal(struct {
				Kind  string `json:"kind"`
				ID    string `json:"id"`
				State string `json:"state"`
			}{ev.Kind, ev.ID, ev.State})
			fmt.Fprintf(w, "event: change\ndata: %s\n\n", b)
		}
		fl.Flush()
	}
}
