package registration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/bustest"
	"github.com/stoker/stoker/schemas"
)

type env struct {
	nc  *nats.Conn
	st  *bus.Store
	svc *Service
}

func startEnv(t *testing.T) *env {
	t.Helper()
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.URL())
	st := bustest.Store(t, nc)
	s, err := New(Config{NC: bustest.Conn(t, srv.URL()), ID: "reg-test", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return &env{nc: nc, st: st, svc: s}
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// call sends req as an agent or client would and decodes the reply.
func call[T any](t *testing.T, e *env, subject string, req any) (*T, error) {
	t.Helper()
	out := new(T)
	err := bus.Call(ctxT(t), e.nc, subject, req, out)
	return out, err
}

func mustCall[T any](t *testing.T, e *env, subject string, req any) *T {
	t.Helper()
	out, err := call[T](t, e, subject, req)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	return out
}

func wantCode(t *testing.T, err error, code int, text string) {
	t.Helper()
	var be *bus.Error
	if !errors.As(err, &be) {
		t.Fatalf("want error code %d, got %v", code, err)
	}
	if be.Code != code || !strings.Contains(be.Description, text) {
		t.Fatalf("want code %d containing %q, got %d %q", code, text, be.Code, be.Description)
	}
}

func put[T any](t *testing.T, e *env, kv jetstream.KeyValue, key string, v *T) uint64 {
	t.Helper()
	_, rev, err := bus.Mutate(ctxT(t), kv, key, func(*T) (*T, error) { return v, nil })
	if err != nil {
		t.Fatalf("put %s/%s: %v", kv.Bucket(), key, err)
	}
	return rev
}

func getWorker(t *testing.T, e *env, id string) (*schemas.Worker, uint64) {
	t.Helper()
	w, rev, err := bus.Get[schemas.Worker](ctxT(t), e.st.Workers, id)
	if err != nil {
		t.Fatalf("get worker %s: %v", id, err)
	}
	return w, rev
}

func getExec(t *testing.T, e *env, key string) (*schemas.Executor, uint64) {
	t.Helper()
	x, rev, err := bus.Get[schemas.Executor](ctxT(t), e.st.Executors, key)
	if err != nil {
		t.Fatalf("get executor %s: %v", key, err)
	}
	return x, rev
}

func getDriver(t *testing.T, e *env, id string) (*schemas.Driver, uint64) {
	t.Helper()
	d, rev, err := bus.Get[schemas.Driver](ctxT(t), e.st.Drivers, id)
	if err != nil {
		t.Fatalf("get driver %s: %v", id, err)
	}
	return d, rev
}

func getApp(t *testing.T, e *env, id string) *schemas.App {
	t.Helper()
	a, _, err := bus.Get[schemas.App](ctxT(t), e.st.Apps, id)
	if err != nil {
		t.Fatalf("get app %s: %v", id, err)
	}
	return a
}

func registration(wid, instance string) *schemas.RegisterWorker {
	return &schemas.RegisterWorker{WorkerID: wid, Instance: instance, Host: "host-" + wid, Cores: 8, MemoryMB: 8192}
}

func TestService_Register_PersistsAliveRecord(t *testing.T) {
	e := startEnv(t)
	put(t, e, e.st.Cluster, bus.KeyClusterState, &schemas.Cluster{Epoch: 7, State: schemas.ClusterAlive})

	r := mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), registration("w1", "i1"))
	if r.Duplicate || r.Replaced != "" || r.HeartbeatIntervalMS != 1000 || r.Epoch != 7 || r.WorkerID != "w1" {
		t.Fatalf("reply = %+v", r)
	}
	w, _ := getWorker(t, e, "w1")
	if w.State != schemas.WorkerAlive || w.Instance != "i1" || w.Cores != 8 || w.MemoryMB != 8192 ||
		w.Host != "host-w1" || w.Epoch != 7 || w.RegisteredAt.IsZero() || w.UpdatedAt.IsZero() {
		t.Fatalf("record = %+v", w)
	}
}

func TestService_Register_ReplacesOldRecord(t *testing.T) {
	cases := []struct {
		name     string
		prior    schemas.WorkerState
		instance string
	}{
		{"dead", schemas.WorkerDead, "old"},
		{"unknown becomes alive (SPARK-46346)", schemas.WorkerUnknown, "old"},
		{"decommissioned", schemas.WorkerDecommissioned, "old"},
		{"restarted agent", schemas.WorkerAlive, "old"},
		{"unknown with the same instance", schemas.WorkerUnknown, "new"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := startEnv(t)
			put(t, e, e.st.Workers, "w1", &schemas.Worker{ID: "w1", Instance: c.instance, Cores: 2, MemoryMB: 100, State: c.prior})
			r := mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), registration("w1", "new"))
			if r.Duplicate || r.Replaced != c.prior {
				t.Fatalf("reply = %+v, want replaced %s", r, c.prior)
			}
			w, _ := getWorker(t, e, "w1")
			if w.State != schemas.WorkerAlive || w.Instance != "new" || w.Cores != 8 {
				t.Fatalf("record = %+v", w)
			}
		})
	}
}

func TestService_Register_DuplicateIsAcknowledged(t *testing.T) {
	e := startEnv(t)
	mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), registration("w1", "i1"))
	_, rev1 := getWorker(t, e, "w1")
	r := mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), registration("w1", "i1"))
	if !r.Duplicate || r.Replaced != "" {
		t.Fatalf("reply = %+v, want duplicate", r)
	}
	if _, rev2 := getWorker(t, e, "w1"); rev2 != rev1 {
		t.Fatalf("duplicate registration wrote a new revision: %d → %d", rev1, rev2)
	}
}

