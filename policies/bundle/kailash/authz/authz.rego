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
} if {
	perm := required_permission
	not config.tenants[input.tenant.id]
	some role in input.identity.roles
	config.roles[role].permissions[perm] == true
} else := {
	"allowed": true,
	"headers": {"x-kailash-permission": required_permission},
} if {
	allow
} else := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": json.marshal({"error": "forbidden", "reason": reason}),
}
