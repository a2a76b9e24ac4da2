package sdk_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/rs/zerolog"

	"github.com/stoker/stoker/schemas"
	"github.com/stoker/stoker/sdk"
)

func zerologNop() zerolog.Logger { return zerolog.Nop() }

// A driver registers an application whose executors run this same binary
// with --executor, sends them tasks and ends the application.
func ExampleRegisterApp() {
	ctx := context.Background()
	nc, err := sdk.Connect() // STOKER_NATS_URL
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	self, _ := os.Executable()
	app, err := sdk.RegisterApp(ctx, nc, schemas.RegisterApp{
		Name:     "word-count",
		Executor: schemas.ExecutorSpec{Command: []string{self, "--executor"}, Cores: 1, MemoryMB: 256},
		MaxCores: 4,
	})
	if err != nil {
		log.Fatal(err)
	}
	out, err := app.Run(ctx, []byte("to be or not to be"))
	if err != nil {
		_ = app.Close(ctx, schemas.AppFailed)
		log.Fatal(err)
	}
	fmt.Println(string(out))
	_ = app.Close(ctx, schemas.AppFinished)
}

// An executor (started by an agent with STOKER_APP_ID and
// STOKER_EXECUTOR_ID set) serves tasks until its driver ends the app.
func ExampleServeExecutor() {
	nc, err := sdk.Connect()
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	err = sdk.ServeExecutor(context.Background(), nc, func(_ context.Context, task []byte) ([]byte, error) {
		return []byte(fmt.Sprintf("%d bytes", len(task))), nil
	})
	if err != nil {
		log.Fatal(err)
	}
}

// The driver learns of executors as they register back.
func ExampleApp_Executors() {
	var app *sdk.App // from sdk.RegisterApp
	if app == nil {
		return
	}
	for e := range app.Executors() {
		fmt.Printf("executor %d on %s (%d cores)\n", e.ID, e.WorkerID, e.Cores)
	}
}
