package extauthz

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
)

func readyz(t *testing.T, r *running) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + r.srv.HTTPAddr() + "/readyz?verbose")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// authz is ready with its config and policy in force; with sessions.redis,
// only while Redis answers (503 naming it otherwise, then back).
func TestReadinessSessionsRedis(t *testing.T) {
	rs := testenv.StartRedis(t)
	cfg := testConfig(t)
	cfg.Sessions.Redis = &config.Redis{Addr: config.MustHostPort(rs.Addr), Timeout: 200 * time.Millisecond}
	r := startServer(t, cfg)
	want := "[+]shutdown ok\n[+]config ok\n[+]policy ok\n[+]sessions_redis ok\nreadyz check passed\n"
	if code, body := readyz(t, r); code != 200 || body != want {
		t.Fatalf("redis up: %d %q, want %q", code, body, want)
	}
	rs.Stop()
	if code, body := readyz(t, r); code != 503 || !strings.Contains(body, "[-]sessions_redis failed: sessions.redis: ") || !strings.Contains(body, "[+]policy ok") {
		t.Fatalf("redis down: %d %q", code, body)
	}
	rs.Start()
	deadline := time.Now().Add(30 * time.Second)
	for code, body := readyz(t, r); code != 200; code, body = readyz(t, r) {
		if time.Now().After(deadline) {
			t.Fatalf("redis back, still %d %q", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Without a policy engine (or a bundle in it), the policy check fails
// with the reason; kailash_policy_revision_info names the bundle in force.
func TestReadinessPolicy(t *testing.T) {
	r := startServer(t, testConfig(t))
	if code, body := readyz(t, r); code != 200 || strings.Contains(body, "sessions_redis") {
		t.Fatalf("in memory: %d %q", code, body)
	}
	body := httpGet(t, "http://"+r.srv.HTTPAddr()+"/metrics")
	rev, _, _ := r.srv.engine.Loaded()
	for _, want := range []string{
		`kailash_policy_revision_info{bundle="active",revision="` + rev + `",source="` + r.srv.engine.Source() + `"} 1`,
		`kailash_policy_last_activation_timestamp_seconds{bundle="active"} `,
		`kailash_ready_check{check="policy",component="authz"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if err := engineLoaded("policy", nil); err == nil || !strings.Contains(err.Error(), "policy: no policy engine") {
		t.Errorf("nil engine: %v", err)
	}
	// A server with no config and no engine (as before New set them) is
	// not ready, and says why.
	err := (&Server{}).readiness().Err(context.Background())
	if err == nil || !strings.Contains(err.Error(), "config: no config loaded") || !strings.Contains(err.Error(), "policy: policy: no policy engine") {
		t.Errorf("empty server: %v", err)
	}
}