func TestService_Register_SubjectMismatchRefused(t *testing.T) {
	e := startEnv(t)
	_, err := call[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w2"), registration("w1", "i1"))
	wantCode(t, err, 400, "does not match subject")
	if _, _, err := bus.Get[schemas.Worker](ctxT(t), e.st.Workers, "w1"); !errors.Is(err, bus.ErrNotFound) {
		t.Fatalf("refused registration wrote a record: %v", err)
	}
}

func TestService_Register_Reconciles(t *testing.T) {
	e := startEnv(t)
	app := schemas.NewAppID(time.Now())
	put(t, e, e.st.Apps, app, &schemas.App{ID: app, State: schemas.AppRunning, ConsecutiveFailures: 2})
	put(t, e, e.st.Workers, "w1", &schemas.Worker{ID: "w1", Instance: "old", Cores: 8, MemoryMB: 8192, State: schemas.WorkerAlive})
	ex := func(id int, wid string, st schemas.ExecutorState) {
		put(t, e, e.st.Executors, schemas.ExecutorKey(app, id), &schemas.Executor{AppID: app, ID: id, WorkerID: wid, Cores: 1, MemoryMB: 100, State: st})
	}
	ex(0, "w1", schemas.ExecutorRunning)   // not listed → LOST
	ex(1, "w1", schemas.ExecutorLaunching) // listed → RUNNING
	ex(2, "w2", schemas.ExecutorRunning)   // listed but elsewhere → kill
	// 3: listed, missing → kill
	ex(4, "w1", schemas.ExecutorKilled)    // listed, terminal → kill
	ex(5, "w2", schemas.ExecutorRunning)   // elsewhere, not listed → untouched
	ex(6, "w1", schemas.ExecutorRunning)   // listed, running → untouched
	ex(7, "w1", schemas.ExecutorLaunching) // not listed → LOST
	drv := func(id, wid string, st schemas.DriverState, supervise bool) {
		put(t, e, e.st.Drivers, id, &schemas.Driver{ID: id, WorkerID: wid, Cores: 1, MemoryMB: 100, State: st, Supervise: supervise, Command: []string{"x"}})
	}
	drv("driver-1", "w1", schemas.DriverRunning, false)    // not listed, unsupervised → ERROR
	drv("driver-2", "w1", schemas.DriverRelaunching, true) // not listed, supervised → SUBMITTED
	drv("driver-3", "w1", schemas.DriverFinished, false)   // listed, terminal → kill
	drv("driver-4", "w1", schemas.DriverRunning, false)    // listed → kept
	drv("driver-5", "w2", schemas.DriverRunning, false)    // listed, elsewhere → kill
	// driver-6: listed, missing → kill

	req := registration("w1", "new")
	for _, id := range []int{1, 2, 3, 4, 6} {
		req.Executors = append(req.Executors, schemas.RunningExecutor{AppID: app, ExecutorID: id, Cores: 1, MemoryMB: 100, State: schemas.ExecutorRunning, PID: 1000 + id})
	}
	for _, id := range []string{"driver-3", "driver-4", "driver-5", "driver-6"} {
		req.Drivers = append(req.Drivers, schemas.RunningDriver{DriverID: id, Cores: 1, MemoryMB: 100, State: schemas.DriverRunning})
	}
	r := mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), req)
	if r.Replaced != schemas.WorkerAlive {
		t.Fatalf("reply = %+v", r)
	}
	key := func(id int) string { return schemas.ExecutorKey(app, id) }
	wantKillE := []string{key(2), key(3), key(4)}
	if strings.Join(r.KillExecutors, ",") != strings.Join(wantKillE, ",") {
		t.Fatalf("kill executors = %v, want %v", r.KillExecutors, wantKillE)
	}
	if strings.Join(r.KillDrivers, ",") != "driver-3,driver-5,driver-6" {
		t.Fatalf("kill drivers = %v", r.KillDrivers)
	}
	for id, want := range map[int]schemas.ExecutorState{
		0: schemas.ExecutorLost, 1: schemas.ExecutorRunning, 2: schemas.ExecutorRunning,
		4: schemas.ExecutorKilled, 5: schemas.ExecutorRunning, 6: schemas.ExecutorRunning, 7: schemas.ExecutorLost,
	} {
		if x, _ := getExec(t, e, key(id)); x.State != want {
			t.Errorf("executor %d = %s, want %s", id, x.State, want)
		}
	}
	if x, _ := getExec(t, e, key(1)); x.PID != 1001 {
		t.Errorf("promoted executor pid = %d, want 1001", x.PID)
	}
	if a := getApp(t, e, app); a.ConsecutiveFailures != 0 {
		t.Errorf("an executor reached RUNNING: failures = %d, want 0", a.ConsecutiveFailures)
	}
	// The lost-driver rule, as in the scheduler and recovery: ERROR, not
	// FAILED (issue 15), and it keeps naming the worker it ran on.
	if d, _ := getDriver(t, e, "driver-1"); d.State != schemas.DriverError || d.WorkerID != "w1" ||
		d.Message != "worker w1 re-registered without it" {
		t.Errorf("driver-1 = %s on %q %q, want ERROR on w1", d.State, d.WorkerID, d.Message)
	}
	if d, _ := getDriver(t, e, "driver-2"); d.State != schemas.DriverSubmitted || d.WorkerID != "" {
		t.Errorf("driver-2 = %s on %q, want SUBMITTED on no worker", d.State, d.WorkerID)
	}
	if d, _ := getDriver(t, e, "driver-4"); d.State != schemas.DriverRunning {
		t.Errorf("driver-4 = %s", d.State)
	}

	// A duplicate with an empty list ends nothing: it may predate a launch.
	ex(8, "w1", schemas.ExecutorLaunching)
	r = mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), registration("w1", "new"))
	if !r.Duplicate {
		t.Fatalf("want duplicate, got %+v", r)
	}
	if x, _ := getExec(t, e, key(8)); x.State != schemas.ExecutorLaunching {
		t.Fatalf("duplicate registration changed executor 8 to %s", x.State)
	}
	if x, _ := getExec(t, e, key(6)); x.State != schemas.ExecutorRunning {
		t.Fatalf("duplicate registration changed executor 6 to %s", x.State)
	}
}

func TestService_Leave(t *testing.T) {
	e := startEnv(t)
	mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), registration("w1", "i1"))

	a := mustCall[schemas.Ack](t, e, bus.WorkerLeaveSubject("w1"), &schemas.WorkerLeaving{WorkerID: "w1", Instance: "other"})
	if a.OK {
		t.Fatalf("another instance decommissioned the worker: %+v", a)
	}
	a = mustCall[schemas.Ack](t, e, bus.WorkerLeaveSubject("w1"), &schemas.WorkerLeaving{WorkerID: "w1", Instance: "i1"})
	if !a.OK {
		t.Fatalf("leave refused: %+v", a)
	}
	if w, _ := getWorker(t, e, "w1"); w.State != schemas.WorkerDecommissioned {
		t.Fatalf("state = %s", w.State)
	}
	_, rev := getWorker(t, e, "w1")
	a = mustCall[schemas.Ack](t, e, bus.WorkerLeaveSubject("w1"), &schemas.WorkerLeaving{WorkerID: "w1", Instance: "i1"})
	if a.OK || !strings.Contains(a.Message, "already DECOMMISSIONED") {
		t.Fatalf("second leave: %+v", a)
	}
	if _, rev2 := getWorker(t, e, "w1"); rev2 != rev {
		t.Fatalf("second leave wrote")
	}
}

func stateChange(wid, app string, id int, st schemas.ExecutorState) *schemas.StateChange {
	return &schemas.StateChange{WorkerID: wid, AppID: app, ExecutorID: id, State: string(st)}
}

