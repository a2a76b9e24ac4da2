package schemas

// The environment an agent gives the processes it starts: part of the
// contract between an agent and the executors and drivers it runs (the SDK
// reads it). Spelled here only; the agent, the SDK and the CLI use these.
const (
	// EnvNATSURL is the cluster's NATS URL(s), for every child (and the
	// CLI's --nats fallback).
	EnvNATSURL = "STOKER_NATS_URL"
	// EnvWorkerID is the worker the child runs on.
	EnvWorkerID = "STOKER_WORKER_ID"
	// EnvAppID and EnvExecutorID identify an executor.
	EnvAppID      = "STOKER_APP_ID"
	EnvExecutorID = "STOKER_EXECUTOR_ID"
	// EnvDriverID identifies a driver.
	EnvDriverID = "STOKER_DRIVER_ID"
	// EnvCores and EnvMemoryMB are what the child was given.
	EnvCores    = "STOKER_CORES"
	EnvMemoryMB = "STOKER_MEMORY_MB"
	// EnvCreds is the credential file (.creds) a child connects with: the
	// agent writes the launch command's app credential into the child's
	// work dir. EnvTLSCA is the CA file that signed the bus's certificate.
	EnvCreds = "STOKER_CREDS"
	EnvTLSCA = "STOKER_TLS_CA"
	// EnvResourcePrefix + NAME (ResourceEnv) carries the addresses of a
	// custom resource the child was given, comma-separated:
	// STOKER_RESOURCE_GPU=1,3. For gpu the same list is also in
	// EnvCUDAVisibleDevices.
	EnvResourcePrefix     = "STOKER_RESOURCE_"
	EnvCUDAVisibleDevices = "CUDA_VISIBLE_DEVICES"
	// EnvExecutorResources ("gpu=1,fpga=2") and EnvExecutorConstraints
	// ("zone=a,disk!=hdd") carry `stoker submit --executor-resource` and
	// `--executor-constraint` to a submitted driver: the SDK puts them in
	// the app it registers when the request names none.
	EnvExecutorResources   = "STOKER_EXECUTOR_RESOURCES"
	EnvExecutorConstraints = "STOKER_EXECUTOR_CONSTRAINTS"
)

// EnvEntry is one KEY=VALUE entry of a child's environment.
func EnvEntry(key, value string) string { return key + "=" + value }
