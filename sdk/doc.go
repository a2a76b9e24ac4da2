// Package sdk lets a program use a Stoker cluster as a Spark application
// does: a driver registers its application, the cluster starts executors on
// workers, the executors register back with the driver, and the driver sends
// them tasks and collects the results.
//
// Driver side:
//
//	nc, _ := sdk.Connect()                      // STOKER_NATS_URL, STOKER_CREDS, STOKER_TLS_CA
//	app, _ := sdk.RegisterApp(ctx, nc, schemas.RegisterApp{...})
//	defer app.Close(ctx, schemas.AppFinished)  // ends the app and its executors
//	out, _ := app.Run(ctx, []byte("task"))      // on the next idle executor
//
// A process the cluster starts (a driver in cluster mode, an executor) gets
// STOKER_CREDS from its agent: a credential confined to its own application
// (docs/security.md). A client-mode driver uses the admin credential.
//
// Executor side (the command the application asked for, started by an
// agent with STOKER_APP_ID and STOKER_EXECUTOR_ID set):
//
//	sdk.ServeExecutor(ctx, nc, func(ctx context.Context, task []byte) ([]byte, error) { ... })
//
// The App heartbeats on the cluster's app heartbeat subject (an app whose
// driver falls silent is ended by the cluster, as Spark ends an app whose
// driver disconnects) and answers the master-changed request recovery sends
// after a scheduler failover.
//
// Clients (the stoker CLI, tests, a web UI) use Client, a typed client of
// the cluster's API: list and get workers, drivers and apps, submit, kill,
// follow a driver or an app until it ends, the status, logs and the event
// history:
//
//	c := sdk.NewClient(nc)
//	r, _ := c.Submit(ctx, schemas.SubmitDriver{...})
//	d, _ := c.FollowDriver(ctx, r.DriverID, func(f sdk.Follow[schemas.Driver]) { ... })
//
// What it does not promise: a task is sent to one executor once. If that
// executor dies the task fails (Run returns an error) and the executor is
// forgotten; retrying is the caller's choice. Results are not persisted.
package sdk
