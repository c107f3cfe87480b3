package session

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ErrWrongTenant: a refresh token (or session) of one tenant was presented
// to another. Nothing is rotated or revoked: the tenant asked cannot act
// on another tenant's sessions.
var ErrWrongTenant = errors.New("session: the token belongs to another tenant")

// refreshPeeker finds the session behind a refresh token without spending
// it. Both stores of this package implement it.
type refreshPeeker interface {
	peekRefresh(ctx context.Context, hash string) (Session, error)
}

// RefreshFor is Refresh bound to tenant: a refresh token of another
// tenant's session is refused with ErrWrongTenant before it is rotated,
// so it is neither spent nor counted as reused (which would revoke that
// tenant's session). A store that cannot look a token up without spending
// it is refused (fail closed).
func (m *Manager) RefreshFor(ctx context.Context, refreshToken, tenant string) (*Tokens, error) {
	if len(refreshToken) != 43 {
		return nil, ErrInvalidRefresh
	}
	p, ok := m.store.(refreshPeeker)
	if !ok {
		return nil, fmt.Errorf("session: the store %T cannot bind refresh tokens to a tenant", m.store)
	}
	s, err := p.peekRefresh(ctx, hashToken(refreshToken))
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, ErrInvalidRefresh
	case err != nil:
		return nil, err
	case s.Tenant != tenant:
		return nil, ErrWrongTenant
	}
	return m.Refresh(ctx, refreshToken)
}

// LogoutFor is Logout bound to tenant: the session of an access token of
// another tenant is not revoked (ErrWrongTenant).
func (m *Manager) LogoutFor(ctx context.Context, accessToken, tenant string) error {
	c, _, err := m.parse(ctx, accessToken) // expired tokens may log out too
	if err != nil {
		return err
	}
	if c.Tenant != tenant {
		return ErrWrongTenant
	}
	return m.Revoke(ctx, c.SessionID)
}

func (m *MemoryStore) peekRefresh(_ context.Context, hash string) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.refresh[hash]
	if !ok {
		return Session{}, ErrNotFound
	}
	ms, ok := m.sessions[r.sid]
	if !ok {
		return Session{}, ErrNotFound
	}
	return ms.s, nil
}

func (r *RedisStore) peekRefresh(ctx context.Context, hash string) (Session, error) {
	v, err := r.c.Get(ctx, r.prefix+"r:"+hash).Result()
	if err != nil {
		if errors.Is(err, redis.Nil) {
			return Session{}, ErrNotFound
		}
		return Session{}, fmt.Errorf("session: redis: %w", err)
	}
	_, id, ok := strings.Cut(v, ":") // "<used>:<session id>"
	if !ok {
		return Session{}, errors.New("session: redis: corrupt refresh token record")
	}
	return r.Get(ctx, id)
}
