package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/internal/wire"
)

// TestAPIKeysThroughEnvoy: a service account's API key made with `kailash
// apikey create` authenticates through a real Envoy (Authorization: ApiKey
// or X-API-Key) as sa:<name> with its roles, and the upstream never sees
// the key; a wrong secret, another tenant's host, a revoked key (authz
// follows the file), an expired key and one used outside its network are
// refused 401 naming why.
func TestAPIKeysThroughEnvoy(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "apikeys.json")
	s := startStackConfig(t, func(p ports) string {
		return strings.Replace(configYAML(t, p, "acme", "globex"), "max_request_bytes: 8192}", "max_request_bytes: 8192, api_keys_file: "+keys+"}", 1)
	})
	create := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(context.Background(), append([]string{"apikey", "create", "-c", s.cfgPath, "--tenant", "acme"}, args...), &out); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out.String())
	}
	key := create("--name", "ci", "--roles", "admin")
	if !strings.HasPrefix(key, "kl_") {
		t.Fatalf("key %q", key)
	}
	var r reply
	testenv.Eventually(t, 15*time.Second, func() error { // authz reads the file within a second
		if r = s.mustDo("acme.localhost", "", map[string]string{"Authorization": "ApiKey " + key}); r.code != 200 {
			return fmt.Errorf("ApiKey: %d %s", r.code, r.body)
		}
		return nil
	})
	s.mu.Lock()
	up := s.upstream[len(s.upstream)-1]
	s.mu.Unlock()
	if up.Get(wire.HeaderUser) != "sa:ci" || !strings.Contains(up.Get(wire.HeaderRoles), "admin") || up.Get("Authorization") != "" {
		t.Errorf("upstream headers user=%q roles=%q authorization=%q", up.Get(wire.HeaderUser), up.Get(wire.HeaderRoles), up.Get("Authorization"))
	}
	if r := s.mustDo("acme.localhost", "", map[string]string{"X-Api-Key": key}); r.code != 200 {
		t.Errorf("X-API-Key: %d %s", r.code, r.body)
	}
	refused := func(what, host string, h map[string]string, reason string) {
		t.Helper()
		r := s.mustDo(host, "", h)
		if r.code != 401 || !strings.Contains(r.body, reason) {
			t.Errorf("%s: %d %s, want 401 %s", what, r.code, r.body, reason)
		}
	}
	id := strings.SplitN(strings.TrimPrefix(key, "kl_"), "_", 2)[0]

	// OAuth2 client credentials at our token endpoint: the key's id and
	// secret as HTTP Basic give our session token, which authenticates.
	tokenReq := func(user, pass string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+s.ports.envoy+"/auth/token", strings.NewReader("grant_type=client_credentials"))
		req.Host = "acme.localhost"
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(user, pass)
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	secretPart := strings.SplitN(strings.TrimPrefix(key, "kl_"), "_", 2)[1]
	code, tokResp := tokenReq(id, secretPart)
	access, _ := tokResp["access_token"].(string)
	if code != 200 || access == "" || tokResp["token_type"] != "Bearer" || tokResp["refresh_token"] != nil {
		t.Fatalf("client credentials: %d %v", code, tokResp)
	}
	if r := s.mustDo("acme.localhost", access, nil); r.code != 200 {
		t.Errorf("the issued token: %d %s", r.code, r.body)
	}
	if code, m := tokenReq(id, "wrong"); code != 401 || m["error"] != "invalid_client" {
		t.Errorf("wrong client secret: %d %v", code, m)
	}
	refused("wrong secret", "acme.localhost", map[string]string{"Authorization": "ApiKey kl_" + id + "_wrongsecret"}, "unknown_api_key")
	refused("another tenant", "globex.localhost", map[string]string{"Authorization": "ApiKey " + key}, "wrong_tenant")
	fenced := create("--name", "office", "--roles", "admin", "--cidr", "10.0.0.0/8")
	expired := create("--name", "old", "--roles", "admin", "--ttl", "1ms")
	time.Sleep(1500 * time.Millisecond) // the file is followed every second
	refused("outside its network", "acme.localhost", map[string]string{"Authorization": "ApiKey " + fenced}, "api_key_network")
	refused("expired", "acme.localhost", map[string]string{"Authorization": "ApiKey " + expired}, "expired")
	if err := run(context.Background(), []string{"apikey", "revoke", "-c", s.cfgPath, "--id", id}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if r := s.mustDo("acme.localhost", "", map[string]string{"Authorization": "ApiKey " + key}); r.code != 401 || !strings.Contains(r.body, "revoked_api_key") {
			return fmt.Errorf("revoked key: %d %s", r.code, r.body)
		}
		return nil
	})
	var list bytes.Buffer
	if err := run(context.Background(), []string{"apikey", "list", "-c", s.cfgPath}, &list); err != nil || !strings.Contains(list.String(), "revoked") || strings.Contains(list.String(), strings.SplitN(strings.TrimPrefix(key, "kl_"), "_", 2)[1]) {
		t.Errorf("apikey list: %v\n%s", err, list.String())
	}
}

// TestAPIKeysInRedis: with authz.api_keys_in_redis, `kailash apikey`
// writes the keys to sessions.redis (a real Redis), authz reads them from
// there (and follows a revocation), and the keys' last use reaches Redis
// for `kailash apikey list`.
func TestAPIKeysInRedis(t *testing.T) {
	rd := testenv.StartRedis(t)
	s := startStackConfig(t, func(p ports) string {
		c := strings.Replace(configYAML(t, p, "acme"), "max_request_bytes: 8192}", "max_request_bytes: 8192, api_keys_in_redis: true}", 1)
		return strings.Replace(c, "\ntenants:\n", "\nsessions: {redis: {addr: "+rd.Addr+"}}\ntenants:\n", 1)
	})
	var out bytes.Buffer
	if err := run(context.Background(), []string{"apikey", "create", "-c", s.cfgPath, "--tenant", "acme", "--name", "ci", "--roles", "admin"}, &out); err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(out.String())
	testenv.Eventually(t, 15*time.Second, func() error {
		if r := s.mustDo("acme.localhost", "", map[string]string{"Authorization": "ApiKey " + key}); r.code != 200 {
			return fmt.Errorf("ApiKey from Redis: %d %s", r.code, r.body)
		}
		return nil
	})
	testenv.Eventually(t, 15*time.Second, func() error {
		var list bytes.Buffer
		if err := run(context.Background(), []string{"apikey", "list", "-c", s.cfgPath}, &list); err != nil {
			return err
		}
		if !strings.Contains(list.String(), "last used") {
			return fmt.Errorf("no last use yet: %s", list.String())
		}
		return nil
	})
	id := strings.SplitN(strings.TrimPrefix(key, "kl_"), "_", 2)[0]
	if err := run(context.Background(), []string{"apikey", "revoke", "-c", s.cfgPath, "--id", id}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if r := s.mustDo("acme.localhost", "", map[string]string{"Authorization": "ApiKey " + key}); r.code != 401 || !strings.Contains(r.body, "revoked_api_key") {
			return fmt.Errorf("revoked key: %d %s", r.code, r.body)
		}
		return nil
	})
	if raw := rd.Client().HGetAll(context.Background(), "kailash:apikeys").Val(); len(raw) != 1 || strings.Contains(fmt.Sprint(raw), strings.SplitN(strings.TrimPrefix(key, "kl_"), "_", 2)[1]) {
		t.Errorf("Redis holds %v: want one key, hashed", raw)
	}
}
