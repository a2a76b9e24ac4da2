package web

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// Role is what a web user may do: look (viewer) or also kill and submit
// (admin, and only when the service holds an admin credential).
type Role string

const (
	RoleViewer Role = "viewer"
	RoleAdmin  Role = "admin"
)

// User is one line of a password file.
type User struct {
	Name string
	Role Role
	Hash []byte // bcrypt
}

// ParsePasswordFile reads "name role bcrypt-hash" lines (role: viewer or
// admin); blank lines and lines starting with # are skipped.
func ParsePasswordFile(r io.Reader) ([]User, error) {
	var users []User
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: want \"name role bcrypt-hash\", got %d fields", n, len(f))
		}
		role := Role(f[1])
		if role != RoleViewer && role != RoleAdmin {
			return nil, fmt.Errorf("line %d: role %q is not viewer or admin", n, f[1])
		}
		if _, err := bcrypt.Cost([]byte(f[2])); err != nil {
			return nil, fmt.Errorf("line %d: %s: not a bcrypt hash: %v", n, f[0], err)
		}
		if seen[f[0]] {
			return nil, fmt.Errorf("line %d: user %q listed twice", n, f[0])
		}
		seen[f[0]] = true
		users = append(users, User{Name: f[0], Role: role, Hash: []byte(f[2])})
	}
	return users, sc.Err()
}

// HashPassword is a bcrypt hash for a password file line.
func HashPassword(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	return string(h), err
}

// login checks HTTP Basic credentials against the users. bcrypt is slow on
// purpose, so a verified (user, password) pair is remembered by its SHA-256.
type login struct {
	users map[string]User
	mu    sync.Mutex
	ok    map[[32]byte]Role
}

func newLogin(users []User) *login {
	if len(users) == 0 {
		return nil
	}
	l := &login{users: map[string]User{}, ok: map[[32]byte]Role{}}
	for _, u := range users {
		l.users[u.Name] = u
	}
	return l
}

// check is the role of the request's Basic credentials, or false.
func (l *login) check(r *http.Request) (Role, bool) {
	name, pass, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	key := sha256.Sum256([]byte(name + "\x00" + pass))
	l.mu.Lock()
	role, hit := l.ok[key]
	l.mu.Unlock()
	if hit {
		return role, true
	}
	u, found := l.users[name]
	if !found {
		// Same work as a wrong password: no user enumeration by timing.
		_ = bcrypt.CompareHashAndPassword([]byte("$2a$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4Z4N5R5b8Ak8jPZ8sQ0Oa3Gm."), []byte(pass))
		return "", false
	}
	if bcrypt.CompareHashAndPassword(u.Hash, []byte(pass)) != nil {
		return "", false
	}
	l.mu.Lock()
	if len(l.ok) > 1024 {
		clear(l.ok)
	}
	l.ok[key] = u.Role
	l.mu.Unlock()
	return u.Role, true
}

// IsLoopback reports whether a listen address (host:port) only listens on
// this machine.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sameToken compares two CSRF tokens in constant time.
func sameToken(a, b string) bool {
	return a != "" && len(a) == len(b) && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
