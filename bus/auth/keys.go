package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/stoker/stoker/bus"
)

// Account names.
const (
	AccountSys    = "SYS"
	AccountStoker = "STOKER"
)

// Keys is the key material of one Stoker installation: the operator, the
// two accounts and a signing key per role. A key's absence means the holder
// may not do that: a split scheduler holds only the app role key, for
// instance. Everything is kept as nkey seeds, one file each, 0600.
type Keys struct {
	Operator nkeys.KeyPair
	Sys      nkeys.KeyPair
	Stoker   nkeys.KeyPair
	// Signers holds each role's scoped signing key.
	Signers map[Role]nkeys.KeyPair
}

// Generate makes fresh keys for every role.
func Generate() (*Keys, error) {
	k := &Keys{Signers: map[Role]nkeys.KeyPair{}}
	var err error
	if k.Operator, err = nkeys.CreateOperator(); err != nil {
		return nil, err
	}
	if k.Sys, err = nkeys.CreateAccount(); err != nil {
		return nil, err
	}
	if k.Stoker, err = nkeys.CreateAccount(); err != nil {
		return nil, err
	}
	for _, r := range Roles {
		if k.Signers[r], err = nkeys.CreateAccount(); err != nil {
			return nil, err
		}
	}
	return k, nil
}

func keyFile(dir, name string) string { return filepath.Join(dir, name+".nk") }

func roleKeyName(r Role) string { return "role-" + string(r) }

// Save writes every key present into dir (0700), each file 0600.
func (k *Keys) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	files := map[string]nkeys.KeyPair{"operator": k.Operator, "account-sys": k.Sys, "account-stoker": k.Stoker}
	for r, kp := range k.Signers {
		files[roleKeyName(r)] = kp
	}
	for name, kp := range files {
		if kp == nil {
			continue
		}
		seed, err := kp.Seed()
		if err != nil {
			return err
		}
		if err := WriteSecret(keyFile(dir, name), append(seed, '\n')); err != nil {
			return err
		}
	}
	return nil
}

