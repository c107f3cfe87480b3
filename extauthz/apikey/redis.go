package apikey

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis keeps the keys in one Redis hash (sessions.redis) that every authz
// replica reads, with a version counter that tells them when to re-read,
// and the keys' last use by any replica.
type Redis struct {
	c      *redis.Client
	prefix string
}

// NewRedis stores under prefix (default kailash:apikeys).
func NewRedis(c *redis.Client, prefix string) *Redis {
	if prefix == "" {
		prefix = "kailash:apikeys"
	}
	return &Redis{c: c, prefix: prefix}
}

// Load is every key and the version it was read at.
func (r *Redis) Load(ctx context.Context) (File, int64, error) {
	var f File
	v, err := r.Version(ctx)
	if err != nil {
		return f, 0, err
	}
	m, err := r.c.HGetAll(ctx, r.prefix).Result()
	if err != nil {
		return f, 0, err
	}
	for id, raw := range m {
		var k Key
		if err := json.Unmarshal([]byte(raw), &k); err != nil {
			return f, 0, errors.New("api key " + id + " in Redis does not parse")
		}
		f.Keys = append(f.Keys, k)
	}
	sort.Slice(f.Keys, func(i, j int) bool { return f.Keys[i].Created.Before(f.Keys[j].Created) })
	return f, v, nil
}

// Version changes with every Put.
func (r *Redis) Version(ctx context.Context) (int64, error) {
	v, err := r.c.Get(ctx, r.prefix+":version").Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, err
}

// Put writes k (a new key, or a rotated or revoked one).
func (r *Redis) Put(ctx context.Context, k Key) error {
	b, err := json.Marshal(k)
	if err != nil {
		return err
	}
	_, err = r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, r.prefix, k.ID, b)
		p.Incr(ctx, r.prefix+":version")
		return nil
	})
	return err
}

// Touch records that key id authenticated a request at.
func (r *Redis) Touch(ctx context.Context, id string, at time.Time) error {
	return r.c.HSet(ctx, r.prefix+":last_used", id, at.UTC().Format(time.RFC3339)).Err()
}

// LastUsed is each key's last use by any replica.
func (r *Redis) LastUsed(ctx context.Context) (map[string]time.Time, error) {
	m, err := r.c.HGetAll(ctx, r.prefix+":last_used").Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string]time.Time, len(m))
	for id, s := range m {
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			out[id] = t
		}
	}
	return out, nil
}