func TestService_State_Executor(t *testing.T) {
	e := startEnv(t)
	app := schemas.NewAppID(time.Now())
	put(t, e, e.st.Apps, app, &schemas.App{ID: app, State: schemas.AppRunning, ConsecutiveFailures: 3})
	for id, wid := range map[int]string{0: "w1", 1: "w1", 2: "w2"} {
		put(t, e, e.st.Executors, schemas.ExecutorKey(app, id), &schemas.Executor{AppID: app, ID: id, WorkerID: wid, Cores: 1, MemoryMB: 10, State: schemas.ExecutorLaunching})
	}
	subj := bus.WorkerStateSubject("w1")

	// RUNNING: applied, failures reset.
	sc := stateChange("w1", app, 0, schemas.ExecutorRunning)
	sc.PID = 4242
	if ack := mustCall[schemas.StateAck](t, e, subj, sc); ack.Kill {
		t.Fatalf("ack = %+v", ack)
	}
	x, rev := getExec(t, e, schemas.ExecutorKey(app, 0))
	if x.State != schemas.ExecutorRunning || x.PID != 4242 {
		t.Fatalf("executor = %+v", x)
	}
	if a := getApp(t, e, app); a.ConsecutiveFailures != 0 {
		t.Fatalf("failures = %d, want 0 after RUNNING", a.ConsecutiveFailures)
	}
	// The agent retries: the same report is harmless.
	mustCall[schemas.StateAck](t, e, subj, sc)
	if _, rev2 := getExec(t, e, schemas.ExecutorKey(app, 0)); rev2 != rev {
		t.Fatalf("repeated report wrote revision %d after %d", rev2, rev)
	}

	// FAILED: applied with the code, failures +1 exactly once.
	code := 3
	fc := stateChange("w1", app, 1, schemas.ExecutorFailed)
	fc.ExitCode, fc.Message = &code, "exit status 3"
	for i := 0; i < 2; i++ {
		if ack := mustCall[schemas.StateAck](t, e, subj, fc); ack.Kill {
			t.Fatalf("ack = %+v", ack)
		}
	}
	x, _ = getExec(t, e, schemas.ExecutorKey(app, 1))
	if x.State != schemas.ExecutorFailed || x.ExitCode == nil || *x.ExitCode != 3 || x.Message != "exit status 3" {
		t.Fatalf("executor = %+v", x)
	}
	if a := getApp(t, e, app); a.ConsecutiveFailures != 1 {
		t.Fatalf("failures = %d, want 1", a.ConsecutiveFailures)
	}

	// Reports the cluster cannot accept: the agent is told to kill.
	put(t, e, e.st.Executors, schemas.ExecutorKey(app, 3), &schemas.Executor{AppID: app, ID: 3, WorkerID: "w1", State: schemas.ExecutorLost})
	for _, c := range []struct {
		name string
		id   int
		want string
	}{
		{"placed elsewhere (replaced)", 2, "placed on worker w2"},
		{"unknown", 9, "unknown"},
		{"already lost", 3, "already LOST"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ack := mustCall[schemas.StateAck](t, e, subj, stateChange("w1", app, c.id, schemas.ExecutorRunning))
			if !ack.Kill || !strings.Contains(ack.Reason, c.want) {
				t.Fatalf("ack = %+v, want kill with %q", ack, c.want)
			}
		})
	}
	// A late terminal report for a LOST executor keeps the first ending.
	if ack := mustCall[schemas.StateAck](t, e, subj, stateChange("w1", app, 3, schemas.ExecutorKilled)); ack.Kill {
		t.Fatalf("ack = %+v", ack)
	}
	if x, _ := getExec(t, e, schemas.ExecutorKey(app, 3)); x.State != schemas.ExecutorLost {
		t.Fatalf("state = %s, want LOST", x.State)
	}
	// The body must name the subject's worker.
	_, err := call[schemas.StateAck](t, e, bus.WorkerStateSubject("w2"), stateChange("w1", app, 0, schemas.ExecutorRunning))
	wantCode(t, err, 400, "does not match")
}

func TestService_State_Driver(t *testing.T) {
	e := startEnv(t)
	put(t, e, e.st.Drivers, "driver-a", &schemas.Driver{ID: "driver-a", WorkerID: "w1", State: schemas.DriverRunning, Attempts: 1, Supervise: true, Command: []string{"x"}})
	put(t, e, e.st.Drivers, "driver-b", &schemas.Driver{ID: "driver-b", WorkerID: "w2", State: schemas.DriverRunning, Attempts: 1, Command: []string{"x"}})
	subj := bus.WorkerStateSubject("w1")
	report := func(id string, st schemas.DriverState, mut func(*schemas.StateChange)) *schemas.StateAck {
		sc := &schemas.StateChange{WorkerID: "w1", DriverID: id, State: string(st)}
		if mut != nil {
			mut(sc)
		}
		return mustCall[schemas.StateAck](t, e, subj, sc)
	}
	report("driver-a", schemas.DriverRunning, func(sc *schemas.StateChange) { sc.PID = 77 })
	if d, _ := getDriver(t, e, "driver-a"); d.PID != 77 || d.State != schemas.DriverRunning {
		t.Fatalf("driver = %+v", d)
	}
	code := 1
	report("driver-a", schemas.DriverRelaunching, func(sc *schemas.StateChange) { sc.Attempt, sc.ExitCode = 2, &code })
	d, rev := getDriver(t, e, "driver-a")
	if d.State != schemas.DriverRelaunching || d.Attempts != 2 {
		t.Fatalf("driver = %+v", d)
	}
	report("driver-a", schemas.DriverRelaunching, func(sc *schemas.StateChange) { sc.Attempt, sc.ExitCode = 2, &code })
	if _, rev2 := getDriver(t, e, "driver-a"); rev2 != rev {
		t.Fatalf("repeated report wrote")
	}
	// A smaller attempt never lowers the count.
	report("driver-a", schemas.DriverRunning, func(sc *schemas.StateChange) { sc.PID, sc.Attempt = 78, 1 })
	if d, _ := getDriver(t, e, "driver-a"); d.Attempts != 2 || d.PID != 78 || d.ExitCode != nil {
		t.Fatalf("driver = %+v", d)
	}
	zero := 0
	report("driver-a", schemas.DriverFinished, func(sc *schemas.StateChange) { sc.ExitCode = &zero })
	if d, _ := getDriver(t, e, "driver-a"); d.State != schemas.DriverFinished || d.ExitCode == nil || *d.ExitCode != 0 {
		t.Fatalf("driver = %+v", d)
	}
	if ack := report("driver-a", schemas.DriverRunning, nil); !ack.Kill {
		t.Fatalf("RUNNING after FINISHED: ack = %+v, want kill", ack)
	}
	if ack := report("driver-b", schemas.DriverRunning, nil); !ack.Kill || !strings.Contains(ack.Reason, "w2") {
		t.Fatalf("driver on w2: ack = %+v", ack)
	}
	if ack := report("driver-zzz", schemas.DriverFailed, nil); !ack.Kill {
		t.Fatalf("unknown driver: ack = %+v", ack)
	}
}

