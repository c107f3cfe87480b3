package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// storeConfig is a file config with one tenant (ops) and a tenant store.
func storeConfig(t *testing.T, store string) *Config {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.json"), []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	body := "envoy: {listen: 127.0.0.1:1}\nxds: {grpc: 127.0.0.1:2}\nauthz: {grpc: 127.0.0.1:3, http: 127.0.0.1:5}\nrunner: {http: 127.0.0.1:4}\n" +
		store + "tenants:\n  - id: ops\n    domains: [ops.test]\n    jwt: {issuer: i, audiences: [a], jwks_file: k.json}\n"
	p := filepath.Join(dir, "kailash.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTenantStoreValidation(t *testing.T) {
	storeConfig(t, "tenant_store: {postgres_dsn: 'postgres://x@127.0.0.1/db', admin_tenant: ops}\n")
	for _, tc := range []struct{ store, want string }{
		{"tenant_store: {postgres_dsn: 'postgres://x@h/db'}\n", "tenant_store.admin_tenant: required"},
		{"tenant_store: {postgres_dsn: 'postgres://x@h/db', admin_tenant: nobody}\n", `tenant_store.admin_tenant: "nobody" is not a tenant`},
		{"tenant_store: {postgres_dsn: 'mysql://x', admin_tenant: ops}\n", "tenant_store.postgres_dsn: want a postgres:// URL"},
		{"tenant_store: {admin_tenant: ops}\n", "tenant_store.admin_tenant: needs tenant_store.postgres_dsn"},
		{"tenant_store: {postgres_dsn: 'postgres://x@h/db', admin_tenant: ops, resync: -1s}\n", "tenant_store.resync: must not be negative"},
	} {
		c := storeConfig(t, "")
		dir := filepath.Dir(c.File)
		b, _ := os.ReadFile(c.File)
		s := strings.Replace(string(b), "tenants:\n", tc.store+"tenants:\n", 1)
		if err := os.WriteFile(filepath.Join(dir, "kailash.yaml"), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(c.File)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.store, err, tc.want)
		}
	}
}

// TestAdminTenantForAPIKeys: with API keys and no tenant store,
// tenant_store.admin_tenant names the tenant whose domains manage every
// tenant's keys; it is checked as with a store, and marks that tenant
// (input.tenant.admin) and no other.
func TestAdminTenantForAPIKeys(t *testing.T) {
	c := storeConfig(t, "")
	dir := filepath.Dir(c.File)
	b, _ := os.ReadFile(c.File)
	write := func(store, authz string) (*Config, error) {
		s := strings.Replace(string(b), "tenants:\n", store+"tenants:\n", 1)
		s = strings.Replace(s, "http: 127.0.0.1:5}", "http: 127.0.0.1:5"+authz+"}", 1)
		s += "  - id: acme\n    domains: [acme.test]\n    jwt: {issuer: i, audiences: [a], jwks_file: k.json}\n"
		if err := os.WriteFile(filepath.Join(dir, "kailash.yaml"), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return Load(c.File)
	}
	got, err := write("tenant_store: {admin_tenant: ops}\n", ", api_keys_file: keys.json")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Tenants[0].Admin || got.Tenants[1].Admin {
		t.Errorf("admin marks: ops %v, acme %v", got.Tenants[0].Admin, got.Tenants[1].Admin)
	}
	if _, err := write("tenant_store: {admin_tenant: nobody}\n", ", api_keys_file: keys.json"); err == nil || !strings.Contains(err.Error(), `tenant_store.admin_tenant: "nobody" is not a tenant`) {
		t.Errorf("unknown admin tenant: %v", err)
	}
	if _, err := write("tenant_store: {admin_tenant: ops}\n", ""); err == nil || !strings.Contains(err.Error(), "or API keys") {
		t.Errorf("admin tenant without store or API keys: %v", err)
	}
}

func TestParseTenantIsStrictAndNamesFields(t *testing.T) {
	good := `{"id": "beta", "domains": ["beta.test"], "jwt": {"issuer": "i", "audiences": ["a"], "jwks_file": "k.json"}}`
	tn, err := ParseTenant("request body", []byte(good))
	if err != nil || tn.ID != "beta" || tn.Domains[0] != "beta.test" || tn.JWT.JWKSFile != "k.json" {
		t.Fatalf("ParseTenant = %+v, %v", tn, err)
	}
	for _, tc := range []struct{ doc, want string }{
		{"{\n\"id\": \"beta\",\n\"domainz\": [\"b.test\"]\n}", `request body:3:1: domainz: unknown key`},
		{`{"id": "beta", "jwt": {"issuer": "i", "algs": ["HS256"]}}`, `jwt.algs: unknown key`},
		{`{"id": "beta", "request_timeout": "soon"}`, `request_timeout`},
		{`["beta"]`, "want one tenant"},
		{`{"id": `, "request body:"},
	} {
		if _, err := ParseTenant("request body", []byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.doc, err, tc.want)
		}
	}
}

func TestWithTenantsValidatesAsOneFile(t *testing.T) {
	c := storeConfig(t, "tenant_store: {postgres_dsn: 'postgres://x@127.0.0.1/db', admin_tenant: ops}\n")
	parse := func(doc string) Tenant { return mustParseTenant(t, doc) }
	beta := parse(`{"id": "beta", "domains": ["beta.test"], "jwt": {"issuer": "i", "audiences": ["a"], "jwks_file": "k.json"}}`)
	m, err := c.WithTenants("tenant store", []Tenant{beta})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Tenants) != 2 || m.Tenants[1].Source != "tenant store" || m.Tenants[1].JWT.RolesClaim != "roles" || len(c.Tenants) != 1 {
		t.Fatalf("merged tenants: %+v (file's: %d)", m.Tenants, len(c.Tenants))
	}
	for _, tc := range []struct {
		doc  string
		want string
	}{
		{`{"id": "gamma", "domains": ["OPS.test"], "jwt": {"issuer": "i", "audiences": ["a"], "jwks_file": "k.json"}}`, `tenant "gamma": domains: "OPS.test" is already served by tenant "ops"`},
		{`{"id": "ops", "domains": ["x.test"], "jwt": {"issuer": "i", "audiences": ["a"], "jwks_file": "k.json"}}`, `tenant "ops": id: duplicate`},
		{`{"id": "gamma", "domains": ["not a host"], "jwt": {"issuer": "i", "audiences": ["a"], "jwks_file": "k.json"}}`, `tenant "gamma": domains: "not a host" is not a host name`},
		{`{"id": "gamma", "domains": ["g.test"], "jwt": {"audiences": ["a"], "jwks_file": "k.json"}}`, `tenant "gamma": jwt.issuer: required`},
	} {
		if _, err := c.WithTenants("tenant store", []Tenant{beta, parse(tc.doc)}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.doc, err, tc.want)
		}
	}
	// The admin tenant must be the file's: a stored tenant of that id is a duplicate anyway.
	if _, ok := m.fileTenant("beta"); ok {
		t.Fatal("a stored tenant counted as the file's")
	}
}

// mustParseTenant is ParseTenant of a test's tenant document.
func mustParseTenant(t testing.TB, doc string) Tenant {
	t.Helper()
	tn, err := ParseTenant("doc", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return tn
}
