package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Layout of an installation under its root (`stoker up --data`, `stoker
// bus --auth-dir`): signing keys in <root>/auth/, 0600 in a 0700 dir, and a
// ready credential per fixed role in <root>/creds/<role>.creds.
const (
	KeysDir  = "auth"
	CredsDir = "creds"
)

// Installed are the roles whose credentials Install writes. Agents and
// apps get theirs minted per worker or app id.
var Installed = []Role{RoleAdmin, RoleViewer, RoleRegistration, RoleHeartbeat, RoleScheduler, RoleRecovery}

// CredsPath is <root>/creds/<role>.creds.
func CredsPath(root string, r Role) string {
	return filepath.Join(root, CredsDir, string(r)+".creds")
}

// Install loads the keys under root/auth, generating them on first use,
// and writes the credential of every Installed role that is missing (user
// name: the role). It reports whether the keys were generated now.
func Install(root string) (*Keys, bool, error) {
	k, created, err := LoadOrGenerate(filepath.Join(root, KeysDir))
	if err != nil {
		return nil, false, err
	}
	for _, r := range Installed {
		path := CredsPath(root, r)
		if !created {
			if _, err := os.Stat(path); err == nil {
				continue
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, false, err
			}
		}
		c, err := k.Mint(r, string(r), 0)
		if err != nil {
			return nil, false, err
		}
		if err := WriteSecret(path, c); err != nil {
			return nil, false, fmt.Errorf("auth: %w", err)
		}
	}
	if err := os.Chmod(filepath.Join(root, CredsDir), 0o700); err != nil {
		return nil, false, err
	}
	return k, created, nil
}