func TestService_SubmitDriver(t *testing.T) {
	e := startEnv(t)
	ok := &schemas.SubmitDriver{Name: "pi", Command: []string{"/bin/true"}, Cores: 2, MemoryMB: 512, Supervise: true}
	r := mustCall[schemas.SubmitDriverReply](t, e, bus.APIDriversSubmit, ok)
	if !strings.HasPrefix(r.DriverID, "driver-") || !strings.Contains(r.Warning, "no registered worker has 2 cores and 512M free") {
		t.Fatalf("reply = %+v", r)
	}
	d, _ := getDriver(t, e, r.DriverID)
	if d.State != schemas.DriverSubmitted || d.Attempts != 0 || !d.Supervise || d.Cores != 2 || d.SubmittedAt.IsZero() {
		t.Fatalf("driver = %+v", d)
	}
	mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), registration("w1", "i1"))
	if r := mustCall[schemas.SubmitDriverReply](t, e, bus.APIDriversSubmit, ok); r.Warning != "" {
		t.Fatalf("a worker can hold it, yet warning %q", r.Warning)
	}

	bad := []struct {
		name string
		req  schemas.SubmitDriver
		want string
	}{
		{"zero cores", schemas.SubmitDriver{Command: []string{"x"}, Cores: 0, MemoryMB: 1}, "cores must be > 0"},
		{"negative cores", schemas.SubmitDriver{Command: []string{"x"}, Cores: -2, MemoryMB: 1}, "cores must be > 0"},
		{"zero memory", schemas.SubmitDriver{Command: []string{"x"}, Cores: 1, MemoryMB: 0}, "memory must be > 0"},
		{"negative memory", schemas.SubmitDriver{Command: []string{"x"}, Cores: 1, MemoryMB: -5}, "memory must be > 0"},
		{"empty command", schemas.SubmitDriver{Cores: 1, MemoryMB: 1}, "command is empty"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			_, err := call[schemas.SubmitDriverReply](t, e, bus.APIDriversSubmit, &c.req)
			wantCode(t, err, 400, c.want)
		})
	}
	list := mustCall[schemas.DriverList](t, e, bus.APIDriversList, &schemas.ListRequest{})
	if len(list.Drivers) != 2 {
		t.Fatalf("refused submissions were stored: %d drivers", len(list.Drivers))
	}
}

func TestService_KillDriver(t *testing.T) {
	e := startEnv(t)
	sub := mustCall[schemas.SubmitDriverReply](t, e, bus.APIDriversSubmit, &schemas.SubmitDriver{Command: []string{"x"}, Cores: 1, MemoryMB: 1})
	put(t, e, e.st.Drivers, "driver-run", &schemas.Driver{ID: "driver-run", WorkerID: "w1", State: schemas.DriverRunning, Command: []string{"x"}})
	put(t, e, e.st.Drivers, "driver-done", &schemas.Driver{ID: "driver-done", State: schemas.DriverFinished, Command: []string{"x"}})

	mustCall[schemas.Ack](t, e, bus.APIDriversKill, &schemas.KillRequest{ID: sub.DriverID})
	if d, _ := getDriver(t, e, sub.DriverID); d.State != schemas.DriverKilled {
		t.Fatalf("submitted driver: %s, want KILLED", d.State)
	}
	mustCall[schemas.Ack](t, e, bus.APIDriversKill, &schemas.KillRequest{ID: "driver-run"})
	if d, _ := getDriver(t, e, "driver-run"); d.State != schemas.DriverRunning || !d.KillRequested {
		t.Fatalf("running driver: %+v, want kill requested", d)
	}
	mustCall[schemas.Ack](t, e, bus.APIDriversKill, &schemas.KillRequest{ID: "driver-run"}) // again: fine

	_, err := call[schemas.Ack](t, e, bus.APIDriversKill, &schemas.KillRequest{ID: "driver-done"})
	wantCode(t, err, 409, "driver driver-done already FINISHED")
	_, err = call[schemas.Ack](t, e, bus.APIDriversKill, &schemas.KillRequest{ID: "driver-nope"})
	wantCode(t, err, 404, "not found")
	_, err = call[schemas.Ack](t, e, bus.APIDriversKill, &schemas.KillRequest{ID: schemas.NewAppID(time.Now())})
	wantCode(t, err, 400, "not a driver id")
}

func TestService_Apps(t *testing.T) {
	e := startEnv(t)
	reg := &schemas.RegisterApp{Name: "pi", Executor: schemas.ExecutorSpec{Command: []string{"x"}, Cores: 2, MemoryMB: 256}}
	r := mustCall[schemas.AppRegistered](t, e, bus.APIAppsRegister, reg)
	if !strings.HasPrefix(r.AppID, "app-") || r.HeartbeatIntervalMS != 1000 || !strings.Contains(r.Warning, "no registered worker") {
		t.Fatalf("reply = %+v", r)
	}
	if a := getApp(t, e, r.AppID); a.State != schemas.AppWaiting || a.Name != "pi" || a.Executor.Cores != 2 {
		t.Fatalf("app = %+v", a)
	}
	_, err := call[schemas.AppRegistered](t, e, bus.APIAppsRegister, &schemas.RegisterApp{Executor: schemas.ExecutorSpec{Command: []string{"x"}, Cores: 0, MemoryMB: 1}})
	wantCode(t, err, 400, "cores must be > 0")

	mustCall[schemas.Ack](t, e, bus.APIAppsUnregister, &schemas.UnregisterApp{AppID: r.AppID})
	if a := getApp(t, e, r.AppID); a.State != schemas.AppFinished {
		t.Fatalf("state = %s", a.State)
	}
	// Idempotent.
	if a := mustCall[schemas.Ack](t, e, bus.APIAppsUnregister, &schemas.UnregisterApp{AppID: r.AppID, State: schemas.AppFailed}); !a.OK {
		t.Fatalf("second unregister: %+v", a)
	}
	if a := getApp(t, e, r.AppID); a.State != schemas.AppFinished {
		t.Fatalf("second unregister changed the state to %s", a.State)
	}
	_, err = call[schemas.Ack](t, e, bus.APIAppsKill, &schemas.KillRequest{ID: r.AppID})
	wantCode(t, err, 409, "already FINISHED")

	r2 := mustCall[schemas.AppRegistered](t, e, bus.APIAppsRegister, reg)
	mustCall[schemas.Ack](t, e, bus.APIAppsKill, &schemas.KillRequest{ID: r2.AppID})
	if a := getApp(t, e, r2.AppID); a.State != schemas.AppKilled {
		t.Fatalf("state = %s", a.State)
	}
	r3 := mustCall[schemas.AppRegistered](t, e, bus.APIAppsRegister, reg)
	mustCall[schemas.Ack](t, e, bus.APIAppsUnregister, &schemas.UnregisterApp{AppID: r3.AppID, State: schemas.AppFailed, Message: "boom"})
	if a := getApp(t, e, r3.AppID); a.State != schemas.AppFailed || a.Message != "boom" {
		t.Fatalf("app = %+v", a)
	}
	missing := schemas.NewAppID(time.Now())
	_, err = call[schemas.Ack](t, e, bus.APIAppsKill, &schemas.KillRequest{ID: missing})
	wantCode(t, err, 404, "not found")
	_, err = call[schemas.Ack](t, e, bus.APIAppsUnregister, &schemas.UnregisterApp{AppID: missing})
	wantCode(t, err, 404, "not found")
	_, err = call[schemas.Ack](t, e, bus.APIAppsUnregister, &schemas.UnregisterApp{AppID: r3.AppID, State: schemas.AppRunning})
	wantCode(t, err, 400, "final app state")
}

