package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// tokenPrefix starts every join token, so a pasted string is recognised.
const tokenPrefix = "STOKERJOIN1."

// JoinToken is what `stoker token create` hands out: the token's id and
// secret, a short-lived join credential (which may only ask to join), and
// the CA a new machine needs to trust the bus.
type JoinToken struct {
	ID     string `json:"id"`
	Secret string `json:"secret"`
	Creds  string `json:"creds"`
	CA     string `json:"ca,omitempty"`
}

// Minter mints join and agent credentials for registration's token
// endpoints (it implements registration.Tokens). It needs the agent and
// join signing keys.
type Minter struct {
	Keys *Keys
	// CA is the PEM of the CA clients trust, embedded in every token.
	CA []byte
}

// Join mints the join credential of token id.
func (m Minter) Join(id string, ttl time.Duration) ([]byte, error) {
	return m.Keys.Mint(RoleJoin, id, ttl)
}

// Agent mints the credential of worker wid.
func (m Minter) Agent(wid string) ([]byte, error) { return m.Keys.Mint(RoleAgent, wid, 0) }

// Encode packs a token.
func (m Minter) Encode(id, secret string, creds []byte) (string, error) {
	b, err := json.Marshal(JoinToken{ID: id, Secret: secret, Creds: string(creds), CA: string(m.CA)})
	if err != nil {
		return "", err
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// DecodeToken unpacks a token given to `stoker agent --join-token`.
func DecodeToken(s string) (JoinToken, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), tokenPrefix)
	if !ok {
		return JoinToken{}, errors.New("not a Stoker join token (they start with " + tokenPrefix + ")")
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return JoinToken{}, fmt.Errorf("join token: %w", err)
	}
	var t JoinToken
	if err := json.Unmarshal(b, &t); err != nil {
		return JoinToken{}, fmt.Errorf("join token: %w", err)
	}
	if t.ID == "" || t.Secret == "" || t.Creds == "" {
		return JoinToken{}, errors.New("join token: incomplete")
	}
	return t, nil
}
