package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// snapshot is the cluster as one page or scrape sees it.
type snapshot struct {
	Status  *schemas.Status
	Workers []schemas.WorkerView
	Apps    []schemas.AppView
	Drivers []schemas.Driver
}

// snapshot reads status, workers, apps and drivers concurrently.
func (s *Server) snapshot(ctx context.Context) (*snapshot, error) {
	var (
		sn   snapshot
		errs [4]error
		done = make(chan struct{}, 4)
	)
	go func() { sn.Status, errs[0] = s.viewer.Status(ctx); done <- struct{}{} }()
	go func() { sn.Workers, errs[1] = s.viewer.Workers(ctx); done <- struct{}{} }()
	go func() { sn.Apps, errs[2] = s.viewer.Apps(ctx); done <- struct{}{} }()
	go func() { sn.Drivers, errs[3] = s.viewer.Drivers(ctx); done <- struct{}{} }()
	for range 4 {
		<-done
	}
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	slices.SortFunc(sn.Workers, func(a, b schemas.WorkerView) int { return strings.Compare(a.ID, b.ID) })
	// Newest first.
	slices.SortFunc(sn.Apps, func(a, b schemas.AppView) int { return b.SubmittedAt.Compare(a.SubmittedAt) })
	slices.SortFunc(sn.Drivers, func(a, b schemas.Driver) int { return b.SubmittedAt.Compare(a.SubmittedAt) })
	return &sn, nil
}

// ExecutorRow is an executor with its application, as /api/v1/executors
// lists them.
type ExecutorRow struct {
	AppID string `json:"app_id"`
	schemas.ExecutorView
}

func executorRows(apps []schemas.AppView) []ExecutorRow {
	rows := []ExecutorRow{}
	for _, a := range apps {
		for _, x := range a.Executors {
			rows = append(rows, ExecutorRow{AppID: a.ID, ExecutorView: x})
		}
	}
	return rows
}

// apiError is every JSON error answer.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func jsonError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, apiError{Error: fmt.Sprintf(format, args...)})
}

// clusterError answers a failed cluster call: 404 for an unknown id, 403
// for a permission the credential lacks, 409 for a refusal, else 502.
func clusterError(w http.ResponseWriter, err error) {
	jsonError(w, httpCode(err), "%v", err)
}

