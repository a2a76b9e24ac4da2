package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stoker/stoker/schemas"
)

// SendKills sends kills, all for worker wid and already fenced (epoch,
// valid_until), as KillExecutors commands of up to schemas.MaxKillBatch,
// and returns each kill's outcome in order: nil when acknowledged, a
// refusal (ErrRefused) or the command's error. An agent that does not
// answer the batch subject (one from before it) gets them one by one on
// cmd.kill. timeout bounds each command.
func SendKills(ctx context.Context, nc *nats.Conn, wid string, kills []schemas.Kill, timeout time.Duration) []error {
	out := make([]error, len(kills))
	if len(kills) == 1 {
		out[0] = sendKill(ctx, nc, wid, &kills[0], timeout)
		return out
	}
	subject := WorkerCmdKillExecutorsSubject(wid)
	for from := 0; from < len(kills); from += schemas.MaxKillBatch {
		part := kills[from:min(from+schemas.MaxKillBatch, len(kills))]
		var acks schemas.KillAcks
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := Call(cctx, nc, subject, &schemas.KillExecutors{Kills: part}, &acks)
		cancel()
		if err == nil && len(acks.Acks) != len(part) {
			err = fmt.Errorf("%s: %d answers to %d kills", subject, len(acks.Acks), len(part))
		}
		if errors.Is(err, nats.ErrNoResponders) && ctx.Err() == nil {
			for i := range part {
				out[from+i] = sendKill(ctx, nc, wid, &part[i], timeout)
			}
			continue
		}
		for i := range part {
			if out[from+i] = err; err == nil {
				out[from+i] = Refusal(subject, &acks.Acks[i])
			}
		}
	}
	return out
}

func sendKill(ctx context.Context, nc *nats.Conn, wid string, k *schemas.Kill, timeout time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := CallAck(cctx, nc, WorkerCmdKillSubject(wid), k)
	return err
}
