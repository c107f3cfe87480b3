package login

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kailash-gw/kailash/extauthz/lockout"
	"github.com/kailash-gw/kailash/extauthz/mfa"
	"github.com/kailash-gw/kailash/extauthz/samlsp"
	"github.com/kailash-gw/kailash/extauthz/session"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/redisclient"
)

// sharedStores are the stores of the login service: in memory (one
// replica), or all in one Redis (sessions.redis) so that replicas share
// sessions, signing keys, brute-force counters, TOTP secrets (enrolled and
// pending) and used steps, pending SAML AuthnRequest ids and used SAML
// assertion IDs. Every Redis key starts with "kailash:".
type sharedStores struct {
	client   *redis.Client // nil in memory
	keys     session.KeyStore
	sessions session.Store
	lockout  lockout.Store
	used     mfa.UsedSteps
	secrets  mfa.SecretStore
	replay   samlsp.ReplayStore
	requests samlsp.RequestStore
	// oidcRequests are the OIDC logins started and not yet returned
	// (digests of their request cookies; oidc.go).
	oidcRequests samlsp.RequestStore
	// starts counts SAML login starts per tenant and client address
	// (fixed one-minute windows) for login.saml_starts_per_minute.
	starts lockout.Store
	// codes are the admin-issued one-time TOTP enrolment codes (hashed).
	codes mfa.EnrolmentCodes
	// recovery are users' TOTP recovery codes (hashed, single use).
	recovery mfa.RecoveryCodes
}

func newSharedStores(s config.Sessions, now func() time.Time) (sharedStores, error) {
	rc := s.Redis
	if rc == nil {
		return sharedStores{
			sessions: session.NewMemoryStore(), lockout: lockout.NewMemoryStore(now),
			used: mfa.NewMemoryUsedSteps(), secrets: mfa.NewMemorySecrets(now),
			replay: samlsp.NewMemoryReplayStore(0), requests: samlsp.NewMemoryRequestStore(now),
			oidcRequests: samlsp.NewMemoryRequestStore(now),
			starts:       lockout.NewMemoryStore(now), codes: mfa.NewMemoryCodes(now), recovery: mfa.NewMemoryRecoveryCodes(),
		}, nil
	}
	pw, err := rc.Password()
	if err != nil {
		return sharedStores{}, err
	}
	var sealer *mfa.Sealer
	switch raw, err := s.TOTPKey(); {
	case err != nil:
		return sharedStores{}, err
	case raw != "":
		key, err := mfa.ParseKey(raw)
		if err == nil {
			sealer, err = mfa.NewSealer(key)
		}
		if err != nil {
			return sharedStores{}, fmt.Errorf("sessions.totp_key_env: %w", err)
		}
	}
	timeout := rc.Timeout
	if timeout <= 0 {
		timeout = config.DefaultSessionsRedisTimeout
	}
	c := redisclient.New(rc.Addr.String(), pw, rc.DB, timeout)
	var secrets mfa.SecretStore = noSecretKey{}
	if sealer != nil {
		if secrets, err = mfa.NewRedisSecrets(c, "", sealer); err != nil {
			_ = c.Close()
			return sharedStores{}, err
		}
	}
	return sharedStores{
		client:   c,
		keys:     session.NewRedisKeyStore(c, ""),
		sessions: session.NewRedisStore(c, ""),
		lockout:  lockout.NewRedisStore(c, "", now),
		used:     mfa.NewRedisUsedSteps(c, "", 0),
		secrets:  secrets,
		replay:   samlsp.NewRedisReplayStore(c, ""),
		requests: samlsp.NewRedisRequestStore(c, "", now),
		// The OIDC logins' pending requests: the same store, its own keys.
		oidcRequests: samlsp.NewRedisRequestStore(c, oidcRequestsPrefix, now),
		starts:       lockout.NewRedisStore(c, samlStartsPrefix, now),
		codes:        mfa.NewRedisCodes(c, ""),
		recovery:     mfa.NewRedisRecoveryCodes(c, ""),
	}, nil
}

// oidcRequestsPrefix starts the Redis keys of pending OIDC logins.
const oidcRequestsPrefix = "kailash:oidc:req:"

// samlStartsPrefix starts the Redis keys counting SAML login starts.
const samlStartsPrefix = "kailash:saml:starts:"

// errNoTOTPKey: Redis holds the TOTP secrets, sealed, and no key is set.
var errNoTOTPKey = errors.New("TOTP secrets are sealed in sessions.redis: set sessions.totp_key_env")

// noSecretKey is the SecretStore with Redis but no sealing key (allowed
// while no tenant requires MFA): TOTP enrolment is unavailable.
type noSecretKey struct{}

func (noSecretKey) Load(context.Context, string) (mfa.UserSecrets, error) {
	return mfa.UserSecrets{}, errNoTOTPKey
}

func (noSecretKey) Begin(context.Context, string, string, time.Duration) error { return errNoTOTPKey }

func (noSecretKey) Confirm(context.Context, string, mfa.UserSecrets) (bool, error) {
	return false, errNoTOTPKey
}

func (s sharedStores) close() {
	if s.client != nil {
		_ = s.client.Close()
	}
}

// Ping checks that the shared stores can be reached: nil when they live in
// memory, else a round trip to sessions.redis (for readiness).
func (a *Service) Ping(ctx context.Context) error {
	if a.shared.client == nil {
		return nil
	}
	return a.shared.client.Ping(ctx).Err()
}

// RedisClient is the sessions.redis client (nil when the state lives in
// memory), for the other state authz replicas share (explain records).
func (a *Service) RedisClient() *redis.Client { return a.shared.client }

// SharedStores reports whether the login state lives in sessions.redis.
func (a *Service) SharedStores() bool { return a.shared.client != nil }
