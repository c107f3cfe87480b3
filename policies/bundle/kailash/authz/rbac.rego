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
# method), which Envoy routes on the admin tenant's domains only.
required_permission := "system:configure" if {
	input.parsed_path[0] == "v1"
	input.parsed_path[1] == "admin"
	input.parsed_path[2] == "tenants"
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
