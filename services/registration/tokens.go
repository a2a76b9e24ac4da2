package registration

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stoker/stoker/bus"
	"github.com/stoker/stoker/schemas"
)

// Tokens mints what join tokens need; nil in Config: the token endpoints
// answer 503 (a bus without authentication, or keys kept elsewhere).
type Tokens interface {
	// Join mints the join credential of token id, valid for ttl.
	Join(id string, ttl time.Duration) ([]byte, error)
	// Agent mints the credential of worker wid.
	Agent(wid string) ([]byte, error)
	// Encode packs a token's id, secret and join credential into the
	// string handed to `stoker agent --join-token`.
	Encode(id, secret string, creds []byte) (string, error)
}

// MaxTokenTTL bounds a join token's life.
const MaxTokenTTL = 7 * 24 * time.Hour

// tokensKV opens (creating on first use) the stoker-tokens bucket.
func (s *Service) tokensKV(ctx context.Context) (jetstream.KeyValue, error) {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, bus.BucketTokens)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.BucketTokens,
			Description: "Stoker join tokens (a hash of the secret, never the secret)", History: 1,
			Storage: jetstream.FileStorage})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, bus.BucketTokens)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", bus.BucketTokens, err)
	}
	return kv, nil
}

func (s *Service) tokensOr503() error {
	if s.cfg.Tokens == nil {
		return bus.Errorf(bus.CodeUnavailable, "join tokens need the agent and join signing keys, which this registration does not hold")
	}
	return nil
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// handleTokenCreate is stoker.api.tokens.create (admin only, by permissions).
func (s *Service) handleTokenCreate(ctx context.Context, _ bus.Inbound, req *schemas.TokenCreate) (any, error) {
	if err := s.tokensOr503(); err != nil {
		return nil, err
	}
	if req.Role != "agent" {
		return nil, bus.Errorf(bus.CodeBadRequest, "join tokens are for role agent, not %q", req.Role)
	}
	ttl := time.Duration(req.TTLMS) * time.Millisecond
	if ttl <= 0 || ttl > MaxTokenTTL {
		return nil, bus.Errorf(bus.CodeBadRequest, "ttl must be > 0 and at most %s", MaxTokenTTL)
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	secret := hex.EncodeToString(b[:])
	_, _ = rand.Read(b[:6])
	id := "tok-" + hex.EncodeToString(b[:6])
	creds, err := s.cfg.Tokens.Join(id, ttl)
	if err != nil {
		return nil, err
	}
	token, err := s.cfg.Tokens.Encode(id, secret, creds)
	if err != nil {
		return nil, err
	}
	kv, err := s.tokensKV(ctx)
	if err != nil {
		return nil, err
	}
	t := now()
	rec := &schemas.Token{ID: id, Role: req.Role, SecretHash: hashSecret(secret), CreatedAt: t, ExpiresAt: t.Add(ttl)}
	if _, err := bus.Create(ctx, kv, id, rec); err != nil {
		return nil, fmt.Errorf("record token: %w", err)
	}
	s.log.Info().Str("token_id", id).Time("expires_at", rec.ExpiresAt).Msg("join token created")
	return &schemas.TokenCreated{ID: id, Token: token, ExpiresAt: rec.ExpiresAt}, nil
}

// handleTokenList is stoker.api.tokens.list.
func (s *Service) handleTokenList(ctx context.Context, _ bus.Inbound, _ *schemas.ListRequest) (any, error) {
	kv, err := s.tokensKV(ctx)
	if err != nil {
		return nil, err
	}
	list, err := bus.List[schemas.Token](ctx, kv)
	if err != nil {
		return nil, err
	}
	out := &schemas.TokenList{}
	for _, e := range list {
		out.Tokens = append(out.Tokens, *e.Value)
	}
	return out, nil
}

// handleTokenRevoke is stoker.api.tokens.revoke: the token joins no more
// agents (those that joined keep their credentials).
func (s *Service) handleTokenRevoke(ctx context.Context, _ bus.Inbound, req *schemas.TokenRevoke) (any, error) {
	kv, err := s.tokensKV(ctx)
	if err != nil {
		return nil, err
	}
	_, _, err = bus.Mutate(ctx, kv, req.ID, func(cur *schemas.Token) (*schemas.Token, error) {
		if cur == nil {
			return nil, bus.Errorf(bus.CodeNotFound, "token %s not found", req.ID)
		}
		if cur.Revoked {
			return nil, nil
		}
		n := *cur
		n.Revoked = true
		return &n, nil
	})
	if err != nil {
		return nil, err
	}
	return &schemas.Ack{OK: true, Message: "token " + req.ID + " revoked"}, nil
}

// handleJoin is stoker.api.tokens.join: a live, unrevoked token's secret
// buys a credential for the worker id asked (validated before minting).
func (s *Service) handleJoin(ctx context.Context, _ bus.Inbound, req *schemas.JoinRequest) (any, error) {
	if err := s.tokensOr503(); err != nil {
		return nil, err
	}
	if err := schemas.ValidID("worker", req.WorkerID); err != nil {
		return nil, bus.Errorf(bus.CodeBadRequest, "%v", err)
	}
	kv, err := s.tokensKV(ctx)
	if err != nil {
		return nil, err
	}
	_, _, err = bus.Mutate(ctx, kv, req.TokenID, func(cur *schemas.Token) (*schemas.Token, error) {
		switch {
		case cur == nil || subtle.ConstantTimeCompare([]byte(cur.SecretHash), []byte(hashSecret(req.Secret))) != 1:
			return nil, bus.Errorf(bus.CodeForbidden, "join token %s is not valid", req.TokenID)
		case cur.Revoked:
			return nil, bus.Errorf(bus.CodeForbidden, "join token %s was revoked", req.TokenID)
		case now().After(cur.ExpiresAt):
			return nil, bus.Errorf(bus.CodeForbidden, "join token %s expired at %s", req.TokenID, cur.ExpiresAt.Format(time.RFC3339))
		}
		n := *cur
		n.Joined = append(append([]string(nil), cur.Joined...), req.WorkerID)
		return &n, nil
	})
	if err != nil {
		return nil, err
	}
	creds, err := s.cfg.Tokens.Agent(req.WorkerID)
	if err != nil {
		return nil, err
	}
	s.log.Info().Str("token_id", req.TokenID).Str("worker_id", req.WorkerID).Msg("agent joined with a token")
	return &schemas.JoinReply{Creds: string(creds)}, nil
}
