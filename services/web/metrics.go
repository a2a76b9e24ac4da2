package web

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stoker/stoker/schemas"
)

// Metric names /metrics exposes (docs/web.md lists them).
var (
	descUp          = prometheus.NewDesc("stoker_up", "1 when the cluster API answered this scrape, else 0.", nil, nil)
	descWorkers     = prometheus.NewDesc("stoker_workers", "Workers by state.", []string{"state"}, nil)
	descCores       = prometheus.NewDesc("stoker_cores", "Cores offered by ALIVE workers.", nil, nil)
	descCoresUsed   = prometheus.NewDesc("stoker_cores_used", "Cores in use on ALIVE workers.", nil, nil)
	descMemory      = prometheus.NewDesc("stoker_memory_bytes", "Memory offered by ALIVE workers.", nil, nil)
	descMemoryUsed  = prometheus.NewDesc("stoker_memory_used_bytes", "Memory in use on ALIVE workers.", nil, nil)
	descApps        = prometheus.NewDesc("stoker_apps", "Applications by state.", []string{"state"}, nil)
	descDrivers     = prometheus.NewDesc("stoker_drivers", "Drivers by state.", []string{"state"}, nil)
	descExecutors   = prometheus.NewDesc("stoker_executors", "Executors by state.", []string{"state"}, nil)
	descEpoch       = prometheus.NewDesc("stoker_leader_epoch", "The scheduler leader's epoch, the lease revision that fences writes (0: no leader).", nil, nil)
	descTerm        = prometheus.NewDesc("stoker_leader_term", "The scheduler leader's term: one more per new leader (0: no leader).", nil, nil)
	descClusterSt   = prometheus.NewDesc("stoker_cluster_state", "1 for the cluster's current phase.", []string{"state"}, nil)
	descScrapeSecs  = prometheus.NewDesc("stoker_scrape_duration_seconds", "How long reading the cluster took.", nil, nil)
	descWindow      = prometheus.NewDesc("stoker_scheduler_window", "Executors the leading scheduler lets be in flight (starting, or being killed) at once.", nil, nil)
	descMaxInFlight = prometheus.NewDesc("stoker_scheduler_max_in_flight", "The ceiling of the scheduler's window (--max-in-flight; 0: no bound).", nil, nil)
	descLaunching   = prometheus.NewDesc("stoker_scheduler_launching", "Executor records LAUNCHING in the leading scheduler's view.", nil, nil)
	descKilling     = prometheus.NewDesc("stoker_scheduler_killing", "Kills the leading scheduler sent whose executors have not ended.", nil, nil)
	descCuts        = prometheus.NewDesc("stoker_scheduler_window_cuts_total", "Rounds of reports later than --flow-target that halved the window, this leader's.", nil, nil)
	descRounds      = prometheus.NewDesc("stoker_scheduler_window_rounds_total", "Rounds of launch and kill reports the window was sized on, this leader's.", nil, nil)
	allClusterState = []schemas.ClusterState{schemas.ClusterRecovering, schemas.ClusterAlive, schemas.ClusterStandby}
)

// clusterCollector reads the cluster at each scrape.
type clusterCollector struct{ s *Server }

func (c clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descWorkers, descCores, descCoresUsed, descMemory, descMemoryUsed,
		descApps, descDrivers, descExecutors, descEpoch, descTerm, descClusterSt, descScrapeSecs,
		descWindow, descMaxInFlight, descLaunching, descKilling, descCuts, descRounds} {
		ch <- d
	}
}

func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sn, err := c.s.snapshot(ctx)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	// The scheduler's pace: absent while no scheduler leads (or answers
	// within the scrape), not a failed scrape.
	if ss, serr := c.s.viewer.SchedulerStatus(ctx); serr == nil {
		for _, m := range schedulerValues(ss) {
			ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value, m.labels...)
		}
	}
	gauge(descScrapeSecs, time.Since(start).Seconds())
	if err != nil {
		c.s.cfg.Log.Warn().Err(err).Msg("metrics: cluster not readable")
		gauge(descUp, 0)
		return
	}
	gauge(descUp, 1)
	for _, m := range metricValues(sn) {
		gauge(m.desc, m.value, m.labels...)
	}
}

type metricValue struct {
	desc   *prometheus.Desc
	value  float64
	labels []string
	kind   prometheus.ValueType
}

// schedulerValues are the leading scheduler's figures.
func schedulerValues(st *schemas.SchedulerStatus) []metricValue {
	g := prometheus.GaugeValue
	return []metricValue{
		{descWindow, float64(st.Window), nil, g},
		{descMaxInFlight, float64(st.MaxInFlight), nil, g},
		{descLaunching, float64(st.Launching), nil, g},
		{descKilling, float64(st.Killing), nil, g},
		{descCuts, float64(st.WindowCuts), nil, prometheus.CounterValue},
		{descRounds, float64(st.WindowRounds), nil, prometheus.CounterValue},
	}
}

// metricValues is the pure part: every state of every kind is listed, 0
// when absent, so a series does not vanish when its count drops to zero.
func metricValues(sn *snapshot) []metricValue {
	var out []metricValue
	add := func(d *prometheus.Desc, v float64, labels ...string) {
		out = append(out, metricValue{d, v, labels, prometheus.GaugeValue})
	}
	st := sn.Status
	workers := map[string]int{}
	for _, w := range sn.Workers {
		workers[string(w.State)]++
	}
	for _, s := range schemas.WorkerStates() {
		add(descWorkers, float64(workers[string(s)]), string(s))
	}
	add(descCores, float64(st.CoresTotal))
	add(descCoresUsed, float64(st.CoresUsed))
	add(descMemory, float64(st.MemoryTotalMB)*(1<<20))
	add(descMemoryUsed, float64(st.MemoryUsedMB)*(1<<20))
	apps, execs := map[string]int{}, map[string]int{}
	for _, a := range sn.Apps {
		apps[string(a.State)]++
		for _, x := range a.Executors {
			execs[string(x.State)]++
		}
	}
	for _, s := range schemas.AppStates() {
		add(descApps, float64(apps[string(s)]), string(s))
	}
	for _, s := range schemas.ExecutorStates() {
		add(descExecutors, float64(execs[string(s)]), string(s))
	}
	drivers := map[string]int{}
	for _, d := range sn.Drivers {
		drivers[string(d.State)]++
	}
	for _, s := range schemas.DriverStates() {
		add(descDrivers, float64(drivers[string(s)]), string(s))
	}
	var epoch, term uint64
	if st.Leader != nil {
		epoch, term = st.Leader.Epoch, st.Leader.Term
	}
	add(descEpoch, float64(epoch))
	add(descTerm, float64(term))
	for _, cs := range allClusterState {
		v := 0.0
		if st.State == cs {
			v = 1
		}
		add(descClusterSt, v, string(cs))
	}
	return out
}

func (s *Server) initMetrics() {
	s.registry = prometheus.NewRegistry()
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "stoker_web_requests_total", Help: "HTTP requests served by stoker web, by method and status code.",
	}, []string{"method", "code"})
	s.registry.MustRegister(clusterCollector{s}, s.requests)
}
