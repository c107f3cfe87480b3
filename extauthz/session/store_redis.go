package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisPrefix starts every key of a RedisStore.
const DefaultRedisPrefix = "kailash:sess:"

// RedisStore is the Store shared by replicas. Keys (P is the prefix):
//
//	P s:<id>    hash: d (the Session as JSON), ls and exp (LastSeen and
//	            ExpiresAt as zero-padded unix nanos, compared as strings in
//	            Lua, since Lua numbers cannot hold nanos exactly), uk
//	P h:<id>    set: the family's refresh-token hashes
//	P r:<hash>  string: "0:<id>" (unused) or "1:<id>" (rotated)
//	P u:<user>  list: the user's session ids, oldest first
//
// Every key expires with its session (ExpiresAt, plus a minute of margin),
// so nothing lives forever. Create, Rotate and Delete are Lua scripts, so
// they are atomic like MemoryStore's methods. The scripts touch keys they
// compute themselves: a single Redis (or Sentinel) is supported, not
// Redis Cluster.
type RedisStore struct {
	c      redis.UniversalClient
	prefix string
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a store in c under prefix ("": DefaultRedisPrefix).
func NewRedisStore(c redis.UniversalClient, prefix string) *RedisStore {
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	return &RedisStore{c: c, prefix: prefix}
}

// ttlMargin is added to every session key's lifetime so that a session is
// judged expired by the Manager (with its own clock) before Redis drops it.
const ttlMargin = time.Minute

func nanos(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return fmt.Sprintf("%020d", t.UnixNano())
}

// delFn is the Lua helper shared by the scripts: delete a session, its
// refresh tokens and its family set (not its user-list entry).
const delFn = `
local p = ARGV[1]
local function del(id)
  local hs = redis.call('SMEMBERS', p .. 'h:' .. id)
  for _, h in ipairs(hs) do redis.call('DEL', p .. 'r:' .. h) end
  redis.call('DEL', p .. 's:' .. id, p .. 'h:' .. id)
end
`

// createScript: KEYS[1] the user list. ARGV: prefix, id, json, ls, exp,
// refresh hash, max, evict (0/1), now, idle cutoff ("" none), ttl ms, user
// key. Returns {1, evicted...} or {0} (too many sessions).
var createScript = redis.NewScript(delFn + `
local id, now, idle = ARGV[2], ARGV[9], ARGV[10]
local max, evict, ttl = tonumber(ARGV[7]), ARGV[8] == '1', tonumber(ARGV[11])
local live = {}
for _, sid in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local v = redis.call('HMGET', p .. 's:' .. sid, 'exp', 'ls')
  if v[1] then
    if now >= v[1] or (idle ~= '' and v[2] < idle) then
      del(sid)
    else
      live[#live + 1] = sid
    end
  end
end
local evicted = {}
if max > 0 and #live >= max then
  if not evict then
    redis.call('DEL', KEYS[1])
    if #live > 0 then
      redis.call('RPUSH', KEYS[1], unpack(live))
      redis.call('PEXPIRE', KEYS[1], ttl)
    end
    return {0}
  end
  local n = #live - max + 1
  local rest = {}
  for i, sid in ipairs(live) do
    if i <= n then
      del(sid)
      evicted[#evicted + 1] = sid
    else
      rest[#rest + 1] = sid
    end
  end
  live = rest
end
local sk = p .. 's:' .. id
redis.call('HSET', sk, 'd', ARGV[3], 'ls', ARGV[4], 'exp', ARGV[5], 'uk', ARGV[12])
redis.call('PEXPIRE', sk, ttl)
redis.call('SADD', p .. 'h:' .. id, ARGV[6])
redis.call('PEXPIRE', p .. 'h:' .. id, ttl)
redis.call('SET', p .. 'r:' .. ARGV[6], '0:' .. id, 'PX', ttl)
local old = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
live[#live + 1] = id
redis.call('RPUSH', KEYS[1], unpack(live))
if old > ttl then ttl = old end
redis.call('PEXPIRE', KEYS[1], ttl)
local out = {1}
for _, sid in ipairs(evicted) do out[#out + 1] = sid end
return out
`)

// touchScript: KEYS[1] the session. ARGV: at. Returns 0 when not found.
var touchScript = redis.NewScript(`
local ls = redis.call('HGET', KEYS[1], 'ls')
if not ls then return 0 end
if ARGV[1] > ls then redis.call('HSET', KEYS[1], 'ls', ARGV[1]) end
return 1
`)

// rotateScript: ARGV: prefix, old hash, new hash. Returns {0} (not found),
// {2, id} (reuse) or {1, json, ls}.
var rotateScript = redis.NewScript(delFn + `
local r = redis.call('GET', p .. 'r:' .. ARGV[2])
if not r then return {0} end
local used, id = string.sub(r, 1, 1), string.sub(r, 3)
local sk = p .. 's:' .. id
local v = redis.call('HMGET', sk, 'd', 'ls')
if not v[1] then return {0} end
if used == '1' then return {2, id} end
local ttl = redis.call('PTTL', sk)
if ttl <= 0 then ttl = 1000 end
redis.call('SET', p .. 'r:' .. ARGV[2], '1:' .. id, 'KEEPTTL')
redis.call('SET', p .. 'r:' .. ARGV[3], '0:' .. id, 'PX', ttl)
redis.call('SADD', p .. 'h:' .. id, ARGV[3])
return {1, v[1], v[2]}
`)

// deleteScript: ARGV: prefix, id.
var deleteScript = redis.NewScript(delFn + `
local id = ARGV[2]
local uk = redis.call('HGET', p .. 's:' .. id, 'uk')
if uk then
  local lk = p .. 'u:' .. uk
  redis.call('LREM', lk, 0, id)
end
del(id)
return 1
`)

func (r *RedisStore) userListKey(tenant, subject string) string {
	return r.prefix + "u:" + userKey(tenant, subject)
}

// Create implements Store.
func (r *RedisStore) Create(ctx context.Context, s Session, refreshHash string, limit Limit) ([]string, error) {
	d, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	ttl := s.ExpiresAt.Sub(limit.Now) + ttlMargin
	if ttl < ttlMargin {
		ttl = ttlMargin
	}
	evict := "0"
	if limit.EvictOldest {
		evict = "1"
	}
	v, err := createScript.Run(ctx, r.c, []string{r.userListKey(s.Tenant, s.Subject)},
		r.prefix, s.ID, d, nanos(s.LastSeen), nanos(s.ExpiresAt), refreshHash, limit.Max, evict,
		nanos(limit.Now), nanos(limit.IdleCutoff), ttl.Milliseconds(), userKey(s.Tenant, s.Subject)).Slice()
	if err != nil {
		return nil, fmt.Errorf("session: redis: %w", err)
	}
	if len(v) == 0 {
		return nil, errors.New("session: redis: unexpected script result")
	}
	if n, _ := v[0].(int64); n == 0 {
		return nil, ErrTooManySessions
	}
	var evicted []string
	for _, x := range v[1:] {
		if sid, ok := x.(string); ok {
			evicted = append(evicted, sid)
		}
	}
	return evicted, nil
}

func decodeSession(d, ls string) (Session, error) {
	var s Session
	if err := json.Unmarshal([]byte(d), &s); err != nil {
		return Session{}, fmt.Errorf("session: redis: corrupt session: %w", err)
	}
	if n, err := strconv.ParseInt(ls, 10, 64); err == nil && n > 0 {
		if t := time.Unix(0, n); t.After(s.LastSeen) {
			s.LastSeen = t
		}
	}
	return s, nil
}

// Get implements Store.
func (r *RedisStore) Get(ctx context.Context, id string) (Session, error) {
	v, err := r.c.HMGet(ctx, r.prefix+"s:"+id, "d", "ls").Result()
	if err != nil {
		return Session{}, fmt.Errorf("session: redis: %w", err)
	}
	d, _ := v[0].(string)
	ls, _ := v[1].(string)
	if d == "" {
		return Session{}, ErrNotFound
	}
	return decodeSession(d, ls)
}

// Touch implements Store.
func (r *RedisStore) Touch(ctx context.Context, id string, at time.Time) error {
	n, err := touchScript.Run(ctx, r.c, []string{r.prefix + "s:" + id}, nanos(at)).Int64()
	if err != nil {
		return fmt.Errorf("session: redis: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// Rotate implements Store.
func (r *RedisStore) Rotate(ctx context.Context, oldHash, newHash string) (Session, error) {
	v, err := rotateScript.Run(ctx, r.c, nil, r.prefix, oldHash, newHash).Slice()
	if err != nil {
		return Session{}, fmt.Errorf("session: redis: %w", err)
	}
	if len(v) == 0 {
		return Session{}, errors.New("session: redis: unexpected script result")
	}
	switch n, _ := v[0].(int64); {
	case n == 0:
		return Session{}, ErrNotFound
	case n == 2 && len(v) == 2:
		sid, _ := v[1].(string)
		return Session{}, &ReuseError{SessionID: sid}
	case n == 1 && len(v) == 3:
		d, _ := v[1].(string)
		ls, _ := v[2].(string)
		return decodeSession(d, ls)
	}
	return Session{}, errors.New("session: redis: unexpected script result")
}

// Delete implements Store.
func (r *RedisStore) Delete(ctx context.Context, id string) error {
	if err := deleteScript.Run(ctx, r.c, nil, r.prefix, id).Err(); err != nil {
		return fmt.Errorf("session: redis: %w", err)
	}
	return nil
}
