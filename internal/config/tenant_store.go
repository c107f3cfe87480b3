package config

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kailash-gw/kailash/internal/config/yamlcheck"
)

// TenantStore is an optional second source of tenants: rows in PostgreSQL,
// written through the admin API (/v1/admin/tenants on authz's HTTP port,
// reached through Envoy on the admin tenant's domains) and followed by
// every xds and authz replica (LISTEN/NOTIFY plus a periodic full read).
// The file's tenants keep working beside them; a tenant id or a domain
// may be claimed once, by the file or by the store.
type TenantStore struct {
	// PostgresDSN is the database (a postgres:// URL or key=value
	// string); unset: no tenant store. It may hold a password: never
	// logged.
	PostgresDSN string `yaml:"postgres_dsn"`
	// AdminTenant is the tenant of this file whose domains serve the admin
	// API, authorized by the policy (the shipped bundle requires
	// permission system:configure): /v1/admin/tenants with postgres_dsn,
	// and every tenant's /v1/admin/tenants/{tenant}/api-keys with API keys
	// (authz.api_keys_file or authz.api_keys_in_redis). Required with
	// postgres_dsn; without it, tenants manage only their own API keys.
	AdminTenant string `yaml:"admin_tenant"`
	// Resync is the period of the full read that backs up the
	// notifications (default 1m).
	Resync time.Duration `yaml:"resync"`
}

// DefaultTenantStoreResync is tenant_store.resync when unset.
const DefaultTenantStoreResync = time.Minute

// Enabled reports whether a tenant store is configured.
func (s TenantStore) Enabled() bool { return s.PostgresDSN != "" }

func (c *Config) validateTenantStore(at func(line int, format string, args ...any)) {
	s := c.TenantStore
	if !s.Enabled() {
		switch {
		case s.AdminTenant == "":
		case !c.Authz.APIKeysEnabled():
			at(0, "tenant_store.admin_tenant: needs tenant_store.postgres_dsn (the tenant API) or API keys (authz.api_keys_file or authz.api_keys_in_redis)")
		default:
			c.validateAdminTenant(at)
		}
		return
	}
	if !strings.HasPrefix(s.PostgresDSN, "postgres://") && !strings.HasPrefix(s.PostgresDSN, "postgresql://") && !strings.Contains(s.PostgresDSN, "=") {
		at(0, "tenant_store.postgres_dsn: want a postgres:// URL or a key=value connection string")
	}
	if s.AdminTenant == "" {
		at(0, "tenant_store.admin_tenant: required with tenant_store.postgres_dsn (the tenant whose domains serve /v1/admin/tenants)")
	} else {
		c.validateAdminTenant(at)
	}
	if s.Resync < 0 {
		at(0, "tenant_store.resync: must not be negative")
	}
}

// validateAdminTenant checks tenant_store.admin_tenant (set).
func (c *Config) validateAdminTenant(at func(line int, format string, args ...any)) {
	s := c.TenantStore
	switch t, ok := c.fileTenant(s.AdminTenant); {
	case !ok:
		at(0, "tenant_store.admin_tenant: %q is not a tenant of this file", s.AdminTenant)
	case !t.IsActive():
		at(0, "tenant_store.admin_tenant: tenant %q is inactive", s.AdminTenant)
	}
	if c.Authz.HTTP.IsZero() {
		at(0, "tenant_store: needs authz.http (the admin API is served there, behind Envoy)")
	}
}

// fileTenant is the tenant id of the file (not of the tenant store).
func (c *Config) fileTenant(id string) (*Tenant, bool) {
	for i := range c.Tenants {
		if c.Tenants[i].ID == id && c.Tenants[i].Source == "" {
			return &c.Tenants[i], true
		}
	}
	return nil, false
}

// MaxTenantDocBytes bounds one tenant document.
const MaxTenantDocBytes = 256 << 10

// ParseTenant decodes one tenant document — a YAML mapping or a JSON
// object with exactly the keys of an entry of kailash.yaml's tenants — as
// strictly as Parse decodes the file: every unknown key or mistyped value
// is reported at once, as name:line:column: field: problem. The tenant's
// own checks (domains, jwt, ...) are Validate's, on the config the tenant
// joins (WithTenants).
func ParseTenant(name string, b []byte) (Tenant, error) {
	if len(b) > MaxTenantDocBytes {
		return Tenant{}, fmt.Errorf("%s: larger than %d bytes", name, MaxTenantDocBytes)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return Tenant{}, fmt.Errorf("%s:%s", name, syntaxRe.ReplaceAllString(err.Error(), "$1: "))
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return Tenant{}, fmt.Errorf("%s: want one tenant (a mapping of id, domains, jwt, ...)", name)
	}
	if errs := yamlcheck.Check(&root, reflect.TypeOf(Tenant{}), 0); len(errs) > 0 {
		out := make([]error, len(errs))
		for i, e := range errs {
			out[i] = fmt.Errorf("%s:%w", name, e)
		}
		return Tenant{}, errors.Join(out...)
	}
	var t Tenant
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&t); err != nil {
		return Tenant{}, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return t, nil
}

// WithTenants is c (the file's config) with more tenants after the file's,
// each marked with its source, defaulted and validated together with the
// file's: a tenant id or domain claimed twice is reported as in one file.
// c is not changed.
func (c *Config) WithTenants(source string, extra []Tenant) (*Config, error) {
	n := *c
	n.Tenants = make([]Tenant, len(c.Tenants)+len(extra))
	copy(n.Tenants, c.Tenants)
	copy(n.Tenants[len(c.Tenants):], extra) // once: 100,000 tenants are 100 MB
	for i := len(c.Tenants); i < len(n.Tenants); i++ {
		t := &n.Tenants[i]
		t.Source = source
		t.Line = 0 // its lines are its document's, not the file's
	}
	for i := range n.Tenants {
		n.Tenants[i].clearTenantClaimDefaults() // decided again over every tenant
	}
	n.SetDefaults()
	if err := n.Validate(); err != nil {
		return nil, err
	}
	return &n, nil
}