// httpCode is the HTTP status for a failed cluster call: the cluster's own
// 4xx code (unknown id, bad request, conflict), 403 for a permission the
// credential lacks, 409 for a refusal, 504 for a timeout, else 502.
func httpCode(err error) int {
	var be *bus.Error
	switch {
	case errors.As(err, &be) && be.Code >= 400 && be.Code < 500:
		return be.Code
	case errors.Is(err, bus.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, schemas.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, bus.ErrRefused):
		return http.StatusConflict
	case errors.Is(err, bus.ErrDenied):
		return http.StatusForbidden
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

func (s *Server) apiList(get func(context.Context) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := get(r.Context())
		if err != nil {
			clusterError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func (s *Server) apiRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/status", s.apiList(func(ctx context.Context) (any, error) { return s.viewer.Status(ctx) }))
	mux.HandleFunc("GET /api/v1/workers", s.apiList(func(ctx context.Context) (any, error) { return s.viewer.Workers(ctx) }))
	mux.HandleFunc("GET /api/v1/apps", s.apiList(func(ctx context.Context) (any, error) { return s.viewer.Apps(ctx) }))
	mux.HandleFunc("GET /api/v1/drivers", s.apiList(func(ctx context.Context) (any, error) { return s.viewer.Drivers(ctx) }))
	mux.HandleFunc("GET /api/v1/executors", s.apiList(func(ctx context.Context) (any, error) {
		apps, err := s.viewer.Apps(ctx)
		return executorRows(apps), err
	}))
	mux.HandleFunc("GET /api/v1/apps/{id}", func(w http.ResponseWriter, r *http.Request) {
		s.apiList(func(ctx context.Context) (any, error) { return s.viewer.App(ctx, r.PathValue("id")) })(w, r)
	})
	mux.HandleFunc("GET /api/v1/drivers/{id}", func(w http.ResponseWriter, r *http.Request) {
		s.apiList(func(ctx context.Context) (any, error) { return s.viewer.Driver(ctx, r.PathValue("id")) })(w, r)
	})
	mux.HandleFunc("GET /api/v1/events", s.apiEvents)
	mux.HandleFunc("GET /api/v1/logs/{id}", s.apiLogs)
	mux.HandleFunc("POST /api/v1/drivers", s.apiSubmit)
	mux.HandleFunc("POST /api/v1/drivers/{id}/kill", s.apiKill)
	mux.HandleFunc("POST /api/v1/apps/{id}/kill", s.apiKill)
	mux.HandleFunc("GET /json", s.sparkJSON)
	mux.HandleFunc("GET /json/", s.sparkJSON)
}

// eventQuery reads ?kind=&last= (default the last 200 events).
func eventQuery(r *http.Request) (bus.EventQuery, error) {
	q := bus.EventQuery{Kind: r.URL.Query().Get("kind"), Last: 200}
	if v := r.URL.Query().Get("last"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 10000 {
			return q, fmt.Errorf("last must be 1..10000, got %q", v)
		}
		q.Last = n
	}
	return q, q.Validate()
}

// events reads the events q selects, newest last; id != "" keeps only that
// record's events.
func (s *Server) events(ctx context.Context, q bus.EventQuery, id string) ([]bus.StoredEvent, error) {
	c := s.viewer
	if s.admin != nil {
		// Reading the stream takes an ordered consumer, which the viewer
		// role may not create.
		c = s.admin
	}
	evs := []bus.StoredEvent{}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := c.Events(ctx, q, func(e bus.StoredEvent) error {
		if id == "" || e.ID == id || strings.HasPrefix(e.ID, id+".") {
			evs = append(evs, e)
		}
		return nil
	})
	return evs, err
}

func (s *Server) apiEvents(w http.ResponseWriter, r *http.Request) {
	q, err := eventQuery(r)
	if err != nil {
		jsonError(w, http.StatusBadRequest, "%v", err)
		return
	}
	evs, err := s.events(r.Context(), q, r.URL.Query().Get("id"))
	if err != nil {
		clusterError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, evs)
}

func logsRequest(r *http.Request) schemas.LogsRequest {
	req := schemas.LogsRequest{ID: r.PathValue("id"), Stderr: r.URL.Query().Get("stream") == "stderr", MaxBytes: 256 << 10}
	return req
}

func (s *Server) apiLogs(w http.ResponseWriter, r *http.Request) {
	reply, err := s.viewer.Logs(r.Context(), logsRequest(r))
	if err != nil {
		clusterError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, reply)
}

// SubmitRequest is the body of POST /api/v1/drivers.
type SubmitRequest struct {
	Name      string   `json:"name,omitempty"`
	Command   []string `json:"command"`
	Env       []string `json:"env,omitempty"`
	Cores     int      `json:"cores,omitempty"`     // default 1
	MemoryMB  int64    `json:"memory_mb,omitempty"` // default 1024
	Supervise bool     `json:"supervise,omitempty"`
}

// SubmitReply answers POST /api/v1/drivers (201).
type SubmitReply struct {
	DriverID string `json:"driver_id"`
	Warning  string `json:"warning,omitempty"`
}

// forbidden answers a POST the request may not make.
func (s *Server) forbidden(w http.ResponseWriter, r *http.Request) bool {
	if err := checkPost(r); err != nil {
		jsonError(w, http.StatusForbidden, "%v", err)
		return true
	}
	if !s.canAdmin(r) {
		if s.admin == nil {
			jsonError(w, http.StatusForbidden, "this web service has no admin credential (start it with --admin-creds)")
		} else if _, _, has := r.BasicAuth(); !has && s.login != nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="stoker", charset="UTF-8"`)
			jsonError(w, http.StatusUnauthorized, "killing and submitting need an admin login (GET /login)")
		} else {
			jsonError(w, http.StatusForbidden, "your login is a viewer: killing and submitting need an admin")
		}
		return true
	}
	return false
}

func (s *Server) apiSubmit(w http.ResponseWriter, r *http.Request) {
	if s.forbidden(w, r) {
		return
	}
	var req SubmitRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		jsonError(w, http.StatusBadRequest, "malformed JSON body: %v", err)
		return
	}
	if len(req.Command) == 0 {
		jsonError(w, http.StatusBadRequest, "missing field: command (a non-empty list of strings)")
		return
	}
	sub := schemas.SubmitDriver{Name: req.Name, Command: req.Command, Env: req.Env, Cores: req.Cores,
		MemoryMB: req.MemoryMB, Supervise: req.Supervise}
	if sub.Cores == 0 {
		sub.Cores = 1
	}
	if sub.MemoryMB == 0 {
		sub.MemoryMB = 1024
	}
	if sub.Name == "" {
		sub.Name = req.Command[0][strings.LastIndex(req.Command[0], "/")+1:]
	}
	if err := sub.Validate(); err != nil {
		jsonError(w, http.StatusBadRequest, "%v", err)
		return
	}
	reply, err := s.admin.Submit(r.Context(), sub)
	if err != nil {
		clusterError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, SubmitReply{DriverID: reply.DriverID, Warning: reply.Warning})
}

func (s *Server) apiKill(w http.ResponseWriter, r *http.Request) {
	if s.forbidden(w, r) {
		return
	}
	id := r.PathValue("id")
	wantDriver := strings.HasPrefix(r.URL.Path, "/api/v1/drivers/")
	if wantDriver != strings.HasPrefix(id, schemas.DriverIDPrefix) {
		jsonError(w, http.StatusBadRequest, "%q is not a %s id", id, map[bool]string{true: "driver", false: "app"}[wantDriver])
		return
	}
	ack, err := s.admin.Kill(r.Context(), id)
	if err != nil {
		if isForm(r) {
			http.Error(w, err.Error(), httpCode(err))
			return
		}
		clusterError(w, err)
		return
	}
	if isForm(r) {
		page := "/apps/"
		if wantDriver {
			page = "/drivers/"
		}
		http.Redirect(w, r, page+id, http.StatusSeeOther)
		return
	}
	writeJSON(w, http.StatusOK, ack)
}
