# Package kailash.authz is the shipped decision for the workflow runner API:
# role-based access control keyed by the permission each request needs.
#
# Input (see policies/README.md): input.identity.roles,
# input.attributes.request.http.method and input.parsed_path.
#
# Decision: data.kailash.authz.result, an opa-envoy-plugin style object.
package kailash.authz

# role_permissions grants each role its permissions.
role_permissions := {
	"admin": {
		"workflow:create", "workflow:execute", "workflow:delete", "workflow:read",
		"user:manage", "system:configure", "audit:view",
	},
	"data_scientist": {
		"workflow:create", "workflow:execute", "workflow:read",
		"data:read", "model:train",
	},
	"business_user": {"workflow:execute", "workflow:read", "report:view"},
}

method := input.attributes.request.http.method

path := input.parsed_path

# required_permission is the permission a request needs; undefined when the
# request is not part of the runner API (and so always denied). The rules are
# mutually exclusive by method.
required_permission := "workflow:execute" if {
	method == "POST"
	path = ["v1", "workflows", name, "executions"]
	name != ""
}

required_permission := "workflow:create" if {
	method == "POST"
	path == ["v1", "workflows"]
}

required_permission := "workflow:delete" if {
	method == "DELETE"
	path = ["v1", "workflows", name]
	name != ""
}

required_permission := "workflow:read" if {
	method == "GET"
	count(path) >= 2
	path[0] == "v1"
	path[1] == "workflows"
}

# granted is every permission the caller's roles give.
granted contains perm if {
	some role in input.identity.roles
	some perm in role_permissions[role]
}

default allow := false

allow if {
	perm := required_permission
	some role in input.identity.roles
	perm in role_permissions[role]
}

default reason := "request is not part of the runner API"

reason := "allowed" if allow

reason := sprintf("missing permission %s", [required_permission]) if not allow

result := {
	"allowed": true,
	"headers": {"x-kailash-permission": required_permission},
} if allow

result := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": json.marshal({"error": "forbidden", "reason": reason}),
} if not allow
