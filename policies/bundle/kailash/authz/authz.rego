# The decision: data.kailash.authz.result, an opa-envoy-plugin style object
# (data.kailash.authz.allow is its boolean form).
package kailash.authz

import data.kailash.config

default allow := false

allow if {
	rbac_allowed
	not abac_denied
}

# abac_denied: an attribute rule denies. All of them are configured in the
# tenant's data, so a tenant without an entry skips them.
abac_denied if {
	tenant_config
	some _ in deny
}

# reason explains a denial (the 403 body); "allowed" otherwise.
default reason := "request is not part of the runner API"

reason := "allowed" if allow

reason := sprintf("missing permission %s", [required_permission]) if not rbac_allowed

reason := "the API keys of another tenant are managed on the admin tenant's domains only" if apikeys_of_another_tenant

reason := concat("; ", sort(deny)) if {
	rbac_allowed
	abac_denied
}

# result is allow's answer as an object. Its first body is the common case
# written out for speed (each rule OPA enters costs microseconds): a route
# tenant without an entry in data.kailash.config.tenants, so no ABAC and the
# shipped roles. The second is the general case (and input without a
# tenant).
result := {
	"allowed": true,
	"headers": {"x-kailash-permission": perm},
	"dynamic_metadata": role_limit_metadata,
} if {
	perm := required_permission
	not config.tenants[input.tenant.id]
	some role in input.identity.roles
	config.roles[role].permissions[perm] == true
} else := {
	"allowed": true,
	"headers": {"x-kailash-permission": required_permission},
	"dynamic_metadata": role_limit_metadata,
} if {
	allow
} else := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": json.marshal({"error": "forbidden", "reason": reason}),
}

# role_limit_metadata hands the caller's executions_per_hour (the largest of
# its roles', data.kailash.config.roles.<role>.limits) to the rate limiter
# when the request starts an execution: the control plane's role-limit
# descriptor takes its limit from this metadata (Envoy's limit override),
# so the rate-limit service counts the caller's executions per hour against
# what the bundle says. Other requests carry none and count nothing.
role_limit_metadata := {"kailash_role_limit": {"requests_per_unit": limits.executions_per_hour, "unit": "HOUR"}} if {
	starts_execution
	limits.executions_per_hour
} else := {}

starts_execution if {
	input.attributes.request.http.method == "POST"
	input.parsed_path = ["v1", "workflows", name, "executions"]
	name != ""
}
