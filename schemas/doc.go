// Package schemas declares every wire type, KV record and state enum that
// Stoker services, agents and clients exchange. It is the one place a
// message shape lives; nothing else in the tree declares a type that goes on
// the wire or into a bucket.
//
// Each type carries a versioned type name (TypeXxx constants, in the style of
// nats.go micro's "io.nats.micro.v1.info_response") in its "type" field.
// Encoders stamp it; decoders accept an empty type (so a hand-written JSON
// request from the nats CLI works) but refuse a different one.
//
// Field names are the JSON tags; the msgpack codec in package bus is told to
// use the same tags, so both encodings share one naming.
//
// Validation lives here too, one Validate method per inbound type, so every
// service refuses the same bad input with the same words.
package schemas
