package web

import (
	"net/http"

	"github.com/stoker/stoker/schemas"
)

// The Spark master's /json shape, so tools that read a Spark standalone
// master's summary read Stoker's. Times are Unix milliseconds, memory MB.
type sparkSummary struct {
	URL              string        `json:"url"`
	Workers          []sparkWorker `json:"workers"`
	AliveWorkers     int           `json:"aliveworkers"`
	Cores            int           `json:"cores"`
	CoresUsed        int           `json:"coresused"`
	Memory           int64         `json:"memory"`
	MemoryUsed       int64         `json:"memoryused"`
	ActiveApps       []sparkApp    `json:"activeapps"`
	CompletedApps    []sparkApp    `json:"completedapps"`
	ActiveDrivers    []sparkDriver `json:"activedrivers"`
	CompletedDrivers []sparkDriver `json:"completeddrivers"`
	Status           string        `json:"status"`
}

type sparkWorker struct {
	ID            string `json:"id"`
	Host          string `json:"host"`
	Cores         int    `json:"cores"`
	CoresUsed     int    `json:"coresused"`
	CoresFree     int    `json:"coresfree"`
	Memory        int64  `json:"memory"`
	MemoryUsed    int64  `json:"memoryused"`
	MemoryFree    int64  `json:"memoryfree"`
	State         string `json:"state"`
	LastHeartbeat int64  `json:"lastheartbeat"`
}

type sparkApp struct {
	ID                string `json:"id"`
	StartTime         int64  `json:"starttime"`
	Name              string `json:"name"`
	Cores             int    `json:"cores"`
	MemoryPerExecutor int64  `json:"memoryperexecutor"`
	SubmitDate        string `json:"submitdate"`
	State             string `json:"state"`
}

type sparkDriver struct {
	ID         string `json:"id"`
	StartTime  int64  `json:"starttime"`
	State      string `json:"state"`
	Cores      int    `json:"cores"`
	Memory     int64  `json:"memory"`
	SubmitDate string `json:"submitdate"`
	Worker     string `json:"worker"`
	MainClass  string `json:"mainclass"`
}

func toSpark(busURL string, sn *snapshot) sparkSummary {
	out := sparkSummary{URL: busURL, Workers: []sparkWorker{}, ActiveApps: []sparkApp{}, CompletedApps: []sparkApp{},
		ActiveDrivers: []sparkDriver{}, CompletedDrivers: []sparkDriver{}, Status: string(sn.Status.State)}
	out.Cores, out.CoresUsed = sn.Status.CoresTotal, sn.Status.CoresUsed
	out.Memory, out.MemoryUsed = sn.Status.MemoryTotalMB, sn.Status.MemoryUsedMB
	for _, w := range sn.Workers {
		if w.State == schemas.WorkerAlive {
			out.AliveWorkers++
		}
		out.Workers = append(out.Workers, sparkWorker{ID: w.ID, Host: w.Host, Cores: w.Cores, CoresUsed: w.CoresUsed,
			CoresFree: w.Cores - w.CoresUsed, Memory: w.MemoryMB, MemoryUsed: w.MemoryUsedMB,
			MemoryFree: w.MemoryMB - w.MemoryUsedMB, State: string(w.State), LastHeartbeat: w.UpdatedAt.UnixMilli()})
	}
	for _, a := range sn.Apps {
		sa := sparkApp{ID: a.ID, StartTime: a.SubmittedAt.UnixMilli(), Name: a.Name, Cores: a.CoresGranted,
			MemoryPerExecutor: a.ExecutorMemoryMB, SubmitDate: a.SubmittedAt.UTC().Format("Mon Jan 02 15:04:05 MST 2006"), State: string(a.State)}
		if a.State.Terminal() {
			out.CompletedApps = append(out.CompletedApps, sa)
		} else {
			out.ActiveApps = append(out.ActiveApps, sa)
		}
	}
	for _, d := range sn.Drivers {
		sd := sparkDriver{ID: d.ID, StartTime: d.SubmittedAt.UnixMilli(), State: string(d.State), Cores: d.Cores,
			Memory: d.MemoryMB, SubmitDate: d.SubmittedAt.UTC().Format("Mon Jan 02 15:04:05 MST 2006"), Worker: d.WorkerID}
		if len(d.Command) > 0 {
			sd.MainClass = d.Command[0]
		}
		if d.State.Terminal() {
			out.CompletedDrivers = append(out.CompletedDrivers, sd)
		} else {
			out.ActiveDrivers = append(out.ActiveDrivers, sd)
		}
	}
	return out
}

func (s *Server) sparkJSON(w http.ResponseWriter, r *http.Request) {
	sn, err := s.snapshot(r.Context())
	if err != nil {
		clusterError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toSpark(s.cfg.BusURL, sn))
}
