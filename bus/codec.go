package bus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/stoker/stoker/schemas"
)

// Header names.
const (
	// ContentType selects the encoding of a request; its reply uses the same.
	ContentType = "Content-Type"
	// ContentTypeJSON is the one value that switches a request to JSON.
	ContentTypeJSON = "application/json"
	// ContentTypeMsgpack is what Stoker's own clients send (the default).
	ContentTypeMsgpack = "application/msgpack"
	// ErrorHeader and ErrorCodeHeader are nats micro's service error headers;
	// every Stoker error reply uses them, micro endpoint or not.
	ErrorHeader     = "Nats-Service-Error"
	ErrorCodeHeader = "Nats-Service-Error-Code"
	// TimeoutHeader is how long the requester waits for the answer from
	// when it sends (a Go duration, "2s"): Call sends it, and a service
	// that queues requests (Lanes) drops one that waited longer than that
	// in its queue, unserved: its requester gave up, and serving it only
	// adds to the backlog.
	TimeoutHeader = "Stoker-Timeout"
)

// Format is a wire encoding.
type Format int

const (
	Msgpack Format = iota
	JSON
)

func (f Format) String() string {
	if f == JSON {
		return "json"
	}
	return "msgpack"
}

// FormatOf reads the encoding a message asks for from its headers.
func FormatOf(h nats.Header) Format {
	if h != nil && h.Get(ContentType) == ContentTypeJSON {
		return JSON
	}
	return Msgpack
}

// ErrDecode is wrapped by every decoding failure.
var ErrDecode = errors.New("cannot decode message")

// ErrWrongType is returned when a message carries another type name.
var ErrWrongType = errors.New("wrong message type")

// Encode stamps v's versioned type name and encodes it.
func Encode(v any, f Format) ([]byte, error) {
	if t, ok := v.(schemas.Typed); ok {
		t.SetType(t.WireType())
	}
	if f == JSON {
		return json.Marshal(v)
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetCustomStructTag("json")
	enc.SetOmitEmpty(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Decode decodes data in format f into v, checks its type name, and runs
// its Validate method if it has one. Errors wrap ErrDecode, ErrWrongType or
// schemas.ErrInvalid.
func Decode(data []byte, f Format, v any) error {
	if len(data) == 0 {
		return fmt.Errorf("%w: empty payload (send {} with Content-Type: application/json for an empty JSON request)", ErrDecode)
	}
	err := unmarshal(data, f, v)
	if err != nil {
		hint := ""
		if t := bytes.TrimLeft(data, " \t\r\n"); f == Msgpack && len(t) > 0 && (t[0] == '{' || t[0] == '[') {
			hint = " (it looks like JSON: send it with the header Content-Type: application/json, e.g. nats req ... -H Content-Type:application/json)"
		}
		return fmt.Errorf("%w as %s: %v%s", ErrDecode, f, err, hint)
	}
	if t, ok := v.(schemas.Typed); ok {
		if got := t.GotType(); got != "" && got != t.WireType() {
			return fmt.Errorf("%w: got %q, want %q", ErrWrongType, got, t.WireType())
		}
	}
	if val, ok := v.(interface{ Validate() error }); ok {
		if err := val.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// EncodeRecord encodes a KV record. Records are JSON so that
// `nats kv get` and `nats kv watch` show them as they are.
func EncodeRecord(v any) ([]byte, error) { return Encode(v, JSON) }

// DecodeRecord decodes a KV record (JSON, or msgpack for values written by
// other tools).
func DecodeRecord(data []byte, v any) error {
	f := Msgpack
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		f = JSON
	}
	if len(data) == 0 {
		return fmt.Errorf("%w: empty record", ErrDecode)
	}
	err := unmarshal(data, f, v)
	if err != nil {
		return fmt.Errorf("%w: record: %v", ErrDecode, err)
	}
	return nil
}

// Error codes on the wire (Nats-Service-Error-Code), HTTP-like as micro's.
const (
	CodeBadRequest  = 400
	CodeForbidden   = 403
	CodeNotFound    = 404
	CodeConflict    = 409
	CodeGone        = 410
	CodeInternal    = 500
	CodeUnavailable = 503
)

// Error is an error with a wire code. Handlers return it to choose the code;
// Call returns it when the other side answered with an error.
type Error struct {
	Code        int
	Description string
}

func (e *Error) Error() string { return fmt.Sprintf("%s (code %d)", e.Description, e.Code) }

// Errorf builds an *Error.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Description: fmt.Sprintf(format, args...)}
}

// ErrorCode picks the wire code for err.
func ErrorCode(err error) int {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, schemas.ErrInvalid), errors.Is(err, ErrDecode), errors.Is(err, ErrWrongType):
		return CodeBadRequest
	case errors.Is(err, ErrNotFound):
		return CodeNotFound
	}
	return CodeInternal
}

// RefusedForGood reports whether an error reply with code refuses the
// request for good (malformed, gone, or from an agent instance that was
// replaced: 400, 410, 409): sending it again cannot succeed. Any other
// error may pass. Agents' state reports are dropped on these and retried
// on the others, alone (.state) or in a batch (.states).
func RefusedForGood(code int) bool {
	return code == CodeBadRequest || code == CodeGone || code == CodeConflict
}

// errorFromHeader turns a reply's error headers into an *Error, or nil.
func errorFromHeader(h nats.Header) error {
	if h == nil {
		return nil
	}
	desc := h.Get(ErrorHeader)
	codeS := h.Get(ErrorCodeHeader)
	if desc == "" && codeS == "" {
		return nil
	}
	code, _ := strconv.Atoi(codeS)
	if code == 0 {
		code = CodeInternal
	}
	return &Error{Code: code, Description: desc}
}

func unmarshal(data []byte, f Format, v any) (err error) {
	if f == JSON {
		return json.Unmarshal(data, v)
	}
	// msgpack/v5 panics on some malformed input instead of failing: a nil
	// for a time.Time field when a struct is sent as an array
	// ("\x97\xc0\xc00\xc0" as a stoker-leader lease: reflect IsNil on a
	// struct value, found by FuzzDecodeChecked; every scheduler and
	// recovery reading that lease would have crashed). Whoever can write a
	// request or a KV value must not be able to crash the service that
	// reads it.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed msgpack: %v", r)
		}
	}()
	if err := checkMsgpackLengths(data); err != nil {
		return err
	}
	dec := msgpack.NewDecoder(bytes.NewReader(data))
	dec.SetCustomStructTag("json")
	return dec.Decode(v)
}
