package bus

import "fmt"

// Subject prefixes. Every subject an agent publishes or listens on carries
// its worker id in the third token, so NATS permissions can confine an agent
// to stoker.worker.<wid>.> (publish, minus .cmd.>) and
// stoker.worker.<wid>.cmd.> (subscribe).
const (
	// Prefix is the root of every Stoker subject.
	Prefix = "stoker"

	// WorkerRegister: agent → registration (request, queue group).
	// Payload schemas.RegisterWorker, reply schemas.WorkerRegistered.
	WorkerRegister  = "stoker.worker.*.register"
	workerRegisterT = "stoker.worker.%s.register"

	// WorkerHeartbeat: agent → heartbeat (publish with a reply inbox).
	// Payload schemas.Heartbeat; the only answer is schemas.Reregister.
	WorkerHeartbeat  = "stoker.worker.*.heartbeat"
	workerHeartbeatT = "stoker.worker.%s.heartbeat"

	// WorkerLeave: agent → registration on purposeful shutdown (request).
	// Payload schemas.WorkerLeaving, reply schemas.Ack.
	WorkerLeave  = "stoker.worker.*.leave"
	workerLeaveT = "stoker.worker.%s.leave"

	// WorkerDrain: agent → registration, the agent draining itself on
	// SIGTERM/SIGPWR (request). Payload schemas.DrainRequest, reply schemas.Ack.
	WorkerDrain  = "stoker.worker.*.drain"
	workerDrainT = "stoker.worker.%s.drain"

	// WorkerState: agent → registration, executor and driver state changes
	// (request, retried until acked). Payload schemas.StateChange, reply
	// schemas.StateAck.
	WorkerState  = "stoker.worker.*.state"
	workerStateT = "stoker.worker.%s.state"
	// WorkerStates: agent → registration, several queued state reports in
	// one request. Payload schemas.StateChanges, reply schemas.StateAcks.
	WorkerStates  = "stoker.worker.*.states"
	workerStatesT = "stoker.worker.%s.states"

	// WorkerLogs: client → agent (request). schemas.LogsRequest → schemas.LogsReply.
	// WorkerPing: request-reply; every live agent of the worker id answers
	// with schemas.AgentPresence. A starting agent asks it before acting on
	// commands (one worker id, one live agent).
	WorkerPing  = "stoker.worker.*.ping"
	workerPingT = "stoker.worker.%s.ping"

	WorkerLogs  = "stoker.worker.*.logs"
	workerLogsT = "stoker.worker.%s.logs"

	// WorkerCmd is every command subject of every agent (for permissions).
	WorkerCmd = "stoker.worker.*.cmd.>"

	// WorkerCmdLaunch: scheduler → agent, schemas.LaunchExecutor → schemas.Ack.
	workerCmdLaunchT = "stoker.worker.%s.cmd.launch"
	// WorkerCmdLaunchExecutors: scheduler → agent, schemas.LaunchExecutors →
	// schemas.LaunchAcks (several launches in one command).
	workerCmdLaunchExecutorsT = "stoker.worker.%s.cmd.launch-executors"
	// WorkerCmdLaunchDriver: scheduler → agent, schemas.LaunchDriver → schemas.Ack.
	workerCmdLaunchDriverT = "stoker.worker.%s.cmd.launch-driver"
	// WorkerCmdKill: scheduler → agent, schemas.Kill → schemas.Ack.
	workerCmdKillT = "stoker.worker.%s.cmd.kill"
	// WorkerCmdKillExecutors: scheduler → agent, schemas.KillExecutors → schemas.KillAcks.
	workerCmdKillExecutorsT = "stoker.worker.%s.cmd.kill-executors"
	// WorkerCmdMaster: recovery (and the leading scheduler's launch checks) → agent,
	// schemas.MasterChanged → schemas.WorkerReport.
	workerCmdMasterT = "stoker.worker.%s.cmd.master"

	// AppHeartbeat: driver → heartbeat service (publish). schemas.AppHeartbeat.
	AppHeartbeat  = "stoker.app.*.heartbeat"
	appHeartbeatT = "stoker.app.%s.heartbeat"
	// AppRegister: a driver holding an app credential → registration,
	// registering the app id it was launched with (the subject's token must
	// equal the body's app id). schemas.RegisterApp → schemas.AppRegistered.
	AppRegister  = "stoker.app.*.register"
	appRegisterT = "stoker.app.%s.register"
	// AppUnregister: the app → registration. schemas.UnregisterApp → schemas.Ack.
	AppUnregister  = "stoker.app.*.unregister"
	appUnregisterT = "stoker.app.%s.unregister"
	// AppExecutors: the app's driver → registration, asking for a total
	// number of executors and/or killing chosen ones (dynamic allocation).
	// schemas.ExecutorRequest → schemas.Ack.
	AppExecutors  = "stoker.app.*.executors"
	appExecutorsT = "stoker.app.%s.executors"
	// AppMaster: recovery → driver, schemas.MasterChanged → schemas.Ack.
	appMasterT = "stoker.app.%s.master"
	// AppPrivate is the private traffic of one application (SDK use).
	appPrivateT = "stoker.app.%s.%s"
	// The SDK's private subjects, under stoker.app.<appid>.:
	// ExecutorsRegister: executor → driver, schemas.ExecutorHello → schemas.ExecutorRegistered.
	appExecutorsRegisterT = "stoker.app.%s.executors.register"
	// ExecutorsLeave: executor → driver (publish), schemas.ExecutorBye.
	appExecutorsLeaveT = "stoker.app.%s.executors.leave"
	// ExecutorsStop: driver → every executor (publish), schemas.AppStop.
	appExecutorsStopT = "stoker.app.%s.executors.stop"
	// ExecutorTask: driver → one executor, schemas.Task → schemas.TaskResult.
	appExecutorTaskT = "stoker.app.%s.executor.%d.task"

	// LeaderBeat: lease holder → standbys (publish), schemas.LeaseBeat.
	leaderBeatT = "stoker.leader.%s.beat"
	// SchedulerStatus: anyone with read rights → the leading scheduler
	// (only the leader serves it), schemas.ListRequest → schemas.SchedulerStatus.
	SchedulerStatus = "stoker.leader.scheduler.status"

	// ConnClosed: the server → scheduler and heartbeat (publish), the
	// server's own DISCONNECT advisory (io.nats.server.advisory.v1.client_disconnect,
	// JSON) for every connection of the STOKER account. The system account
	// exports $SYS.ACCOUNT.<STOKER>.DISCONNECT as a stream and STOKER
	// imports it under this name (bus/auth Trust). On a bus that does not
	// (an external NATS, --insecure) nothing arrives: beats alone.
	ConnClosed = "stoker.bus.disconnect"

	// Events: every state change, kept in the stoker-events stream.
	Events  = "stoker.events.>"
	eventsT = "stoker.events.%s.%s"

	// API is the client API root: stoker.api.<noun>.<verb> (micro endpoints).
	API = "stoker.api.>"
)