func TestService_Lists(t *testing.T) {
	e := startEnv(t)
	mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w2"), registration("w2", "i2"))
	mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), registration("w1", "i1"))
	put(t, e, e.st.Workers, "w3", &schemas.Worker{ID: "w3", Cores: 100, MemoryMB: 100, State: schemas.WorkerDead})
	reg := mustCall[schemas.AppRegistered](t, e, bus.APIAppsRegister, &schemas.RegisterApp{Name: "a", Executor: schemas.ExecutorSpec{Command: []string{"x"}, Cores: 2, MemoryMB: 1000}})
	app := reg.AppID
	for id, st := range map[int]schemas.ExecutorState{0: schemas.ExecutorRunning, 1: schemas.ExecutorLaunching, 2: schemas.ExecutorFailed} {
		put(t, e, e.st.Executors, schemas.ExecutorKey(app, id), &schemas.Executor{AppID: app, ID: id, WorkerID: "w1", Cores: 2, MemoryMB: 1000, State: st})
	}
	d1 := mustCall[schemas.SubmitDriverReply](t, e, bus.APIDriversSubmit, &schemas.SubmitDriver{Command: []string{"x"}, Cores: 1, MemoryMB: 500})
	d2 := mustCall[schemas.SubmitDriverReply](t, e, bus.APIDriversSubmit, &schemas.SubmitDriver{Command: []string{"y"}, Cores: 1, MemoryMB: 500})
	if _, _, err := bus.Mutate(ctxT(t), e.st.Drivers, d1.DriverID, func(cur *schemas.Driver) (*schemas.Driver, error) {
		n := *cur
		n.State, n.WorkerID = schemas.DriverRunning, "w2"
		return &n, nil
	}); err != nil {
		t.Fatal(err)
	}

	wl := mustCall[schemas.WorkerList](t, e, bus.APIWorkersList, &schemas.ListRequest{})
	if len(wl.Workers) != 3 || wl.Workers[0].ID != "w1" || wl.Workers[1].ID != "w2" {
		t.Fatalf("workers = %+v", wl.Workers)
	}
	if w := wl.Workers[0]; w.CoresUsed != 4 || w.MemoryUsedMB != 2000 || w.Executors != 2 || w.Drivers != 0 {
		t.Fatalf("w1 = %+v", w)
	}
	if w := wl.Workers[1]; w.CoresUsed != 1 || w.MemoryUsedMB != 500 || w.Drivers != 1 {
		t.Fatalf("w2 = %+v", w)
	}
	wl = mustCall[schemas.WorkerList](t, e, bus.APIWorkersList, &schemas.ListRequest{IDs: []string{"w2"}})
	if len(wl.Workers) != 1 || wl.Workers[0].ID != "w2" {
		t.Fatalf("filtered workers = %+v", wl.Workers)
	}

	dl := mustCall[schemas.DriverList](t, e, bus.APIDriversList, &schemas.ListRequest{})
	if len(dl.Drivers) != 2 || dl.Drivers[0].SubmittedAt.After(dl.Drivers[1].SubmittedAt) {
		t.Fatalf("drivers = %+v", dl.Drivers)
	}
	dl = mustCall[schemas.DriverList](t, e, bus.APIDriversList, &schemas.ListRequest{IDs: []string{d2.DriverID}})
	if len(dl.Drivers) != 1 || dl.Drivers[0].ID != d2.DriverID {
		t.Fatalf("filtered drivers = %+v", dl.Drivers)
	}

	al := mustCall[schemas.AppList](t, e, bus.APIAppsList, &schemas.ListRequest{})
	if len(al.Apps) != 1 || al.Apps[0].CoresGranted != 4 || len(al.Apps[0].Executors) != 3 || al.Apps[0].ExecutorCores != 2 {
		t.Fatalf("apps = %+v", al.Apps)
	}

	st := mustCall[schemas.Status](t, e, bus.APIStatus, &schemas.ListRequest{})
	if st.Leader != nil || st.State != schemas.ClusterStandby {
		t.Fatalf("no lease: status = %+v", st)
	}
	if st.CoresTotal != 16 || st.CoresUsed != 5 || st.MemoryTotalMB != 16384 || st.MemoryUsedMB != 2500 {
		t.Fatalf("totals = %+v", st)
	}
	if st.Workers["ALIVE"] != 2 || st.Workers["DEAD"] != 1 || st.Drivers["SUBMITTED"] != 1 || st.Drivers["RUNNING"] != 1 || st.Apps["WAITING"] != 1 {
		t.Fatalf("counts = %+v %+v %+v", st.Workers, st.Drivers, st.Apps)
	}
	rev := put(t, e, e.st.Leader, bus.KeyScheduler, &schemas.Lease{Holder: "sched-1", Since: time.Now()})
	put(t, e, e.st.Cluster, bus.KeyClusterState, &schemas.Cluster{Epoch: rev, State: schemas.ClusterAlive})
	st = mustCall[schemas.Status](t, e, bus.APIStatus, &schemas.ListRequest{})
	if st.Leader == nil || st.Leader.ID != "sched-1" || st.Leader.Epoch != rev || st.State != schemas.ClusterAlive {
		t.Fatalf("with lease: status = %+v leader %+v", st, st.Leader)
	}

	// JSON in, JSON out, as with the nats CLI.
	m, err := e.nc.RequestMsg(&nats.Msg{Subject: bus.APIWorkersList, Data: []byte(`{}`),
		Header: nats.Header{bus.ContentType: []string{bus.ContentTypeJSON}}}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(m.Data), `"cores_used":4`) {
		t.Fatalf("JSON reply = %s", m.Data)
	}
}

