package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEdgeValidation(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.json"), []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	head := "envoy: {listen: 127.0.0.1:1}\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: 127.0.0.1:4}\n"
	tenant := func(extra string) string {
		return "tenants:\n  - id: acme\n    domains: [acme.test]\n    jwt: {issuer: i, audiences: [a], jwks_file: k.json}\n" + extra
	}
	cases := []struct {
		name, body string
		want       []string
	}{
		{"bad cidr", head + tenant("    ip_allowlist: [10.0.0.0/33]\n"), []string{`tenant "acme"`, "ip_allowlist", "10.0.0.0/33"}},
		{"cidr host bits", head + tenant("    ip_allowlist: [10.0.0.1/8]\n"), []string{`tenant "acme"`, "ip_allowlist", "host bits", "10.0.0.0/8"}},
		{"not an ip", head + tenant("    ip_allowlist: [example.com]\n"), []string{`tenant "acme"`, "ip_allowlist"}},
		{"missing cert files", "tls: {listen: 127.0.0.1:5}\n" + head + tenant("    tls: {cert_file: nope.pem, key_file: nope.key}\n"), []string{`tenant "acme"`, "tls.cert_file", "nope.pem", "tls.key_file"}},
		{"cert without key", "tls: {listen: 127.0.0.1:5}\n" + head + tenant("    tls: {cert_file: k.json}\n"), []string{`tenant "acme"`, "tls.key_file: required"}},
		{"cert without https listener", head + tenant("    tls: {cert_file: k.json, key_file: k.json}\n"), []string{`tenant "acme"`, "tls.listen"}},
		{"quota without rls", head + tenant("    limits: {per_user_per_hour: 10}\n"), []string{`tenant "acme"`, "ratelimit.grpc"}},
		{"burst below rate", head + tenant("    limits: {requests_per_second: 10, burst: 5}\n"), []string{`tenant "acme"`, "limits.burst"}},
		{"bad origin", head + tenant("    cors: {allow_origins: [app.acme.test]}\n"), []string{`tenant "acme"`, "cors.allow_origins"}},
		{"credentials with star", head + tenant("    cors: {allow_origins: ['*'], allow_credentials: true}\n"), []string{`tenant "acme"`, "cors.allow_credentials"}},
		{"bad method", head + tenant("    cors: {allow_origins: ['*'], allow_methods: [get]}\n"), []string{`tenant "acme"`, "cors.allow_methods"}},
		{"unknown limits field", head + tenant("    limits: {rps: 10}\n"), []string{"rps"}},
		{"bad upstream", head + tenant("    upstreams: [nowhere]\n"), []string{`tenant "acme"`, "upstreams"}},
		{"bad fail mode", "ratelimit: {grpc: 127.0.0.1:6, fail_mode: maybe}\n" + head + tenant(""), []string{"ratelimit.fail_mode"}},
		{"redis without addr", "ratelimit: {grpc: 127.0.0.1:6, backend: redis}\n" + head + tenant(""), []string{"ratelimit.redis.addr"}},
		{"sessions redis without addr", "sessions: {redis: {db: 1}}\n" + head + tenant(""), []string{"sessions.redis.addr: required"}},
		{"sessions redis bad addr", "sessions: {redis: {addr: nowhere, db: -1, timeout: -1s}}\n" + head + tenant(""), []string{"sessions.redis.addr", "sessions.redis.db", "sessions.redis.timeout"}},
		{"recheck without redis", "sessions: {recheck_every: 2s}\n" + head + tenant(""), []string{"sessions.recheck_every: only with sessions.redis"}},
		{"bad tls version", "tls: {listen: 127.0.0.1:5, min_version: '1.1'}\n" + head + tenant(""), []string{"tls.min_version"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "kailash.yaml")
			if err := os.WriteFile(p, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			if err == nil {
				t.Fatal("expected an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestQuotas(t *testing.T) {
	tn := Tenant{ID: "acme", Limits: TenantLimits{MaxAPICallsPerDay: 10, PerUserPerHour: 5, PerRolePerHour: map[string]uint64{"viewer": 1, "admin": 2, "none": 0}}}
	var names []string
	for _, q := range tn.Quotas() {
		names = append(names, q.Name)
	}
	if got := strings.Join(names, ","); got != "acme/tenant/day,acme/user/hour,acme/role/admin/hour,acme/role/viewer/hour" {
		t.Fatalf("quotas %s", got)
	}
}

func TestSessionsRedis(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.json"), []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	body := "sessions: {redis: {addr: '127.0.0.1:6379', password_env: KAILASH_TEST_SESSIONS_REDIS_PW, db: 2}}\n" +
		"envoy: {listen: 127.0.0.1:1}\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3}\nrunner: {http: 127.0.0.1:4}\n" +
		"tenants:\n  - id: acme\n    domains: [acme.test]\n    jwt: {issuer: i, audiences: [a], jwks_file: k.json}\n"
	p := filepath.Join(dir, "kailash.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	r := c.Sessions.Redis
	if r == nil || r.Addr.String() != "127.0.0.1:6379" || r.DB != 2 || r.Timeout != DefaultSessionsRedisTimeout || c.Sessions.RecheckEvery != time.Second {
		t.Fatalf("sessions = %+v, redis = %+v", c.Sessions, r)
	}
	if _, err := r.Password(); err == nil {
		t.Fatal("unset password env accepted")
	}
	t.Setenv("KAILASH_TEST_SESSIONS_REDIS_PW", "s3cret")
	if pw, err := r.Password(); err != nil || pw != "s3cret" {
		t.Fatalf("password = %q, %v", pw, err)
	}
}
