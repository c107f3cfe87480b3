package main

// The tenant store end to end: `kailash xds` and `kailash authz` as
// processes on one PostgreSQL, a real Envoy. The admin API is called
// through Envoy on the admin tenant's domain (the policy decides);
// a tenant it creates is served through Envoy, suspended is refused,
// deleted is an unknown host.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// roleToken mints a dev token for sub of tenant with roles.
func roleToken(t *testing.T, tenant, sub string, roles ...string) string {
	t.Helper()
	pem, err := os.ReadFile("../../examples/keys/dev-signing-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	key, err := devtoken.Key(pem)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := devtoken.Mint(key, devtoken.Claims{Issuer: issuer, Audience: []string{audience}, Tenant: tenant, Subject: sub, Roles: roles, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// adminCall sends one admin API request through Envoy to host.
func adminCall(t *testing.T, envoyAddr, host, token, method, path, body string, hdr ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+envoyAddr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if m == nil {
		m = map[string]any{"raw": string(b)}
	}
	return resp.StatusCode, m
}

func TestTenantStoreAdminAPIThroughEnvoy(t *testing.T) {
	envoytest.Binary(t)
	pg := testenv.StartPostgres(t)
	up, body := slowUpstream(t)
	p := freePorts(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "kailash.yaml")
	auditFile := filepath.Join(dir, "audit.jsonl")
	jwks := abs(t, "../../examples/keys/dev.jwks.json")
	cfg := configYAML(t, p) + fmt.Sprintf(`  - id: ops
    domains: [ops.localhost]
    jwt: {issuer: %s, audiences: [%s], jwks_file: %s}
    upstreams: [%s]
tenant_store: {postgres_dsn: %q, admin_tenant: ops, resync: 30s}
audit: {file: %s}
`, issuer, audience, jwks, up, pg.DSN, auditFile)
	writeConfig(t, path, cfg)
	x := startKailash(t, "xds", "-c", path)
	a := startKailash(t, "authz", "-c", path)
	procs := []*replica{{kailashProc: x, name: "xds"}, {kailashProc: a, name: "authz"}}
	startEnvoy(t, path)
	serveOK(t, p.envoy, "ops.localhost", tokenFor(t, "ops", "warmup"), body, 90*time.Second, procs...)

	admin := roleToken(t, "ops", "alice", "admin")
	const P = "/v1/admin/tenants"

	// Without system:configure the policy refuses (403 from ext_authz).
	if code, m := adminCall(t, p.envoy, "ops.localhost", roleToken(t, "ops", "bob", "business_user"), "GET", P, ""); code != 403 ||
		!strings.Contains(fmt.Sprint(m), "missing permission system:configure") {
		t.Fatalf("business_user: %d %v, want 403 missing permission system:configure", code, m)
	}
	// No identity at all: 401 at the edge.
	if code, _ := adminCall(t, p.envoy, "ops.localhost", "", "GET", P, ""); code != 401 {
		t.Fatalf("no token: %d, want 401", code)
	}
	if code, m := adminCall(t, p.envoy, "ops.localhost", admin, "GET", P, ""); code != 200 || len(m["tenants"].([]any)) != 0 {
		t.Fatalf("list: %d %v", code, m)
	}
	// Straight to authz's HTTP port, not through Envoy: no identity token, refused.
	if code := httpStatus(p.authzHTTP, P); code != 401 {
		t.Fatalf("the admin API without Envoy: %d, want 401", code)
	}

	beta := fmt.Sprintf(`{"id": "beta", "domains": ["beta.localhost"], "plan": "pro", "jwt": {"issuer": %q, "audiences": [%q], "jwks_file": %q}, "upstreams": [%q]}`,
		issuer, audience, jwks, up)
	betaTok := tokenFor(t, "beta", "carol")
	if code, _, _ := getVia(p.envoy, "beta.localhost", betaTok, ""); code != 404 {
		t.Fatalf("beta before it exists: %d, want 404", code)
	}
	code, m := adminCall(t, p.envoy, "ops.localhost", admin, "POST", P, beta)
	created := time.Now()
	if code != 201 || m["version"] != 1.0 || m["updated_by"] != "alice@ops" {
		t.Fatalf("create beta: %d %v", code, m)
	}
	// Polled every 5 ms (not testenv.Eventually's period) so the time from
	// the 201 to the first 200 is measured, not the poll's step; the
	// deadline is generous and the number only logged.
	var first time.Duration
	deadline := created.Add(30 * time.Second)
	for {
		code, got, err := getVia(p.envoy, "beta.localhost", betaTok, "")
		if err == nil && code == 200 && got == body {
			first = time.Since(created)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("beta never served through Envoy: %d %v", code, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("tenant store: 201 Created → first 200 through Envoy: %v", first)
	// The API is only on the admin tenant's domains: beta's own admin
	// reaches beta's upstream, never the API.
	if code, m := adminCall(t, p.envoy, "beta.localhost", roleToken(t, "beta", "eve", "admin"), "GET", P, ""); code != 200 || m["raw"] != body {
		t.Fatalf("the admin API on a tenant's domain: %d %.80v", code, m)
	}

	// Conflicts: 409 naming the owner, for the file's domain and the store's.
	gamma := strings.NewReplacer(`"beta"`, `"gamma"`, `beta.localhost`, `ops.localhost`).Replace(beta)
	if code, m := adminCall(t, p.envoy, "ops.localhost", admin, "POST", P, gamma); code != 409 || m["owner"].(map[string]any)["tenant"] != "ops" {
		t.Fatalf("domain of the file: %d %v", code, m)
	}
	gamma = strings.Replace(beta, `"beta"`, `"gamma"`, 1)
	if code, m := adminCall(t, p.envoy, "ops.localhost", admin, "POST", P, gamma); code != 409 || m["owner"].(map[string]any)["tenant"] != "beta" {
		t.Fatalf("domain of the store: %d %v", code, m)
	}
	// A bad document: the config's field-naming errors.
	if code, m := adminCall(t, p.envoy, "ops.localhost", admin, "POST", P, `{"id": "delta", "domainz": ["d.localhost"]}`); code != 400 ||
		!strings.Contains(fmt.Sprint(m["errors"]), "domainz: unknown key") {
		t.Fatalf("bad document: %d %v", code, m)
	}

	// Suspend: refused at the edge (403); resume: served again.
	if code, m := adminCall(t, p.envoy, "ops.localhost", admin, "POST", P+"/beta/suspend", ""); code != 200 || m["suspended"] != true {
		t.Fatalf("suspend: %d %v", code, m)
	}
	waitStatus(t, p.envoy, "beta.localhost", betaTok, 403, procs...)
	if code, _ := adminCall(t, p.envoy, "ops.localhost", admin, "POST", P+"/beta/resume", "", "If-Match", `"2"`); code != 200 {
		t.Fatalf("resume: %d", code)
	}
	waitStatus(t, p.envoy, "beta.localhost", betaTok, 200, procs...)
	// Delete: an unknown host again.
	if code, m := adminCall(t, p.envoy, "ops.localhost", admin, "DELETE", P+"/beta", "", "If-Match", `"3"`); code != 204 {
		t.Fatalf("delete: %d %v", code, m)
	}
	waitStatus(t, p.envoy, "beta.localhost", betaTok, 404, procs...)

	// Every change is audited with who, what and when.
	var got []string
	f, err := os.Open(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct{ Action, Actor, Target, Outcome string }
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(e.Action, "tenant.") {
			got = append(got, fmt.Sprintf("%s %s %s %s", e.Action, e.Target, e.Actor, e.Outcome))
		}
	}
	want := []string{"tenant.add beta alice@ops ok", "tenant.add gamma alice@ops error", "tenant.add gamma alice@ops error",
		"tenant.add  alice@ops error", "tenant.suspend beta alice@ops ok", "tenant.resume beta alice@ops ok", "tenant.remove beta alice@ops ok"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// waitStatus waits until host answers want through Envoy.
func waitStatus(t *testing.T, envoyAddr, host, token string, want int, procs ...*replica) {
	t.Helper()
	start := time.Now()
	testenv.Eventually(t, 30*time.Second, func() error {
		for _, r := range procs {
			select {
			case <-r.done:
				t.Fatalf("kailash %s exited: %v\n%s", r.name, r.err, r.out)
			default:
			}
		}
		code, _, err := getVia(envoyAddr, host, token, "")
		if err != nil {
			return err
		}
		if code != want {
			return fmt.Errorf("%s: %d, want %d", host, code, want)
		}
		return nil
	})
	t.Logf("%s answers %d after %v", host, want, time.Since(start))
}
