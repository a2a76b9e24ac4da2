package schemas

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Id prefixes, as Spark's: app-20261123203537-1a2b, driver-20261123203537-3c4d.
const (
	AppIDPrefix    = "app-"
	DriverIDPrefix = "driver-"
)

func newID(prefix string, now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return prefix + now.UTC().Format("20060102150405") + "-" + hex.EncodeToString(b[:])
}

// NewAppID returns a fresh application id. Registration replicas run side
// by side, so the suffix is random rather than a counter.
func NewAppID(now time.Time) string { return newID(AppIDPrefix, now) }

// NewDriverID returns a fresh driver id.
func NewDriverID(now time.Time) string { return newID(DriverIDPrefix, now) }

// NewInstance returns a random agent-instance nonce.
func NewInstance() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ExecutorKey is the key of an executor in stoker-executors: "<appid>.<execid>".
func ExecutorKey(appID string, execID int) string {
	return appID + "." + strconv.Itoa(execID)
}

// ParseExecutorKey splits "<appid>.<execid>".
func ParseExecutorKey(key string) (string, int, error) {
	app, ex, ok := strings.Cut(key, ".")
	if !ok {
		return "", 0, invalid("executor id %q is not <appid>.<execid>", key)
	}
	if err := ValidAppID(app); err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(ex)
	if err != nil || n < 0 {
		return "", 0, invalid("executor id %q: %q is not a non-negative number", key, ex)
	}
	// One spelling per executor: "+7" or "007" would name executor 7
	// under a second key (found by FuzzParseExecutorKey).
	if strconv.Itoa(n) != ex {
		return "", 0, invalid("executor id %q: %q is not written as %d", key, ex, n)
	}
	return app, n, nil
}

// SanitizeID turns a hostname or free text into a valid id.
func SanitizeID(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
		if b.Len() >= MaxIDLen {
			break
		}
	}
	out := strings.Trim(b.String(), "-_")
	if out == "" {
		return fmt.Sprintf("worker-%s", NewInstance()[:6])
	}
	return out
}
