package scheduler

import (
	"cmp"
	"fmt"
	"strings"
)

// WorkerSelection is the order in which drivers are offered workers:
// Spark's spreadOutDrivers round robin over shuffled workers (the default,
// SelectRoundRobin), or one of Spark 4's spark.deploy.workerSelectionPolicy
// orders, each driver going to the first worker in that order with room.
type WorkerSelection string

// Worker selection policies. The names are Spark's.
const (
	SelectRoundRobin         WorkerSelection = ""
	SelectCoresFreeAscending WorkerSelection = "CORES_FREE_ASCENDING"
	SelectCoresFreeDesc      WorkerSelection = "CORES_FREE_DESCENDING"
	SelectMemoryFreeAsc      WorkerSelection = "MEMORY_FREE_ASCENDING"
	SelectMemoryFreeDesc     WorkerSelection = "MEMORY_FREE_DESCENDING"
	SelectWorkerID           WorkerSelection = "WORKER_ID"
)

// WorkerSelections lists the policies as the flag accepts them.
func WorkerSelections() []string {
	return []string{"ROUND_ROBIN", string(SelectCoresFreeAscending), string(SelectCoresFreeDesc),
		string(SelectMemoryFreeAsc), string(SelectMemoryFreeDesc), string(SelectWorkerID)}
}

// ParseWorkerSelection reads a policy name, case-insensitive; "" and
// ROUND_ROBIN are the round robin default. Spark's short forms
// (CORES_FREE_ASC, ...) are accepted too.
func ParseWorkerSelection(s string) (WorkerSelection, error) {
	switch u := strings.ToUpper(strings.TrimSpace(s)); u {
	case "", "ROUND_ROBIN":
		return SelectRoundRobin, nil
	case "CORES_FREE_ASC", "CORES_FREE_ASCENDING":
		return SelectCoresFreeAscending, nil
	case "CORES_FREE_DESC", "CORES_FREE_DESCENDING":
		return SelectCoresFreeDesc, nil
	case "MEMORY_FREE_ASC", "MEMORY_FREE_ASCENDING":
		return SelectMemoryFreeAsc, nil
	case "MEMORY_FREE_DESC", "MEMORY_FREE_DESCENDING":
		return SelectMemoryFreeDesc, nil
	case "WORKER_ID":
		return SelectWorkerID, nil
	}
	return "", fmt.Errorf("worker selection policy %q: want one of %s", s, strings.Join(WorkerSelections(), ", "))
}

// compare orders two workers under the policy; ties go by worker id.
func (p WorkerSelection) compare(x, y *free) int {
	var c int
	switch p {
	case SelectCoresFreeAscending:
		c = cmp.Compare(x.cores, y.cores)
	case SelectCoresFreeDesc:
		c = cmp.Compare(y.cores, x.cores)
	case SelectMemoryFreeAsc:
		c = cmp.Compare(x.mem, y.mem)
	case SelectMemoryFreeDesc:
		c = cmp.Compare(y.mem, x.mem)
	}
	if c != 0 {
		return c
	}
	return cmp.Compare(x.id, y.id)
}