// Client API subjects (micro endpoints; msgpack or JSON by Content-Type).
const (
	APIWorkersList    = "stoker.api.workers.list"
	APIWorkersCordon  = "stoker.api.workers.cordon"
	APIWorkersDrain   = "stoker.api.workers.drain"
	APIDriversSubmit  = "stoker.api.drivers.submit"
	APIDriversKill    = "stoker.api.drivers.kill"
	APIDriversList    = "stoker.api.drivers.list"
	APIAppsRegister   = "stoker.api.apps.register"
	APIAppsUnregister = "stoker.api.apps.unregister"
	APIAppsKill       = "stoker.api.apps.kill"
	APIAppsList       = "stoker.api.apps.list"
	APIStatus         = "stoker.api.status"
	// Join tokens (admin): create, list, revoke; and the one subject a
	// join credential may publish to, exchanging it for an agent credential.
	APITokensCreate = "stoker.api.tokens.create"
	APITokensList   = "stoker.api.tokens.list"
	APITokensRevoke = "stoker.api.tokens.revoke"
	APITokensJoin   = "stoker.api.tokens.join"
)

// Micro service names, as `nats micro ls` shows them.
const (
	ServiceRegistration = "stoker-registration"
	ServiceHeartbeat    = "stoker-heartbeat"
	ServiceScheduler    = "stoker-scheduler"
	ServiceRecovery     = "stoker-recovery"
)

// WorkerRegisterSubject is stoker.worker.<wid>.register.
func WorkerRegisterSubject(wid string) string { return fmt.Sprintf(workerRegisterT, wid) }

// WorkerHeartbeatSubject is stoker.worker.<wid>.heartbeat.
func WorkerHeartbeatSubject(wid string) string { return fmt.Sprintf(workerHeartbeatT, wid) }

// WorkerLeaveSubject is stoker.worker.<wid>.leave.
func WorkerLeaveSubject(wid string) string { return fmt.Sprintf(workerLeaveT, wid) }

// WorkerDrainSubject is stoker.worker.<wid>.drain.
func WorkerDrainSubject(wid string) string { return fmt.Sprintf(workerDrainT, wid) }

// WorkerStateSubject is stoker.worker.<wid>.state.
func WorkerStateSubject(wid string) string { return fmt.Sprintf(workerStateT, wid) }

// WorkerStatesSubject is stoker.worker.<wid>.states.
func WorkerStatesSubject(wid string) string { return fmt.Sprintf(workerStatesT, wid) }

// WorkerPingSubject is stoker.worker.<wid>.ping.
func WorkerPingSubject(wid string) string { return fmt.Sprintf(workerPingT, wid) }

// WorkerLogsSubject is stoker.worker.<wid>.logs.
func WorkerLogsSubject(wid string) string { return fmt.Sprintf(workerLogsT, wid) }

