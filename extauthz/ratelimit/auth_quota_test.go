package ratelimit

import (
	"testing"

	"github.com/kailash-gw/kailash/internal/config"
)

// The login quota has one counter per client IP, and the login
// descriptor matches no other quota (nor another descriptor the login one).
func TestRulesMatchLoginQuota(t *testing.T) {
	cfg := testConfig("127.0.0.1:1")
	n := uint64(3)
	cfg.Tenants[0].Limits.AuthPerMinute = &n
	r := NewRules(cfg)
	for _, tc := range []struct {
		kv      []string
		key     string
		matched bool
	}{
		{[]string{"tenant", "acme", "quota", "auth", "remote_address", "10.0.0.1"}, "acme/auth/minute|10.0.0.1", true},
		{[]string{"tenant", "acme", "quota", "auth", "remote_address", "10.0.0.2"}, "acme/auth/minute|10.0.0.2", true},
		{[]string{"tenant", "acme", "quota", "auth", "remote_address", ""}, "", false},
		{[]string{"tenant", "acme", "quota", "auth"}, "", false},
		{[]string{"tenant", "acme", "quota", "day", "remote_address", "10.0.0.1"}, "", false},
		{[]string{"tenant", "globex", "quota", "auth", "remote_address", "10.0.0.1"}, "", false},
	} {
		q, key, ok := r.match(desc(tc.kv...))
		if ok != tc.matched || key != tc.key {
			t.Errorf("%v: got %q %v", tc.kv, key, ok)
		}
		if ok && (q.Limit != 3 || q.Unit != config.Minute || !q.Auth) {
			t.Errorf("%v: quota %+v", tc.kv, q)
		}
	}
}
