// Package agent is Stoker's worker agent, the counterpart of Spark's Worker:
// one per machine or container, it registers the worker with the cluster
// (retrying with backoff until accepted), heartbeats, runs executors and
// drivers as child processes when the scheduler says so, reports every state
// change of them until acknowledged, kills them on request, answers a new
// scheduler epoch with what it runs, and serves their logs.
//
// It talks to the cluster only over its own subjects, stoker.worker.<wid>.>,
// and needs no JetStream access.
//
// What it does not promise: children are not tied to the agent's life at the
// kernel level (no PR_SET_PDEATHSIG, which Go ties to an OS thread), so an
// agent killed with SIGKILL leaves its children running; Stop and Shutdown
// kill them. Log files are never rotated or removed.
package agent