// TestService_BadPayloads sends garbage on every subject: each gets a 400
// reply and the service keeps serving.
func TestService_BadPayloads(t *testing.T) {
	e := startEnv(t)
	subjects := []string{
		bus.WorkerRegisterSubject("w1"), bus.WorkerLeaveSubject("w1"), bus.WorkerStateSubject("w1"), bus.WorkerStatesSubject("w1"),
		bus.APIDriversSubmit, bus.APIDriversKill, bus.APIDriversList,
		bus.APIAppsRegister, bus.APIAppsUnregister, bus.APIAppsKill, bus.APIAppsList,
		bus.APIWorkersList, bus.APIStatus,
	}
	payloads := []struct {
		name string
		data []byte
		json bool
	}{
		{"msgpack garbage", []byte{0xc1, 0xff, 0x00, 0x13}, false},
		{"msgpack of the wrong shape", []byte{0x93, 0x01, 0x02, 0x03}, false},
		{"json garbage", []byte(`{"cores": "many"`), true},
		{"wrong type name", []byte(`{"type":"io.stoker.v1.nope"}`), true},
		{"empty", nil, false},
	}
	for _, subj := range subjects {
		for _, p := range payloads {
			t.Run(subj+"/"+p.name, func(t *testing.T) {
				m := &nats.Msg{Subject: subj, Data: p.data, Header: nats.Header{}}
				if p.json {
					m.Header.Set(bus.ContentType, bus.ContentTypeJSON)
				}
				r, err := e.nc.RequestMsg(m, 5*time.Second)
				if err != nil {
					t.Fatalf("no reply: %v", err)
				}
				if code := r.Header.Get(bus.ErrorCodeHeader); code != "400" {
					t.Fatalf("code = %q (%q), want 400", code, r.Header.Get(bus.ErrorHeader))
				}
				if r.Header.Get(bus.ErrorHeader) == "" {
					t.Fatal("no error text")
				}
			})
		}
	}
	if e.svc.Counters.BadInput.Load() == 0 {
		t.Fatal("bad input not counted")
	}
	// Still serving.
	mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), registration("w1", "i1"))
	mustCall[schemas.Status](t, e, bus.APIStatus, &schemas.ListRequest{})
}

func TestNew_Validates(t *testing.T) {
	srv := bustest.Start(t)
	nc := bustest.Conn(t, srv.URL())
	cases := []struct {
		name string
		cfg  Config
	}{
		{"no connection", Config{}},
		{"timeout not above interval", Config{NC: nc, HeartbeatInterval: time.Second, WorkerTimeout: time.Second}},
		{"negative", Config{NC: nc, HeartbeatInterval: -time.Second}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := New(c.cfg); err == nil {
				t.Fatal("want an error")
			}
		})
	}
	s, err := New(Config{NC: nc})
	if err != nil || s.cfg.HeartbeatInterval != time.Second || s.cfg.WorkerTimeout != 5*time.Second || s.ID() == "" {
		t.Fatalf("defaults: %+v %v", s.cfg, err)
	}
	s.Stop() // Stop before Start is harmless.
	s.Stop()
}

// Issue 11 a: an executor the scheduler places on the worker after the
// registration wrote it ALIVE is not in the picture read before that write,
// so the restarted agent's list (which cannot name it yet) does not make it
// LOST. One placed before the read and not listed still is.
func TestRegister_ExecutorPlacedAfterAliveIsNotLost(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t)
	const app = "app-20250101000000-0001"
	put(t, e, e.st.Workers, "w1", &schemas.Worker{ID: "w1", Instance: "old", State: schemas.WorkerDead, Cores: 8, MemoryMB: 8192})
	before := &schemas.Executor{AppID: app, ID: 0, WorkerID: "w1", Cores: 1, MemoryMB: 100, State: schemas.ExecutorRunning}
	put(t, e, e.st.Executors, before.Key(), before)

	p, err := e.svc.placedOn(ctx, "w1")
	if err != nil || len(p.executors) != 1 {
		t.Fatalf("placedOn: %v %v", p.executors, err)
	}
	// The window: ALIVE is written, the scheduler places an executor.
	after := &schemas.Executor{AppID: app, ID: 1, WorkerID: "w1", Cores: 1, MemoryMB: 100, State: schemas.ExecutorLaunching}
	put(t, e, e.st.Executors, after.Key(), after)

	if _, _, err := e.svc.reconcile(ctx, registration("w1", "new"), p, nil); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if x, _ := getExec(t, e, after.Key()); x.State != schemas.ExecutorLaunching {
		t.Errorf("executor placed after the read = %s, want LAUNCHING", x.State)
	}
	if x, _ := getExec(t, e, before.Key()); x.State != schemas.ExecutorLost {
		t.Errorf("executor placed before and not listed = %s, want LOST", x.State)
	}
}

// Every phase of the reconciliation reports its error; none overwrites another's.
func TestRegister_ReconcileJoinsErrors(t *testing.T) {
	e := startEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := registration("w1", "new")
	req.Executors = []schemas.RunningExecutor{{AppID: "app-20250101000000-0001", ExecutorID: 0}}
	req.Drivers = []schemas.RunningDriver{{DriverID: "driver-20250101000000-0001"}}
	readErr := errors.New("cannot read what is placed")
	_, _, err := e.svc.reconcile(ctx, req, placed{}, readErr)
	if !errors.Is(err, readErr) || !errors.Is(err, context.Canceled) ||
		!strings.Contains(err.Error(), "executor app-") || !strings.Contains(err.Error(), "driver driver-") {
		t.Fatalf("want the read error and both listed phases' errors joined, got %v", err)
	}
}

// An executor whose FAILED write landed but whose count did not (the
// writer died between the two writes): the agent's retried report counts
// it, once, however often it comes; a failure the scheduler counted
// already (a refused launch) is not counted again.
func TestService_State_FailureCountedOncePerExecutor(t *testing.T) {
	e := startEnv(t)
	app := schemas.NewAppID(time.Now())
	put(t, e, e.st.Apps, app, &schemas.App{ID: app, State: schemas.AppRunning, FailedExecutors: []int{5}, ConsecutiveFailures: 1})
	for _, id := range []int{4, 5} {
		put(t, e, e.st.Executors, schemas.ExecutorKey(app, id), &schemas.Executor{AppID: app, ID: id, WorkerID: "w1", Cores: 1, MemoryMB: 10, State: schemas.ExecutorFailed})
	}
	subj := bus.WorkerStateSubject("w1")
	for i := 0; i < 3; i++ {
		for _, id := range []int{4, 5} {
			if ack := mustCall[schemas.StateAck](t, e, subj, stateChange("w1", app, id, schemas.ExecutorFailed)); ack.Kill {
				t.Fatalf("ack = %+v", ack)
			}
		}
	}
	a := getApp(t, e, app)
	if a.ConsecutiveFailures != 2 || len(a.FailedExecutors) != 2 {
		t.Fatalf("failures = %d %v, want 2 (executors 4 and 5, once each)", a.ConsecutiveFailures, a.FailedExecutors)
	}
}

