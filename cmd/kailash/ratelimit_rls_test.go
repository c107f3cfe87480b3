package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	rlcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"

	"github.com/kailash-gw/kailash/extauthz/ratelimit"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/wire"
)

func TestRLSStandaloneConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := rlsStandaloneConfig(&rlsFlags{}, env(nil))
	if err != nil || c.RateLimit.GRPC.String() != "0.0.0.0:8081" || c.RateLimit.HTTP.String() != "0.0.0.0:8080" || c.RateLimit.Backend != "" {
		t.Fatalf("defaults: %+v %v", c.RateLimit, err)
	}
	c, err = rlsStandaloneConfig(&rlsFlags{}, env(map[string]string{"REDIS_URL": "redis://r:6379", "REDIS_SOCKET_TYPE": "tcp", "REDIS_AUTH": "s3cret", "GRPC_PORT": "9001"}))
	if err != nil || c.RateLimit.Backend != config.BackendRedis || c.RateLimit.Redis.Addr.String() != "r:6379" || c.RateLimit.Redis.PasswordEnv != "REDIS_AUTH" || c.RateLimit.GRPC.String() != "0.0.0.0:9001" {
		t.Fatalf("REDIS_URL: %+v %v", c.RateLimit, err)
	}
	if c, _ := rlsStandaloneConfig(&rlsFlags{redis: "flag:1"}, env(map[string]string{"REDIS_URL": "env:2"})); c.RateLimit.Redis.Addr.String() != "flag:1" {
		t.Fatalf("--redis must win over REDIS_URL: %q", c.RateLimit.Redis.Addr)
	}
	if _, err := rlsStandaloneConfig(&rlsFlags{}, env(map[string]string{"REDIS_URL": "/var/run/r.sock", "REDIS_SOCKET_TYPE": "unix"})); err == nil || !strings.Contains(err.Error(), "REDIS_SOCKET_TYPE=unix") {
		t.Fatalf("unix socket: %v", err)
	}
}

// `kailash translate --ratelimit-config` prints a file our loader reads in
// envoyproxy/ratelimit's format with every tenant quota's limit.
func TestTranslateRatelimitConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kailash.yaml")
	writeConfig(t, path, rlsConfig(t, freePorts(t), "127.0.0.1:1", "memory", "", 50, "", ""))
	var out bytes.Buffer
	if err := runTranslate(context.Background(), []string{"-c", path, "--ratelimit-config"}, &out); err != nil {
		t.Fatal(err)
	}
	c, err := ratelimit.ParseRLSConfig(map[string][]byte{"out.yaml": out.Bytes()})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, tc := range []struct {
		kv   []string
		want uint32
	}{
		{[]string{wire.DescTenant, "acme", wire.DescUser, "alice"}, 50},
		{[]string{wire.DescTenant, "acme", wire.DescQuota, wire.QuotaAuth, wire.DescRemoteAddress, "10.0.0.1"}, uint32(config.DefaultAuthPerMinute)},
	} {
		l := c.Limit(wire.RateLimitDomain, rlsTestDesc(tc.kv...))
		if l == nil || l.RequestsPerUnit != tc.want {
			t.Errorf("%v: %+v, want %d\n%s", tc.kv, l, tc.want, out.String())
		}
	}
}

func rlsTestDesc(kv ...string) *rlcommonv3.RateLimitDescriptor {
	d := &rlcommonv3.RateLimitDescriptor{}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &rlcommonv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

// Their file passed to -c (the reported "field domain not found") says how
// to pass it.
func TestRatelimitTheirFileOnDashC(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeConfig(t, path, "domain: edge\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n")
	err := runRateLimit(context.Background(), []string{"-c", path}, nil)
	if err == nil || !strings.Contains(err.Error(), "pass it with --rls-config "+path) {
		t.Fatalf("err = %v", err)
	}
}
