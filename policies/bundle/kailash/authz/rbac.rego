# Package kailash.authz is the shipped decision for the workflow runner API:
# role-based access control (this file) plus attribute-based rules
# (abac.rego), combined in authz.rego.
#
# Data (config/data.json, mounted at data.kailash.config): roles with their
# permissions and limits, classification levels, country networks and
# per-tenant overrides. See docs/policies.md, "The shipped bundle".
#
# Every rule that looks at the request reads input.* directly (not through
# a helper rule) so that OPA's rule index selects the matching route.
package kailash.authz

import data.kailash.config

# required_permission is the permission a request needs; undefined when the
# request is not a runner API route (and so always denied). One rule per
# route of workflow/server.go; a {name} or {id} segment must not be empty.
required_permission := "workflow:create" if {
	input.attributes.request.http.method == "POST"
	input.parsed_path == ["v1", "workflows"]
}

# Replacing a workflow's definition (PUT, a new version) is writing a
# definition, as creating one is.
required_permission := "workflow:create" if {
	input.attributes.request.http.method == "PUT"
	input.parsed_path = ["v1", "workflows", name]
	name != ""
}

required_permission := "workflow:execute" if {
	input.attributes.request.http.method == "POST"
	input.parsed_path = ["v1", "workflows", name, "executions"]
	name != ""
}

required_permission := "workflow:execute" if {
	input.attributes.request.http.method == "POST"
	input.parsed_path = ["v1", "workflows", name, "executions", id, "cancel"]
	name != ""
	id != ""
}

required_permission := "workflow:delete" if {
	input.attributes.request.http.method == "DELETE"
	input.parsed_path = ["v1", "workflows", name]
	name != ""
}

required_permission := "workflow:read" if {
	input.attributes.request.http.method == "GET"
	input.parsed_path == ["v1", "workflows"]
}

required_permission := "workflow:read" if {
	input.attributes.request.http.method == "GET"
	input.parsed_path = ["v1", "workflows", name]
	name != ""
}

required_permission := "workflow:read" if {
	input.attributes.request.http.method == "GET"
	input.parsed_path = ["v1", "workflows", name, "executions"]
	name != ""
}

required_permission := "workflow:read" if {
	input.attributes.request.http.method == "GET"
	input.parsed_path = ["v1", "workflows", name, "executions", id]
	name != ""
	id != ""
}

required_permission := "workflow:read" if {
	input.attributes.request.http.method == "GET"
	input.parsed_path = ["v1", "workflows", name, "events"]
	name != ""
}

required_permission := "workflow:read" if {
	input.attributes.request.http.method == "GET"
	input.parsed_path = ["v1", "workflows", name, "events", "ws"]
	name != ""
}

required_permission := "workflow:read" if {
	input.attributes.request.http.method == "GET"
	input.parsed_path == ["v1", "events"]
}

required_permission := "workflow:read" if {
	input.attributes.request.http.method == "GET"
	input.parsed_path == ["v1", "events", "ws"]
}

# The tenant admin API (tenant_store: /v1/admin/tenants and below, every
# method), which Envoy routes on the admin tenant's domains only; a
# tenant's API keys below it are the rules after this one.
required_permission := "system:configure" if {
	input.parsed_path[0] == "v1"
	input.parsed_path[1] == "admin"
	input.parsed_path[2] == "tenants"
	not input.parsed_path[4] == "api-keys"
}

# A tenant's API keys (/v1/admin/tenants/{tenant}/api-keys and below, every
# method). The route tenant's own keys need apikey:manage; another
# tenant's need system:configure and are reachable only on the admin
# tenant's domains (input.tenant.admin: tenant_store.admin_tenant). On any
# other tenant's domains another tenant's keys need a permission no role
# can hold, so they are refused (see reason).
required_permission := "apikey:manage" if {
	input.parsed_path[0] == "v1"
	input.parsed_path[1] == "admin"
	input.parsed_path[2] == "tenants"
	input.parsed_path[4] == "api-keys"
	input.parsed_path[3] == input.tenant.id
	input.identity.tenant == input.tenant.id
}

required_permission := "system:configure" if {
	input.parsed_path[0] == "v1"
	input.parsed_path[1] == "admin"
	input.parsed_path[2] == "tenants"
	input.parsed_path[4] == "api-keys"
	input.parsed_path[3] != input.tenant.id
	input.tenant.admin == true
}

# apikeys_of_another_tenant: a request for another tenant's API keys on a
# domain that is not the admin tenant's.
apikeys_of_another_tenant if {
	input.parsed_path[0] == "v1"
	input.parsed_path[1] == "admin"
	input.parsed_path[2] == "tenants"
	input.parsed_path[4] == "api-keys"
	input.parsed_path[3] != input.tenant.id
	not input.tenant.admin
}

# tenant_config is the route tenant's overrides (data.kailash.config.tenants);
# undefined for a tenant without any.
tenant_config := config.tenants[input.tenant.id]

# roles is the role table in force for the route's tenant: the shipped one
# (data.kailash.config.roles) deep-merged with the tenant's "roles", which
# can add roles, add or revoke ("perm": false) permissions and change
# limits.
roles := object.union(config.roles, tenant_config.roles) if {
	tenant_config.roles
} else := config.roles

# rbac_allowed: one of the caller's roles grants the route's permission.
rbac_allowed if {
	perm := required_permission
	some role in input.identity.roles
	roles[role].permissions[perm] == true
}

# granted is every permission the caller's roles give (the runner's
# permission_check evaluates data.kailash.authz.granted).
granted contains perm if {
	some role in input.identity.roles
	some perm, true in roles[role].permissions
}

# limits are the caller's per-role limits, for the rate limiter: for each
# limit, the largest value any of the caller's roles sets (roles add up, as
# permissions do). Undefined fields are not limited by role.
limits[name] := max({n | some role in input.identity.roles; n := roles[role].limits[name]}) if {
	some role in input.identity.roles
	some name, _ in roles[role].limits
}
