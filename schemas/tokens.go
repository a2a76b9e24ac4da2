package schemas

import "time"

// Join tokens (stoker.api.tokens.*): an admin makes a short-lived token; a
// new agent presents it once and receives a credential confined to its own
// worker id. Only a hash of the token's secret is kept.
const (
	TypeTokenCreate  = "io.stoker.v1.token_create"
	TypeTokenCreated = "io.stoker.v1.token_created"
	TypeTokenRevoke  = "io.stoker.v1.token_revoke"
	TypeTokenList    = "io.stoker.v1.token_list"
	TypeJoinRequest  = "io.stoker.v1.join_request"
	TypeJoinReply    = "io.stoker.v1.join_reply"
)

// TokenCreate asks for a join token (stoker.api.tokens.create).
type TokenCreate struct {
	Base
	// Role the token joins as: "agent" (the only one today).
	Role  string `json:"role"`
	TTLMS int64  `json:"ttl_ms"`
}

func (*TokenCreate) WireType() string { return TypeTokenCreate }

// Token is a join token's record in stoker-tokens (key: its id).
type Token struct {
	ID         string    `json:"id"`
	Role       string    `json:"role"`
	SecretHash string    `json:"secret_hash"` // hex SHA-256 of the secret
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	Revoked    bool      `json:"revoked,omitempty"`
	// Joined lists the worker ids that joined with it.
	Joined []string `json:"joined,omitempty"`
}

// TokenCreated answers TokenCreate: Token is the string to hand to
// `stoker agent --join-token`.
type TokenCreated struct {
	Base
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (*TokenCreated) WireType() string { return TypeTokenCreated }

// TokenRevoke revokes a token by id (stoker.api.tokens.revoke).
type TokenRevoke struct {
	Base
	ID string `json:"id"`
}

func (*TokenRevoke) WireType() string { return TypeTokenRevoke }

// TokenList answers stoker.api.tokens.list.
type TokenList struct {
	Base
	Tokens []Token `json:"tokens"`
}

func (*TokenList) WireType() string { return TypeTokenList }

// JoinRequest exchanges a token for an agent credential
// (stoker.api.tokens.join, the one subject a join credential may use).
type JoinRequest struct {
	Base
	TokenID  string `json:"token_id"`
	Secret   string `json:"secret"`
	WorkerID string `json:"worker_id"`
}

func (*JoinRequest) WireType() string { return TypeJoinRequest }

// JoinReply carries the agent's credential (.creds text).
type JoinReply struct {
	Base
	Creds string `json:"creds"`
}

func (*JoinReply) WireType() string { return TypeJoinReply }
