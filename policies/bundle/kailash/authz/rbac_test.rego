package kailash.authz_test

import data.kailash.authz

req(method, path, roles) := {
	"attributes": {"request": {"http": {"method": method}}},
	"parsed_path": path,
	"identity": {"roles": roles},
}

# --- role_permissions and granted

test_admin_has_every_workflow_permission if {
	g := authz.granted with input as req("GET", [], ["admin"])
	every p in {"workflow:create", "workflow:execute", "workflow:delete", "workflow:read", "user:manage", "system:configure", "audit:view"} {
		p in g
	}
	count(g) == 7
}

test_data_scientist_permissions if {
	g := authz.granted with input as req("GET", [], ["data_scientist"])
	g == {"workflow:create", "workflow:execute", "workflow:read", "data:read", "model:train"}
}

test_business_user_permissions if {
	g := authz.granted with input as req("GET", [], ["business_user"])
	g == {"workflow:execute", "workflow:read", "report:view"}
}

test_roles_union if {
	g := authz.granted with input as req("GET", [], ["business_user", "data_scientist"])
	"report:view" in g
	"model:train" in g
}

test_unknown_role_grants_nothing if {
	g := authz.granted with input as req("GET", [], ["root", "ADMIN"])
	count(g) == 0
}

test_no_identity_grants_nothing if {
	g := authz.granted with input as {"attributes": {"request": {"http": {"method": "GET"}}}, "parsed_path": ["v1", "workflows"]}
	count(g) == 0
}

# --- required_permission, one test per rule

test_execute_permission if {
	authz.required_permission == "workflow:execute" with input as req("POST", ["v1", "workflows", "etl", "executions"], [])
}

test_execute_needs_a_name if {
	not authz.required_permission with input as req("POST", ["v1", "workflows", "", "executions"], [])
}

test_create_permission if {
	authz.required_permission == "workflow:create" with input as req("POST", ["v1", "workflows"], [])
}

test_delete_permission if {
	authz.required_permission == "workflow:delete" with input as req("DELETE", ["v1", "workflows", "etl"], [])
}

test_delete_needs_a_name if {
	not authz.required_permission with input as req("DELETE", ["v1", "workflows"], [])
	not authz.required_permission with input as req("DELETE", ["v1", "workflows", ""], [])
}

test_read_permission if {
	authz.required_permission == "workflow:read" with input as req("GET", ["v1", "workflows"], [])
	authz.required_permission == "workflow:read" with input as req("GET", ["v1", "workflows", "etl"], [])
	authz.required_permission == "workflow:read" with input as req("GET", ["v1", "workflows", "etl", "executions", "42"], [])
}

test_other_requests_need_no_defined_permission if {
	not authz.required_permission with input as req("GET", ["v1", "users"], ["admin"])
	not authz.required_permission with input as req("PUT", ["v1", "workflows", "etl"], ["admin"])
	not authz.required_permission with input as req("POST", ["v1", "workflows", "etl"], ["admin"])
	not authz.required_permission with input as req("GET", ["v2", "workflows"], ["admin"])
	not authz.required_permission with input as req("GET", [""], ["admin"])
	not authz.required_permission with input as req("get", ["v1", "workflows"], ["admin"])
}

# --- allow

test_allow_matrix if {
	every c in [
		["admin", "POST", ["v1", "workflows"], true],
		["admin", "DELETE", ["v1", "workflows", "x"], true],
		["data_scientist", "POST", ["v1", "workflows"], true],
		["data_scientist", "DELETE", ["v1", "workflows", "x"], false],
		["data_scientist", "POST", ["v1", "workflows", "x", "executions"], true],
		["business_user", "POST", ["v1", "workflows", "x", "executions"], true],
		["business_user", "GET", ["v1", "workflows", "x"], true],
		["business_user", "POST", ["v1", "workflows"], false],
		["business_user", "DELETE", ["v1", "workflows", "x"], false],
	] {
		got := authz.allow with input as req(c[1], c[2], [c[0]])
		got == c[3]
	}
}

test_deny_without_roles if {
	not authz.allow with input as req("GET", ["v1", "workflows"], [])
}

test_deny_outside_api_even_for_admin if {
	not authz.allow with input as req("GET", ["metrics"], ["admin"])
}

# --- reason and result

test_result_allowed if {
	r := authz.result with input as req("POST", ["v1", "workflows", "etl", "executions"], ["business_user"])
	r == {"allowed": true, "headers": {"x-kailash-permission": "workflow:execute"}}
	authz.reason == "allowed" with input as req("POST", ["v1", "workflows", "etl", "executions"], ["business_user"])
}

test_result_denied_missing_permission if {
	r := authz.result with input as req("DELETE", ["v1", "workflows", "etl"], ["business_user"])
	r.allowed == false
	r.http_status == 403
	r.headers["content-type"] == "application/json"
	json.unmarshal(r.body) == {"error": "forbidden", "reason": "missing permission workflow:delete"}
}

test_result_denied_outside_api if {
	r := authz.result with input as req("GET", ["admin"], ["admin"])
	r.allowed == false
	json.unmarshal(r.body).reason == "request is not part of the runner API"
}

test_result_is_always_defined if {
	r := authz.result with input as {}
	r.allowed == false
}
