// Package lease elects one leader among candidates for a key in a
// JetStream KV bucket, in the manner of client-go's tools/leaderelection.
//
// How it works: candidates Create the key; the one whose Create succeeds
// leads, and the revision of that Create is its epoch, so epochs only grow.
// The leader renews with Update(lastRevision) every RenewInterval and
// publishes a beat on bus.LeaderBeatSubject(key) every BeatInterval.
// A standby that could hear the bus but heard no beat from the holder for
// MissedBeats×BeatInterval deletes the key with a revision-guarded Delete and
// campaigns (until it has heard the holder beat at least once, it waits two
// renew intervals more, with renewals seen by its watch as signs of life);
// after winning that way it waits half the missed-beat window before
// leading, so a holder that was merely slow sees the delete and stops first.
// If every candidate is gone, the bucket TTL ends the lease.
//
// The lease also names the holder's NATS connection (server id and client
// id, bus.ConnRef), rewritten at once after the holder reconnects. With
// ConnEvents, a standby that receives the server's DISCONNECT advisory for
// that connection (bus.ConnClosed) deletes the lease the same
// revision-guarded way and campaigns without the half-window wait: the
// holder's connection is gone, so nothing it sends reaches anyone until it
// reconnects, and then it sees the lease gone and stops. A process that
// dies closes its socket, so this takes milliseconds instead of the missed
// beats; hangs, partitions and servers that die with their clients give no
// such event and are still caught by the beats.
//
// What it promises:
//
//   - OnStartedLeading runs with a context that is cancelled the instant this
//     candidate stops leading: a renewal is refused or may have expired
//     (one that fails for a transient reason is retried on every beat while
//     the lease stands; renewals never hold up the beats), its watch shows the key
//     deleted or written by someone else, it cannot publish beats, it has
//     been disconnected for the missed-beat window, or Stop is called.
//     OnStoppedLeading runs after that cancellation, once per leadership.
//
//   - Timings are validated at construction (NewElector), and the bucket's
//     TTL is checked against LeaseTTL at Start: Update carries no per-key
//     TTL, so the bucket TTL is the lease.
//
//   - A standby revokes a lease only after it has missed beats while it
//     could hear them: time spent disconnected, or waiting on a delete that
//     failed, does not count as silence from the holder.
//
//   - Authority and Confirm bound a holder by time it can prove: until the
//     send of its last successful renewal plus AuthorityWindow, which ends
//     before any standby can lead (TakeoverTime). Confirm renews first when
//     the authority is about to end. A leader that sends only under
//     Confirm never overlaps another.
//
// What it does not promise: the lease does not fence by itself. Two
// candidates may believe they lead for a moment (a leader on a half-open
// socket learns it lost only when a renewal times out), and work started
// under an old leadership may still be in flight. Whatever a leader does to
// the outside world must carry the epoch, and the receivers must refuse
// epochs lower than the highest they have seen; that is what fences.
package lease
