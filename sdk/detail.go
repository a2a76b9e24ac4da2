package sdk

// One thing in detail: `stoker workers ID`, `stoker drivers ID` (and
// `stoker apps ID`, which is App).

import (
	"context"

	"github.com/stoker/stoker/schemas"
)

// AppExecutor is an executor with the application it belongs to.
type AppExecutor struct {
	AppID string `json:"app_id"`
	schemas.ExecutorView
}

// WorkerDetail is one worker with the executors and drivers placed on it,
// running or ended.
type WorkerDetail struct {
	Worker    schemas.WorkerView `json:"worker"`
	Executors []AppExecutor      `json:"executors"`
	Drivers   []schemas.Driver   `json:"drivers"`
}

// Worker gets one worker in detail; bus.ErrNotFound if the cluster has none
// by that id.
func (c *Client) Worker(ctx context.Context, id string) (*WorkerDetail, error) {
	ws, err := c.Workers(ctx)
	w, err := one(ws, err, "worker", id, func(w schemas.WorkerView) string { return w.ID })
	if err != nil {
		return nil, err
	}
	d := &WorkerDetail{Worker: *w, Executors: []AppExecutor{}, Drivers: []schemas.Driver{}}
	apps, err := c.Apps(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range apps {
		for _, x := range a.Executors {
			if x.WorkerID == id {
				d.Executors = append(d.Executors, AppExecutor{AppID: a.ID, ExecutorView: x})
			}
		}
	}
	drivers, err := c.Drivers(ctx)
	if err != nil {
		return nil, err
	}
	for _, dr := range drivers {
		if dr.WorkerID == id {
			d.Drivers = append(d.Drivers, dr)
		}
	}
	return d, nil
}

// DriverDetail is one driver with the applications it registered.
type DriverDetail struct {
	Driver schemas.Driver    `json:"driver"`
	Apps   []schemas.AppView `json:"apps"`
}

// DriverDetail gets one driver in detail; bus.ErrNotFound if the cluster
// has none by that id.
func (c *Client) DriverDetail(ctx context.Context, id string) (*DriverDetail, error) {
	d, err := c.Driver(ctx, id)
	if err != nil {
		return nil, err
	}
	out := &DriverDetail{Driver: *d, Apps: []schemas.AppView{}}
	apps, err := c.Apps(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range apps {
		if a.DriverID == id {
			out.Apps = append(out.Apps, a)
		}
	}
	return out, nil
}
