package config

import (
	"fmt"
	"strings"
	"testing"
)

func TestTenantFromValidation(t *testing.T) {
	for _, c := range []struct {
		from, domain, want string
	}{
		{"", "a.example.com", ""},
		{"context_extensions", "*.example.com", ""},
		{"host", "a.example.com", ""},
		{"header", "a.example.com", `authz.tenant_from: "header": want context_extensions or host`},
		{"host", "*.example.com", `domains: "*.example.com": authz.tenant_from host matches exact host names only`},
		{"host", "a.example.com:8443", `authz.tenant_from host matches exact host names only`},
	} {
		cfg := &Config{Authz: Authz{TenantFrom: c.from}, Tenants: []Tenant{{ID: "a", Domains: []string{c.domain}}}}
		var errs []string
		cfg.validateTenantFrom(func(_ int, f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) })
		got := strings.Join(errs, "; ")
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("tenant_from %q domain %q: %q, want %q", c.from, c.domain, got, c.want)
		}
	}
}

func TestRequestHost(t *testing.T) {
	for in, want := range map[string]string{
		"Acme.Example.com": "acme.example.com", "acme.example.com:8443": "acme.example.com",
		"[::1]:80": "::1", "[::1]": "::1", "": "",
	} {
		if got := RequestHost(in); got != want {
			t.Errorf("RequestHost(%q) = %q, want %q", in, got, want)
		}
	}
}