// A report from an agent instance the worker no longer has is refused with
// 409, as that instance's registration would be, and changes nothing.
func TestService_State_ReplacedInstanceRefused(t *testing.T) {
	e := startEnv(t)
	app := schemas.NewAppID(time.Now())
	put(t, e, e.st.Apps, app, &schemas.App{ID: app, State: schemas.AppRunning})
	put(t, e, e.st.Workers, "w1", &schemas.Worker{ID: "w1", Instance: "new", Cores: 4, MemoryMB: 1024, State: schemas.WorkerAlive,
		RegisteredAt: time.Now(), UpdatedAt: time.Now()})
	key := schemas.ExecutorKey(app, 0)
	put(t, e, e.st.Executors, key, &schemas.Executor{AppID: app, ID: 0, WorkerID: "w1", Cores: 1, MemoryMB: 10, State: schemas.ExecutorRunning})
	subj := bus.WorkerStateSubject("w1")
	old := stateChange("w1", app, 0, schemas.ExecutorFailed)
	old.Instance = "old"
	_, err := call[schemas.StateAck](t, e, subj, old)
	wantCode(t, err, 409, "replaced")
	if x, _ := getExec(t, e, key); x.State != schemas.ExecutorRunning {
		t.Fatalf("a replaced instance's report changed the executor: %s", x.State)
	}
	if a := getApp(t, e, app); a.ConsecutiveFailures != 0 {
		t.Fatalf("a replaced instance's report counted a failure: %d", a.ConsecutiveFailures)
	}
	cur := stateChange("w1", app, 0, schemas.ExecutorFailed)
	cur.Instance = "new"
	mustCall[schemas.StateAck](t, e, subj, cur)
	if x, _ := getExec(t, e, key); x.State != schemas.ExecutorFailed {
		t.Fatalf("the current instance's report was not applied: %s", x.State)
	}
}

// TestService_Cordon: stoker.api.workers.cordon sets and clears the flag,
// writes an event, refuses an unknown worker, and a re-registering agent
// (a restart) keeps the cordon.
func TestService_Cordon(t *testing.T) {
	e := startEnv(t)
	events, err := e.nc.SubscribeSync(bus.EventSubject("worker", "w1"))
	if err != nil {
		t.Fatal(err)
	}
	mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), registration("w1", "i1"))
	ack := mustCall[schemas.Ack](t, e, bus.APIWorkersCordon, &schemas.CordonRequest{WorkerID: "w1", Cordon: true})
	if !ack.OK || !strings.Contains(ack.Message, "cordoned") {
		t.Fatalf("cordon ack = %+v", ack)
	}
	if w, _ := getWorker(t, e, "w1"); !w.Cordoned || w.State != schemas.WorkerAlive {
		t.Fatalf("record = %+v, want ALIVE and cordoned", w)
	}
	found := false
	for !found {
		m, err := events.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no cordon event: %v", err)
		}
		found = strings.Contains(string(m.Data), "cordoned on request")
	}
	if ack := mustCall[schemas.Ack](t, e, bus.APIWorkersCordon, &schemas.CordonRequest{WorkerID: "w1", Cordon: true}); !strings.Contains(ack.Message, "already") {
		t.Fatalf("second cordon ack = %+v", ack)
	}

	mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), registration("w1", "i2")) // restarted agent
	if w, _ := getWorker(t, e, "w1"); !w.Cordoned || w.Instance != "i2" {
		t.Fatalf("after re-registration: %+v, want cordoned kept", w)
	}
	list := mustCall[schemas.WorkerList](t, e, bus.APIWorkersList, &schemas.ListRequest{})
	if len(list.Workers) != 1 || !list.Workers[0].Cordoned {
		t.Fatalf("list = %+v, want w1 cordoned", list.Workers)
	}

	mustCall[schemas.Ack](t, e, bus.APIWorkersCordon, &schemas.CordonRequest{WorkerID: "w1"})
	if w, _ := getWorker(t, e, "w1"); w.Cordoned {
		t.Fatalf("uncordoned record = %+v", w)
	}
	_, err = call[schemas.Ack](t, e, bus.APIWorkersCordon, &schemas.CordonRequest{WorkerID: "nope", Cordon: true})
	wantCode(t, err, bus.CodeNotFound, "worker nope not found")
	_, err = call[schemas.Ack](t, e, bus.APIWorkersCordon, &schemas.CordonRequest{WorkerID: "bad id!", Cordon: true})
	wantCode(t, err, bus.CodeBadRequest, "worker")
}

