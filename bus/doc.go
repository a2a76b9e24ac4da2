// Package bus is the only package that knows how NATS, JetStream and KV are
// wired: the embedded server, the connect helper, every subject name, the
// KV buckets and their compare-and-set helpers, the wire codec and the
// request/reply helpers with their error headers.
//
// Services import bus and schemas; they never spell a subject or a bucket
// name themselves and never call each other's Go code.
package bus
