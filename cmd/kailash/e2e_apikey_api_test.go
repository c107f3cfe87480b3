package main

// The API keys admin API end to end: `kailash xds` and `kailash authz` as
// processes, a real Envoy. Keys are created, rotated and revoked through
// Envoy on /v1/admin/tenants/{tenant}/api-keys (the policy decides), and
// used through Envoy on the next requests; with sessions.redis a second
// authz replica follows the same changes.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/internal/wire"
)

// keyVia sends one request through Envoy with an API key.
func keyVia(addr, host, key string) (int, string, error) {
	req, err := http.NewRequest("POST", "http://"+addr+"/v1/workflows/hello/executions", strings.NewReader(`{}`))
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	req.Header.Set("Authorization", "ApiKey "+key)
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// untilKey polls (every 5 ms, so the time measured is not the poll's
// step) until the key answers want through Envoy, within a generous
// deadline; it returns how long that took from since.
func untilKey(t *testing.T, envoyAddr, host, key string, want int, since time.Time) time.Duration {
	t.Helper()
	deadline := since.Add(30 * time.Second)
	for {
		code, body, err := keyVia(envoyAddr, host, key)
		if err == nil && code == want {
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the key never answered %d through Envoy: %d %.200s %v", want, code, body, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// apiKeysStack is xds and authz processes (with more config appended)
// and Envoy, for tenants ops (the admin tenant), acme and globex on one
// upstream.
func apiKeysStack(t *testing.T, authz, extra string) (p ports, path, auditFile, body string, procs []*replica) {
	t.Helper()
	envoytest.Binary(t)
	up, body := slowUpstream(t)
	p = freePorts(t)
	dir := t.TempDir()
	path = filepath.Join(dir, "kailash.yaml")
	auditFile = filepath.Join(dir, "audit.jsonl")
	jwks := abs(t, "../../examples/keys/dev.jwks.json")
	cfg := strings.Replace(configYAML(t, p), "max_request_bytes: 8192}", "max_request_bytes: 8192, "+authz+"}", 1)
	for _, id := range []string{"ops", "acme", "globex"} {
		cfg += fmt.Sprintf("  - id: %s\n    domains: [%s.localhost]\n    jwt: {issuer: %s, audiences: [%s], jwks_file: %s}\n    upstreams: [%s]\n",
			id, id, issuer, audience, jwks, up)
	}
	cfg += fmt.Sprintf("tenant_store: {admin_tenant: ops}\naudit: {file: %s}\n", auditFile) + extra
	writeConfig(t, path, cfg)
	x := startKailash(t, "xds", "-c", path)
	a := startKailash(t, "authz", "-c", path)
	procs = []*replica{{kailashProc: x, name: "xds"}, {kailashProc: a, name: "authz"}}
	startEnvoy(t, path)
	serveOK(t, p.envoy, "acme.localhost", tokenFor(t, "acme", "warmup"), body, 90*time.Second, procs...)
	return p, path, auditFile, body, procs
}

// created is a 201's key and id.
func createdKey(t *testing.T, code int, m map[string]any) (key, id string) {
	t.Helper()
	meta, _ := m["api_key"].(map[string]any)
	key, _ = m["key"].(string)
	id, _ = meta["id"].(string)
	if code != 201 || !strings.HasPrefix(key, "kl_"+id+"_") || id == "" {
		t.Fatalf("create: %d %v", code, m)
	}
	return key, id
}

func TestAPIKeysAdminAPIThroughEnvoy(t *testing.T) {
	keysFile := filepath.Join(t.TempDir(), "apikeys.json")
	p, _, auditFile, body, procs := apiKeysStack(t, "api_keys_file: "+keysFile, "")
	admin := roleToken(t, "ops", "alice", "admin")
	acmeKeys := wire.AdminAPIKeysPath("acme")

	// Create (the admin tenant's admin, for acme): the key works on the
	// next requests through Envoy.
	code, m := adminCall(t, p.envoy, "ops.localhost", admin, "POST", acmeKeys, `{"name": "ci", "roles": ["business_user"], "ttl": "720h"}`)
	createdAt := time.Now()
	key, id := createdKey(t, code, m)
	meta := m["api_key"].(map[string]any)
	if meta["tenant"] != "acme" || meta["subject"] != "sa:ci" || meta["state"] != "active" || meta["expires_at"] == nil || meta["hash"] != nil {
		t.Fatalf("created key's metadata: %v", meta)
	}
	first := untilKey(t, p.envoy, "acme.localhost", key, 200, createdAt)
	t.Logf("API keys (file): 201 Created → first 200 through Envoy: %v", first)
	if code, got, _ := keyVia(p.envoy, "acme.localhost", key); code != 200 || got != body {
		t.Fatalf("the key through Envoy: %d", code)
	}
	if code, _, _ := keyVia(p.envoy, "globex.localhost", key); code != 401 {
		t.Errorf("acme's key on globex: %d, want 401", code)
	}

	// List and get: metadata only, last use shown.
	code, m = adminCall(t, p.envoy, "ops.localhost", admin, "GET", acmeKeys, "")
	raw, _ := json.Marshal(m)
	secret := strings.SplitN(strings.TrimPrefix(key, "kl_"), "_", 2)[1]
	if code != 200 || len(m["api_keys"].([]any)) != 1 || strings.Contains(string(raw), secret) || strings.Contains(string(raw), `"hash"`) {
		t.Fatalf("list: %d %s", code, raw)
	}
	if lu := m["api_keys"].([]any)[0].(map[string]any)["last_used"]; lu == nil {
		t.Errorf("no last_used after a use: %s", raw)
	}

	// The tenant's own admin manages its own keys on its own domain
	// (apikey:manage); another tenant's admin is refused by the policy,
	// a business user lacks the permission, and without a token it is 401.
	acmeAdmin := roleToken(t, "acme", "eve", "admin")
	if code, m := adminCall(t, p.envoy, "acme.localhost", acmeAdmin, "GET", acmeKeys+"/"+id, ""); code != 200 || m["id"] != id {
		t.Errorf("acme's admin gets acme's key: %d %v", code, m)
	}
	globexAdmin := roleToken(t, "globex", "mallory", "admin")
	for _, c := range []struct{ method, path, body string }{
		{"GET", acmeKeys, ""}, {"POST", acmeKeys, `{"name": "evil"}`}, {"POST", acmeKeys + "/" + id + "/rotate", ""}, {"DELETE", acmeKeys + "/" + id, ""},
	} {
		if code, m := adminCall(t, p.envoy, "globex.localhost", globexAdmin, c.method, c.path, c.body); code != 403 || !strings.Contains(fmt.Sprint(m), "admin tenant's domains only") {
			t.Errorf("globex's admin %s %s: %d %v, want 403", c.method, c.path, code, m)
		}
	}
	if code, m := adminCall(t, p.envoy, "acme.localhost", roleToken(t, "acme", "bob", "business_user"), "GET", acmeKeys, ""); code != 403 ||
		!strings.Contains(fmt.Sprint(m), "missing permission apikey:manage") {
		t.Errorf("acme's business user: %d %v, want 403 missing permission apikey:manage", code, m)
	}
	if code, _ := adminCall(t, p.envoy, "ops.localhost", "", "GET", acmeKeys, ""); code != 401 {
		t.Errorf("no token: %d, want 401", code)
	}
	// Straight to authz's HTTP port (skipping Envoy): no identity token, refused.
	if code, m := directCall(t, p.authzHTTP, "POST", acmeKeys, `{"name": "sneaky"}`); code != 401 || m["error"] != "unauthenticated" {
		t.Errorf("without Envoy: %d %v, want 401", code, m)
	}
	// Validation, through Envoy: 422 naming the field; unknown tenant 404.
	if code, m := adminCall(t, p.envoy, "ops.localhost", admin, "POST", acmeKeys, `{"name": "x", "cidrs": ["nope"]}`); code != 422 || !strings.Contains(fmt.Sprint(m["errors"]), "cidrs[0]") {
		t.Errorf("bad cidr: %d %v", code, m)
	}
	if code, m := adminCall(t, p.envoy, "ops.localhost", admin, "GET", wire.AdminAPIKeysPath("nope"), ""); code != 404 || m["error"] != "not_found" {
		t.Errorf("unknown tenant: %d %v", code, m)
	}

	// Rotate (by acme's own admin): the old secret is refused, the new works.
	code, m = adminCall(t, p.envoy, "acme.localhost", acmeAdmin, "POST", acmeKeys+"/"+id+"/rotate", "")
	rotated, _ := m["key"].(string)
	rotatedAt := time.Now()
	if code != 200 || rotated == "" || rotated == key {
		t.Fatalf("rotate: %d %v", code, m)
	}
	untilKey(t, p.envoy, "acme.localhost", key, 401, rotatedAt)
	if code, _, _ := keyVia(p.envoy, "acme.localhost", rotated); code != 200 {
		t.Fatalf("the rotated key: %d", code)
	}

	// Revoke: refused (401 revoked_api_key) on the next requests.
	code, _ = adminCall(t, p.envoy, "ops.localhost", admin, "DELETE", acmeKeys+"/"+id, "")
	revokedAt := time.Now()
	if code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	gone := untilKey(t, p.envoy, "acme.localhost", rotated, 401, revokedAt)
	t.Logf("API keys (file): 204 revoked → first 401 through Envoy: %v", gone)
	if _, got, _ := keyVia(p.envoy, "acme.localhost", rotated); !strings.Contains(got, "revoked_api_key") {
		t.Errorf("revoked key's refusal: %.200s", got)
	}

	// The keys file holds hashes only; the audit names who and what.
	b, _ := os.ReadFile(keysFile)
	if strings.Contains(string(b), secret) || strings.Contains(string(b), strings.SplitN(strings.TrimPrefix(rotated, "kl_"), "_", 2)[1]) {
		t.Errorf("the keys file holds a secret: %s", b)
	}
	events, rawAudit := apiKeyAudit(t, auditFile)
	want := []string{"key.add api key " + id + " alice@ops ok acme ci", "key.add api key alice@ops error acme x", "key.rotate api key " + id + " eve@acme ok acme ci",
		"key.revoke api key " + id + " alice@ops ok acme ci"}
	if strings.Join(events, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit:\n%s\nwant:\n%s", strings.Join(events, "\n"), strings.Join(want, "\n"))
	}
	var f struct{ Keys []struct{ Hash string } }
	_ = json.Unmarshal(b, &f)
	if strings.Contains(rawAudit, secret) || len(f.Keys) != 1 || strings.Contains(rawAudit, f.Keys[0].Hash) {
		t.Errorf("the audit holds a secret or a hash")
	}
	for _, r := range procs {
		select {
		case <-r.done:
			t.Errorf("kailash %s exited: %v", r.name, r.err)
		default:
		}
	}
}

// TestAPIKeysAdminAPIInRedis: with authz.api_keys_in_redis, a key created
// through Envoy (authz replica 1) is served by a second authz replica on
// the same Redis, and its revocation is followed there too.
func TestAPIKeysAdminAPIInRedis(t *testing.T) {
	rd := testenv.StartRedis(t)
	p, path, _, _, _ := apiKeysStack(t, "api_keys_in_redis: true", "sessions: {redis: {addr: "+rd.Addr+"}}\n")
	second := startReplica(t, "authz", path)
	check := checkOn(t, second.grpc)
	admin := roleToken(t, "ops", "alice", "admin")
	acmeKeys := wire.AdminAPIKeysPath("acme")

	code, m := adminCall(t, p.envoy, "ops.localhost", admin, "POST", acmeKeys, `{"name": "ci", "roles": ["business_user"]}`)
	createdAt := time.Now()
	key, id := createdKey(t, code, m)
	first := untilKey(t, p.envoy, "acme.localhost", key, 200, createdAt)
	var onSecond time.Duration
	testenv.Eventually(t, 30*time.Second, func() error {
		if got := check(key); got != 200 {
			return fmt.Errorf("replica 2: %d", got)
		}
		onSecond = time.Since(createdAt)
		return nil
	})
	t.Logf("API keys (Redis): 201 Created → first 200 through Envoy (replica 1): %v; allowed by replica 2: %v", first, onSecond)
	if raw := rd.Client().HGet(context.Background(), "kailash:apikeys", id).Val(); raw == "" || strings.Contains(raw, strings.SplitN(strings.TrimPrefix(key, "kl_"), "_", 2)[1]) {
		t.Errorf("Redis holds %q: want the key, hashed", raw)
	}

	code, _ = adminCall(t, p.envoy, "ops.localhost", admin, "DELETE", acmeKeys+"/"+id, "")
	revokedAt := time.Now()
	if code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	gone := untilKey(t, p.envoy, "acme.localhost", key, 401, revokedAt)
	testenv.Eventually(t, 30*time.Second, func() error {
		if got := check(key); got != 401 {
			return fmt.Errorf("replica 2 after revoke: %d", got)
		}
		onSecond = time.Since(revokedAt)
		return nil
	})
	t.Logf("API keys (Redis): 204 revoked → first 401 through Envoy (replica 1): %v; refused by replica 2: %v", gone, onSecond)
}

// checkOn is a Check of an acme request with an API key sent straight
// to the authz replica at addr: the HTTP status it decides (200 allowed).
func checkOn(t *testing.T, addr string) func(key string) int {
	client := authv3.NewAuthorizationClient(dial(t, addr))
	return func(key string) int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1"}}}},
			ContextExtensions: map[string]string{wire.ContextTenant: "acme"},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "POST", Path: "/v1/workflows/hello/executions", Host: "acme.localhost",
				Headers: map[string]string{"authorization": "ApiKey " + key, "content-type": "application/json"}}}}})
		if err != nil {
			return 0
		}
		if resp.GetOkResponse() != nil {
			return 200
		}
		return int(resp.GetDeniedResponse().GetStatus().GetCode())
	}
}

// directCall calls authz's HTTP port itself, not through Envoy.
func directCall(t *testing.T, addr, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// apiKeyAudit is the audit file's key.* events of the admin API as
// "action target actor outcome tenant name", and the whole file.
func apiKeyAudit(t *testing.T, path string) ([]string, string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		var e struct {
			Action, Actor, Target, Outcome string
			Detail                         map[string]any
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(e.Action, "key.") && e.Detail["via"] == "admin api" {
			out = append(out, fmt.Sprintf("%s %s %s %s %v %v", e.Action, e.Target, e.Actor, e.Outcome, e.Detail["tenant"], e.Detail["name"]))
		}
	}
	return out, string(b)
}