// WorkerCmdLaunchSubject is stoker.worker.<wid>.cmd.launch.
func WorkerCmdLaunchSubject(wid string) string { return fmt.Sprintf(workerCmdLaunchT, wid) }

// WorkerCmdLaunchExecutorsSubject is stoker.worker.<wid>.cmd.launch-executors.
func WorkerCmdLaunchExecutorsSubject(wid string) string {
	return fmt.Sprintf(workerCmdLaunchExecutorsT, wid)
}

// WorkerCmdLaunchDriverSubject is stoker.worker.<wid>.cmd.launch-driver.
func WorkerCmdLaunchDriverSubject(wid string) string {
	return fmt.Sprintf(workerCmdLaunchDriverT, wid)
}

// WorkerCmdKillSubject is stoker.worker.<wid>.cmd.kill.
func WorkerCmdKillSubject(wid string) string { return fmt.Sprintf(workerCmdKillT, wid) }

// WorkerCmdKillExecutorsSubject is stoker.worker.<wid>.cmd.kill-executors.
func WorkerCmdKillExecutorsSubject(wid string) string {
	return fmt.Sprintf(workerCmdKillExecutorsT, wid)
}

// WorkerCmdMasterSubject is stoker.worker.<wid>.cmd.master.
func WorkerCmdMasterSubject(wid string) string { return fmt.Sprintf(workerCmdMasterT, wid) }

// WorkerCmdSubjects is stoker.worker.<wid>.cmd.> (an agent subscribes to it).
func WorkerCmdSubjects(wid string) string { return fmt.Sprintf("stoker.worker.%s.cmd.>", wid) }

// WorkerIDFromSubject returns the <wid> token of a stoker.worker.<wid>.… subject.
func WorkerIDFromSubject(subject string) string { return token(subject, 2) }

// AppHeartbeatSubject is stoker.app.<appid>.heartbeat.
func AppHeartbeatSubject(appID string) string { return fmt.Sprintf(appHeartbeatT, appID) }

// AppRegisterSubject is stoker.app.<appid>.register.
func AppRegisterSubject(appID string) string { return fmt.Sprintf(appRegisterT, appID) }

// AppUnregisterSubject is stoker.app.<appid>.unregister.
func AppUnregisterSubject(appID string) string { return fmt.Sprintf(appUnregisterT, appID) }

// AppExecutorsSubject is stoker.app.<appid>.executors.
func AppExecutorsSubject(appID string) string { return fmt.Sprintf(appExecutorsT, appID) }

// AppMasterSubject is stoker.app.<appid>.master.
func AppMasterSubject(appID string) string { return fmt.Sprintf(appMasterT, appID) }

// AppSubject is stoker.app.<appid>.<rest>, the application's private traffic.
func AppSubject(appID, rest string) string { return fmt.Sprintf(appPrivateT, appID, rest) }

// AppExecutorsRegisterSubject is stoker.app.<appid>.executors.register.
func AppExecutorsRegisterSubject(appID string) string {
	return fmt.Sprintf(appExecutorsRegisterT, appID)
}

// AppExecutorsLeaveSubject is stoker.app.<appid>.executors.leave.
func AppExecutorsLeaveSubject(appID string) string { return fmt.Sprintf(appExecutorsLeaveT, appID) }

// AppExecutorsStopSubject is stoker.app.<appid>.executors.stop.
func AppExecutorsStopSubject(appID string) string { return fmt.Sprintf(appExecutorsStopT, appID) }

// AppExecutorTaskSubject is stoker.app.<appid>.executor.<execid>.task.
func AppExecutorTaskSubject(appID string, execID int) string {
	return fmt.Sprintf(appExecutorTaskT, appID, execID)
}

// AppIDFromSubject returns the <appid> token of a stoker.app.<appid>.… subject.
func AppIDFromSubject(subject string) string { return token(subject, 2) }

// CheckSubjectID refuses (400) a message whose body names another worker
// or application than its subject (stoker.worker.<wid>.… or
// stoker.app.<appid>.…): NATS permissions confine an agent or a driver to
// its own subjects, so the subject is the identity that counts. noun names
// the id in the error ("worker", "app").
func CheckSubjectID(in Inbound, noun, id string) error {
	if got := token(in.Subject(), 2); got != id {
		return Errorf(CodeBadRequest, "%s id %q in the message does not match subject %s", noun, id, in.Subject())
	}
	return nil
}

// LeaderBeatSubject is stoker.leader.<name>.beat.
func LeaderBeatSubject(name string) string { return fmt.Sprintf(leaderBeatT, name) }

// EventSubject is stoker.events.<kind>.<id>.
func EventSubject(kind, id string) string { return fmt.Sprintf(eventsT, kind, id) }

func token(subject string, n int) string {
	start := 0
	for i := 0; i < len(subject); i++ {
		if subject[i] == '.' {
			if n == 0 {
				return subject[start:i]
			}
			n--
			start = i + 1
		}
	}
	if n == 0 {
		return subject[start:]
	}
	return ""
}