// Load reads the keys saved in dir; missing files leave those keys nil.
func Load(dir string) (*Keys, error) {
	k := &Keys{Signers: map[Role]nkeys.KeyPair{}}
	read := func(name string) (nkeys.KeyPair, error) {
		b, err := os.ReadFile(keyFile(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", keyFile(dir, name), err)
		}
		return kp, nil
	}
	var err error
	if k.Operator, err = read("operator"); err != nil {
		return nil, err
	}
	if k.Sys, err = read("account-sys"); err != nil {
		return nil, err
	}
	if k.Stoker, err = read("account-stoker"); err != nil {
		return nil, err
	}
	for _, r := range Roles {
		kp, err := read(roleKeyName(r))
		if err != nil {
			return nil, err
		}
		if kp != nil {
			k.Signers[r] = kp
		}
	}
	return k, nil
}

// LoadOrGenerate loads the keys in dir, or generates and saves them when
// dir holds no operator key yet. It reports whether it generated them.
func LoadOrGenerate(dir string) (*Keys, bool, error) {
	if _, err := os.Stat(keyFile(dir, "operator")); err == nil {
		k, err := Load(dir)
		if err != nil {
			return nil, false, err
		}
		if k.Sys == nil || k.Stoker == nil {
			return nil, false, fmt.Errorf("auth: %s has an operator key but no account keys", dir)
		}
		return k, false, nil
	}
	k, err := Generate()
	if err != nil {
		return nil, false, err
	}
	if err := k.Save(dir); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// Only keeps the STOKER account's public identity and the signing keys of
// roles: what a service that mints those roles' credentials holds.
func (k *Keys) Only(roles ...Role) *Keys {
	out := &Keys{Stoker: publicOnly(k.Stoker), Signers: map[Role]nkeys.KeyPair{}}
	for _, r := range roles {
		if kp := k.Signers[r]; kp != nil {
			out.Signers[r] = kp
		}
	}
	return out
}

// publicOnly is a key pair that only knows its public key.
func publicOnly(kp nkeys.KeyPair) nkeys.KeyPair {
	if kp == nil {
		return nil
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil
	}
	p, err := nkeys.FromPublicKey(pub)
	if err != nil {
		return nil
	}
	return p
}

// WriteSecret writes b to path with mode 0600 (replacing it atomically).
func WriteSecret(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Trust is what a server needs to authenticate Stoker users: the operator
// JWT and the account JWTs (preloaded into its resolver).
type Trust = bus.ServerAuth

// Trust signs the operator and account JWTs. Needs the operator and both
// account keys.
func (k *Keys) Trust() (*Trust, error) {
	if k.Operator == nil || k.Sys == nil || k.Stoker == nil {
		return nil, errors.New("auth: the operator and account keys are needed to sign the account JWTs")
	}
	opPub, _ := k.Operator.PublicKey()
	sysPub, _ := k.Sys.PublicKey()
	stPub, _ := k.Stoker.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "stoker"
	oc.SystemAccount = sysPub
	opJWT, err := oc.Encode(k.Operator)
	if err != nil {
		return nil, err
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = AccountSys
	// The server's DISCONNECT advisories for STOKER's connections, and
	// nothing else of the system account: the scheduler and heartbeat
	// roles read them as bus.ConnClosed (fast crash detection).
	disconnects := DisconnectSubject(stPub)
	sc.Exports.Add(&jwt.Export{Name: "stoker-disconnects", Subject: jwt.Subject(disconnects), Type: jwt.Stream})
	sysJWT, err := sc.Encode(k.Operator)
	if err != nil {
		return nil, err
	}
	ac := jwt.NewAccountClaims(stPub)
	ac.Name = AccountStoker
	// NewAccountClaims leaves JetStream disabled.
	ac.Limits.JetStreamLimits.DiskStorage = -1
	ac.Limits.JetStreamLimits.MemoryStorage = -1
	for _, r := range Roles {
		kp := k.Signers[r]
		if kp == nil {
			return nil, fmt.Errorf("auth: no signing key for role %s", r)
		}
		pub, _ := kp.PublicKey()
		ac.SigningKeys.AddScopedSigner(scope(r, pub))
	}
	ac.Imports.Add(&jwt.Import{Name: "stoker-disconnects", Subject: jwt.Subject(disconnects), Account: sysPub,
		Type: jwt.Stream, LocalSubject: jwt.RenamingSubject(bus.ConnClosed)})
	stJWT, err := ac.Encode(k.Operator)
	if err != nil {
		return nil, err
	}
	return &Trust{Operator: opJWT, SystemAccount: sysPub, Accounts: map[string]string{sysPub: sysJWT, stPub: stJWT}}, nil
}

// DisconnectSubject is where the server announces, in the system account,
// that a connection of account acc closed.
func DisconnectSubject(acc string) string { return "$SYS.ACCOUNT." + acc + ".DISCONNECT" }

// scope is role r's signing key with the roles table as its template.
func scope(r Role, pub string) *jwt.UserScope {
	p := Permissions(r)
	sc := jwt.NewUserScope()
	sc.Key = pub
	sc.Role = string(r)
	sc.Template.Pub.Allow.Add(p.Pub...)
	sc.Template.Pub.Deny.Add(p.PubDeny...)
	sc.Template.Sub.Allow.Add(p.Sub...)
	if p.Resp {
		sc.Template.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
	}
	return sc
}

// Mint makes a credential (.creds file contents) for user name in role r,
// valid for ttl (0: no expiry). It needs r's signing key.
func (k *Keys) Mint(r Role, name string, ttl time.Duration) ([]byte, error) {
	if err := ValidName(r, name); err != nil {
		return nil, fmt.Errorf("auth: %s credential: %w", r, err)
	}
	signer := k.Signers[r]
	if signer == nil {
		return nil, fmt.Errorf("auth: cannot mint %s credentials here: no %s signing key", r, r)
	}
	if k.Stoker == nil {
		return nil, errors.New("auth: the STOKER account's public key is unknown")
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	upub, _ := user.PublicKey()
	accPub, _ := k.Stoker.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	uc.IssuerAccount = accPub
	uc.SetScoped(true)
	uc.Tags.Add(bus.RoleTag + string(r))
	if ttl > 0 {
		uc.Expires = time.Now().Add(ttl).Unix()
	}
	ujwt, err := uc.Encode(signer)
	if err != nil {
		return nil, err
	}
	seed, err := user.Seed()
	if err != nil {
		return nil, err
	}
	return jwt.FormatUserConfig(ujwt, seed)
}

// ParseCreds reads who a .creds file names (not verified: the server does).
func ParseCreds(creds []byte) (bus.Identity, error) { return bus.CredsIdentity(creds) }