// TestService_Drain: stoker.api.workers.drain sets the worker's drain (an
// event, DECOMMISSIONING in the list), a second request only moves the
// deadline earlier, the agent may drain itself only as the registered
// instance, a re-registering agent keeps the drain, and a DECOMMISSIONED
// worker's same instance is acknowledged without coming back ALIVE while a
// restarted agent (new instance) registers a fresh worker.
func TestService_Drain(t *testing.T) {
	e := startEnv(t)
	events, err := e.nc.SubscribeSync(bus.EventSubject("worker", "w1"))
	if err != nil {
		t.Fatal(err)
	}
	mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), registration("w1", "i1"))
	before := time.Now()
	ack := mustCall[schemas.Ack](t, e, bus.APIWorkersDrain, &schemas.DrainRequest{WorkerID: "w1", DeadlineMS: 600_000})
	if !ack.OK || !strings.Contains(ack.Message, "draining") {
		t.Fatalf("drain ack = %+v", ack)
	}
	w, _ := getWorker(t, e, "w1")
	if w.State != schemas.WorkerAlive || w.Drain == nil || w.Drain.By != "request" ||
		w.Drain.Deadline.Before(before.Add(9*time.Minute)) || w.Placeable() || w.Phase() != schemas.PhaseDecommissioning {
		t.Fatalf("record = %+v drain %+v, want ALIVE draining ~10m", w, w.Drain)
	}
	for found := false; !found; {
		m, err := events.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no drain event: %v", err)
		}
		found = strings.Contains(string(m.Data), schemas.PhaseDecommissioning)
	}
	deadline := w.Drain.Deadline
	if ack := mustCall[schemas.Ack](t, e, bus.APIWorkersDrain, &schemas.DrainRequest{WorkerID: "w1", DeadlineMS: 3_600_000}); !strings.Contains(ack.Message, "already") {
		t.Fatalf("later deadline ack = %+v", ack)
	}
	// The agent's own drain: only the registered instance; an earlier deadline wins.
	_, err = call[schemas.Ack](t, e, bus.WorkerDrainSubject("w1"), &schemas.DrainRequest{WorkerID: "w1", Instance: "other", DeadlineMS: 1000})
	wantCode(t, err, bus.CodeConflict, "another agent instance")
	mustCall[schemas.Ack](t, e, bus.WorkerDrainSubject("w1"), &schemas.DrainRequest{WorkerID: "w1", Instance: "i1", DeadlineMS: 60_000})
	if w, _ := getWorker(t, e, "w1"); !w.Drain.Deadline.Before(deadline) || w.Drain.By != "request" {
		t.Fatalf("after the agent's earlier deadline: %+v", w.Drain)
	}
	list := mustCall[schemas.WorkerList](t, e, bus.APIWorkersList, &schemas.ListRequest{States: []string{schemas.PhaseDecommissioning}})
	if len(list.Workers) != 1 || list.Workers[0].Drain == nil {
		t.Fatalf("list --state DECOMMISSIONING = %+v", list.Workers)
	}

	mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), registration("w1", "i2")) // restarted mid-drain
	if w, _ := getWorker(t, e, "w1"); w.Drain == nil || w.Instance != "i2" {
		t.Fatalf("after a restart mid-drain: %+v, want the drain kept", w)
	}

	// Drained (the scheduler's write), then the same instance registers again.
	if _, _, err := bus.Mutate(context.Background(), e.st.Workers, "w1", func(cur *schemas.Worker) (*schemas.Worker, error) {
		n := *cur
		n.State = schemas.WorkerDecommissioned
		return &n, nil
	}); err != nil {
		t.Fatal(err)
	}
	reg := mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), registration("w1", "i2"))
	if !reg.Decommissioned || !reg.Duplicate {
		t.Fatalf("same instance after the drain: %+v, want acknowledged as decommissioned", reg)
	}
	if w, _ := getWorker(t, e, "w1"); w.State != schemas.WorkerDecommissioned {
		t.Fatalf("the drained instance came back %s", w.State)
	}
	_, err = call[schemas.Ack](t, e, bus.APIWorkersDrain, &schemas.DrainRequest{WorkerID: "w1"})
	wantCode(t, err, bus.CodeConflict, "not ALIVE")
	reg = mustCall[schemas.WorkerRegistered](t, e, bus.WorkerRegisterSubject("w1"), registration("w1", "i3"))
	if w, _ := getWorker(t, e, "w1"); reg.Decommissioned || w.State != schemas.WorkerAlive || w.Drain != nil {
		t.Fatalf("restarted agent after the drain: %+v %+v, want a fresh ALIVE worker", reg, w)
	}
	_, err = call[schemas.Ack](t, e, bus.APIWorkersDrain, &schemas.DrainRequest{WorkerID: "nope"})
	wantCode(t, err, bus.CodeNotFound, "worker nope not found")
	_, err = call[schemas.Ack](t, e, bus.APIWorkersDrain, &schemas.DrainRequest{WorkerID: "w1", DeadlineMS: -1})
	wantCode(t, err, bus.CodeBadRequest, "deadline")
}

// A batch of reports is taken report by report as .state takes each: one
// executor's in order, a report to refuse refused in its place (the rest
// taken), the kills asked for where .state asks.
func TestService_States_Batch(t *testing.T) {
	e := startEnv(t)
	app := schemas.NewAppID(time.Now())
	put(t, e, e.st.Apps, app, &schemas.App{ID: app, State: schemas.AppRunning, ConsecutiveFailures: 2, FailedExecutors: []int{7, 8}, FailuresFrom: 7})
	for id, wid := range map[int]string{0: "w1", 1: "w1", 4: "w2"} {
		put(t, e, e.st.Executors, schemas.ExecutorKey(app, id), &schemas.Executor{AppID: app, ID: id, WorkerID: wid, Cores: 1, MemoryMB: 10, State: schemas.ExecutorLaunching})
	}
	zero := 0
	exited := stateChange("w1", app, 0, schemas.ExecutorExited)
	exited.ExitCode = &zero
	running9 := stateChange("w1", app, 9, schemas.ExecutorRunning)
	req := &schemas.StateChanges{Reports: []schemas.StateChange{
		*stateChange("w1", app, 0, schemas.ExecutorRunning),
		*stateChange("w1", app, 1, schemas.ExecutorRunning),
		*exited,
		*stateChange("w1", app, 4, schemas.ExecutorRunning), // placed on w2
		*running9, // unknown
		*stateChange("w2", app, 1, schemas.ExecutorFailed), // names another worker than the subject
	}}
	acks := mustCall[schemas.StateAcks](t, e, bus.WorkerStatesSubject("w1"), req)
	if len(acks.Results) != len(req.Reports) {
		t.Fatalf("%d results for %d reports", len(acks.Results), len(req.Reports))
	}
	r := acks.Results
	for i, want := range []schemas.StateResult{{}, {}, {}} {
		if r[i] != want {
			t.Errorf("result %d = %+v, want taken", i, r[i])
		}
	}
	if !r[3].Kill || !strings.Contains(r[3].Reason, "placed on worker w2") {
		t.Errorf("result 3 = %+v, want kill: placed on w2", r[3])
	}
	if !r[4].Kill || !strings.Contains(r[4].Reason, "unknown") {
		t.Errorf("result 4 = %+v, want kill: unknown", r[4])
	}
	if r[5].Code != bus.CodeBadRequest || !strings.Contains(r[5].Error, "does not match") {
		t.Errorf("result 5 = %+v, want a 400 for another worker's report", r[5])
	}
	if x, _ := getExec(t, e, schemas.ExecutorKey(app, 0)); x.State != schemas.ExecutorExited {
		t.Errorf("executor 0 %s, want EXITED (RUNNING, then EXITED, in order)", x.State)
	}
	if x, _ := getExec(t, e, schemas.ExecutorKey(app, 1)); x.State != schemas.ExecutorRunning {
		t.Errorf("executor 1 %s, want RUNNING (the other worker's FAILED refused)", x.State)
	}
	// RUNNING of executor 1 does not reset failures of later executors 7
	// and 8; the app keeps them.
	if a := getApp(t, e, app); a.ConsecutiveFailures != 2 {
		t.Errorf("failures %d, want 2 (later executors' failures stand)", a.ConsecutiveFailures)
	}
	// An empty batch is refused whole.
	_, err := call[schemas.StateAcks](t, e, bus.WorkerStatesSubject("w1"), &schemas.StateChanges{})
	wantCode(t, err, 400, "1 to")
}
