package lease_test

import (
	"context"
	"log"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/bus/lease"
)

// A service that must run in one instance at a time: the leader works
// under the context OnStartedLeading gets, and stamps the epoch on whatever
// it sends, so that receivers can refuse a deposed leader's late commands.
func ExampleNewElector() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	// The bucket's TTL is the lease: it must equal Timings.TTL (3s by default).
	kv, err := js.KeyValue(context.Background(), bus.BucketLeader)
	if err != nil {
		log.Fatal(err)
	}
	el, err := lease.NewElector(lease.Config{
		KV: kv, NC: nc, Key: "compactor", ID: "compactor-1",
		ReleaseOnStop: true, // a standby takes over at once on a clean stop
		OnStartedLeading: func(ctx context.Context, epoch uint64) {
			log.Printf("leading with epoch %d", epoch)
			<-ctx.Done() // work until leadership is lost, then stop at once
		},
		OnStoppedLeading: func() { log.Print("standing by") },
	})
	if err != nil {
		log.Fatal(err) // wraps lease.ErrConfig: timings that do not fit
	}
	if err := el.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer el.Stop()
}
