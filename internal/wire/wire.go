// Package wire is the contract between the parts of kailash that meet only
// through Envoy: the control plane (xds/translate) that writes Envoy's
// config, the authz server (extauthz and its subpackages) that answers
// Envoy's checks and serves the login endpoints, the rate-limit service,
// and the runner (workflow) that receives the requests Envoy lets through.
// Each string both sides must agree on is defined here, once.
//
// It is a leaf: it imports nothing, so every part may import it.
package wire

// Headers on the upstream request. Only kailash sets them: Envoy removes
// every client-sent header starting with HeaderPrefix before anything reads
// it, and ext_authz sets them on allow.
const (
	// HeaderPrefix starts every kailash header (matched in any case).
	HeaderPrefix = "x-kailash-"
	// HeaderTenant is the tenant id: set by ext_authz on allow, and by
	// Envoy from the virtual host on the login route (AuthPrefix),
	// overwriting whatever the client sent.
	HeaderTenant = "x-kailash-tenant"
	// HeaderUser is the caller's subject (ext_authz, on allow).
	HeaderUser = "x-kailash-user"
	// HeaderRoles is the caller's roles joined by "," (ext_authz, on
	// allow). Quotas never read it: they read MetadataHasRole.
	HeaderRoles = "x-kailash-roles"
	// HeaderIdentity is the short-lived identity token ext_authz signs for
	// the runner; only routes to the runner forward it.
	HeaderIdentity = "x-kailash-identity"
	// HeaderDecisionID names the authz decision, on the upstream request
	// and on every denial.
	HeaderDecisionID = "x-kailash-decision-id"
	// HeaderClientAddress is the client's address as Envoy decided it
	// (envoy.listener.xff_num_trusted_hops, trusted_proxies, the PROXY
	// protocol), set by a filter before ext_authz; ext_authz puts it in the
	// policy input's attributes.source (Envoy sends the connection's peer
	// there). A client's own copy never gets this far (HeaderPrefix).
	HeaderClientAddress = "x-kailash-client-address"
)

// ContextTenant is the ext_authz context extension the control plane sets
// on each tenant's virtual host to the tenant id; a Check without it came
// through no tenant's route.
const ContextTenant = "tenant"

// UnknownHostBody is the 404 body for a request no tenant serves, whether
// Envoy answers it (the catch-all virtual host, no scope) or the authz
// server does (a Check without ContextTenant).
const UnknownHostBody = "unknown host\n"

// AuthPrefix is the path prefix of the login endpoints (login, refresh,
// logout, JWKS, SAML): Envoy routes it to the authz server's HTTP address
// without a check, and the refresh cookie is scoped to it.
const AuthPrefix = "/auth/"

// AdminTenantsPath is the tenant admin API (tenant_store): routed by
// Envoy, on the admin tenant's domains only, to the authz server's HTTP
// port with ext_authz on, so the policy decides every call.
const AdminTenantsPath = "/v1/admin/tenants"

// AdminAPIKeysSegment names a tenant's API keys below AdminTenantsPath:
// AdminAPIKeysPath(tenant) and its /{id}, /{id}/rotate. Envoy routes it to
// the authz server's HTTP port with ext_authz on, on the admin tenant's
// domains for every tenant and on each tenant's own domains for its own
// keys; the policy reads the tenant from the path.
const AdminAPIKeysSegment = "api-keys"

// AdminAPIKeysPath is the API keys of tenant.
func AdminAPIKeysPath(tenant string) string {
	return AdminTenantsPath + "/" + tenant + "/" + AdminAPIKeysSegment
}

// Dynamic metadata ext_authz sets on allow, in MetadataNamespace, for the
// rate-limit filter and access logs.
const (
	// MetadataNamespace is ext_authz's dynamic metadata namespace (the
	// filter's name).
	MetadataNamespace = "envoy.filters.http.ext_authz"
	// MetadataDecisionID is the decision id.
	MetadataDecisionID = "decision_id"
	// MetadataTenant is the tenant id.
	MetadataTenant = "tenant"
	// MetadataRoleLimit is set by the policy (not by ext_authz) on
	// execution starts: {"requests_per_unit": N, "unit": "HOUR"}, the
	// caller's executions_per_hour.
	MetadataRoleLimit = "kailash_role_limit"
	// MetadataUser is the caller's subject; the DescUser descriptor reads it.
	MetadataUser = "user"
	// MetadataRoles is the caller's roles, a list.
	MetadataRoles = "roles"
	// MetadataHasRole holds the caller's roles as an object {role: role}:
	// Envoy's metadata rate-limit action reads only strings, by path, so a
	// role quota for R reads has_role.R, present exactly when the caller
	// holds R.
	MetadataHasRole = "has_role"
)

// Rate-limit contract between the control plane (which makes Envoy build
// descriptors) and the rate-limit service (which matches them).
const (
	RateLimitDomain = "kailash"
	// Descriptor keys.
	DescTenant = "tenant" // the tenant id, set by the control plane
	DescQuota  = "quota"  // which tenant quota ("day")
	DescUser   = "user"   // from ext_authz dynamic metadata (MetadataUser)
	DescRole   = "role"   // a role the caller holds (from MetadataHasRole)
	// DescRemoteAddress is the client's IP as Envoy saw the connection
	// (Envoy's remote_address action), for the login quota.
	DescRemoteAddress = "remote_address"
	// QuotaAuth is the DescQuota value of the login quota.
	QuotaAuth = "auth"
	// QuotaRoleHour is the DescQuota value of the per-role execution limit
	// the policy sets (bundle data roles.<role>.limits.executions_per_hour):
	// its descriptor carries the limit as Envoy's override, from
	// MetadataRoleLimit.
	QuotaRoleHour = "role_hour"
	// DescWindow is the role limit's unit (from MetadataRoleLimit): present
	// only when the policy set a limit, so without one no descriptor is sent.
	DescWindow = "window"
	// DescDecisionID is a descriptor of its own (one entry: ext_authz's
	// decision id) that counts nothing: it tells the rate-limit service
	// which decision the call's other descriptors belong to, so that an
	// over-limit answer can be explained. envoyproxy/ratelimit, knowing no
	// such key, answers it OK.
	DescDecisionID = "kailash_decision_id"
)

// Policy input: the authz server and the runner build input documents for
// OPA of one schema (policies/README.md), versioned as
// input.version[PolicyInputKey]. It grows only by adding fields.
const (
	PolicyInputKey     = "kailash"
	PolicyInputVersion = "kailash/v1"
)

// Claims of the identity token (HeaderIdentity) besides the registered
// JWT claims (iss, sub, aud, iat, nbf, exp): the authz server's minter
// writes them, the runner reads them.
const (
	ClaimTenant     = "tenant"     // the tenant id, a string
	ClaimRoles      = "roles"      // the caller's roles, a list of strings
	ClaimGroups     = "groups"     // the caller's groups, a list (left out when none)
	ClaimMethod     = "method"     // how the caller authenticated: jwt, ldap, saml (left out when unknown)
	ClaimAttributes = "attributes" // the caller's other claims, an object (left out when none)
)
