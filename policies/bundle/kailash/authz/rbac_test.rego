package kailash.authz_test

import data.kailash.authz

req(method, path, roles) := {
	"attributes": {"request": {"http": {"method": method}}},
	"parsed_path": path,
	"identity": {"roles": roles},
}

# treq is req for the route tenant t.
treq(t, method, path, roles) := object.union(req(method, path, roles), {"tenant": {"id": t}})

# --- roles (data.kailash.config.roles) and granted

test_admin_has_every_workflow_permission if {
	g := authz.granted with input as req("GET", [], ["admin"])
	g == {"workflow:create", "workflow:execute", "workflow:cancel_any", "workflow:delete", "workflow:read", "user:manage", "system:configure", "apikey:manage", "audit:view"}
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
	g := authz.granted with input as req("GET", [], ["root", "ADMIN", "viewer"])
	count(g) == 0
}

test_no_identity_grants_nothing if {
	g := authz.granted with input as {"attributes": {"request": {"http": {"method": "GET"}}}, "parsed_path": ["v1", "workflows"]}
	count(g) == 0
}

test_granted_uses_tenant_roles if {
	tenants := {"acme": {"roles": {
		"business_user": {"permissions": {"workflow:execute": false, "audit:view": true}},
		"auditor": {"permissions": {"audit:view": true}},
	}}}
	g := authz.granted with input as treq("acme", "GET", [], ["business_user", "auditor"])
		with data.kailash.config.tenants as tenants
	g == {"workflow:read", "report:view", "audit:view"}
}

# --- per-role limits

test_role_limits_are_data if {
	data.kailash.config.roles.business_user.limits.executions_per_hour > 0
	every rc in data.kailash.config.roles {
		rc.limits.max_workflows > 0
		rc.limits.executions_per_hour > 0
	}
}

test_limits_of_the_caller_take_the_largest_per_role if {
	l := authz.limits with input as req("GET", [], ["business_user", "data_scientist"])
	l == data.kailash.config.roles.data_scientist.limits
	l1 := authz.limits with input as req("GET", [], ["business_user"])
	l1 == data.kailash.config.roles.business_user.limits
}

test_limits_tenant_override if {
	tenants := {"acme": {"roles": {"business_user": {"limits": {"executions_per_hour": 7}}}}}
	l := authz.limits with input as treq("acme", "GET", [], ["business_user"])
		with data.kailash.config.tenants as tenants
	l.executions_per_hour == 7
	l.max_workflows == data.kailash.config.roles.business_user.limits.max_workflows
}

test_limits_without_roles_are_empty if {
	l := authz.limits with input as req("GET", [], [])
	l == {}
}

# --- required_permission, one test per route

test_execute_permission if {
	authz.required_permission == "workflow:execute" with input as req("POST", ["v1", "workflows", "etl", "executions"], [])
}

test_execute_needs_a_name if {
	not authz.required_permission with input as req("POST", ["v1", "workflows", "", "executions"], [])
}

test_cancel_permission if {
	authz.required_permission == "workflow:execute" with input as req("POST", ["v1", "workflows", "etl", "executions", "42", "cancel"], [])
	not authz.required_permission with input as req("POST", ["v1", "workflows", "etl", "executions", "", "cancel"], [])
	not authz.required_permission with input as req("POST", ["v1", "workflows", "", "executions", "42", "cancel"], [])
	not authz.required_permission with input as req("GET", ["v1", "workflows", "etl", "executions", "42", "cancel"], [])
}

test_create_permission if {
	authz.required_permission == "workflow:create" with input as req("POST", ["v1", "workflows"], [])
}

test_update_permission if {
	authz.required_permission == "workflow:create" with input as req("PUT", ["v1", "workflows", "etl"], [])
	not authz.required_permission with input as req("PUT", ["v1", "workflows", ""], [])
	not authz.required_permission with input as req("PUT", ["v1", "workflows"], [])
	not authz.required_permission with input as req("PUT", ["v1", "workflows", "etl", "executions"], [])
}

test_delete_permission if {
	authz.required_permission == "workflow:delete" with input as req("DELETE", ["v1", "workflows", "etl"], [])
}

test_delete_needs_a_name if {
	not authz.required_permission with input as req("DELETE", ["v1", "workflows"], [])
	not authz.required_permission with input as req("DELETE", ["v1", "workflows", ""], [])
}

test_read_permission if {
	every path in [
		["v1", "workflows"],
		["v1", "workflows", "etl"],
		["v1", "workflows", "etl", "executions"],
		["v1", "workflows", "etl", "executions", "42"],
		["v1", "workflows", "etl", "events"],
		["v1", "workflows", "etl", "events", "ws"],
		["v1", "events"],
		["v1", "events", "ws"],
	] {
		authz.required_permission == "workflow:read" with input as req("GET", path, [])
	}
}

test_read_needs_names if {
	every path in [
		["v1", "workflows", ""],
		["v1", "workflows", "", "executions"],
		["v1", "workflows", "etl", "executions", ""],
		["v1", "workflows", "", "executions", "42"],
		["v1", "workflows", "", "events"],
		["v1", "workflows", "", "events", "ws"],
	] {
		not authz.required_permission with input as req("GET", path, [])
	}
}

test_other_requests_need_no_defined_permission if {
	not authz.required_permission with input as req("GET", ["v1", "users"], ["admin"])
	not authz.required_permission with input as req("PATCH", ["v1", "workflows", "etl"], ["admin"])
	not authz.required_permission with input as req("POST", ["v1", "workflows", "etl"], ["admin"])
	not authz.required_permission with input as req("GET", ["v2", "workflows"], ["admin"])
	not authz.required_permission with input as req("GET", [""], ["admin"])
	not authz.required_permission with input as req("get", ["v1", "workflows"], ["admin"])
	not authz.required_permission with input as req("GET", ["v1", "workflows", "etl", "other"], ["admin"])
	not authz.required_permission with input as req("GET", ["v1", "events", "other"], ["admin"])
	not authz.required_permission with input as req("POST", ["v1", "events"], ["admin"])
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
		["business_user", "POST", ["v1", "workflows", "x", "executions", "1", "cancel"], true],
		["business_user", "GET", ["v1", "workflows", "x"], true],
		["business_user", "GET", ["v1", "events", "ws"], true],
		["business_user", "POST", ["v1", "workflows"], false],
		["business_user", "DELETE", ["v1", "workflows", "x"], false],
		["viewer", "GET", ["v1", "workflows"], false],
		["viewer", "POST", ["v1", "workflows", "hello", "executions"], false],
	] {
		got := authz.allow with input as req(c[1], c[2], [c[0]])
		got == c[3]
		r := authz.result with input as req(c[1], c[2], [c[0]])
		r.allowed == c[3]
	}
}

test_deny_without_roles if {
	not authz.allow with input as req("GET", ["v1", "workflows"], [])
}

test_deny_outside_api_even_for_admin if {
	not authz.allow with input as req("GET", ["metrics"], ["admin"])
}

test_tenant_roles_override if {
	tenants := {"acme": {"roles": {"business_user": {"permissions": {"workflow:execute": false}}, "viewer": {"permissions": {"workflow:read": true}}}}}
	path := ["v1", "workflows", "x", "executions"]
	not authz.allow with input as treq("acme", "POST", path, ["business_user"]) with data.kailash.config.tenants as tenants
	r := authz.result with input as treq("acme", "POST", path, ["business_user"]) with data.kailash.config.tenants as tenants
	r.allowed == false
	authz.allow with input as treq("acme", "GET", ["v1", "workflows"], ["viewer"]) with data.kailash.config.tenants as tenants

	# other tenants keep the shipped roles
	authz.allow with input as treq("globex", "POST", path, ["business_user"]) with data.kailash.config.tenants as tenants
	not authz.allow with input as treq("globex", "GET", ["v1", "workflows"], ["viewer"]) with data.kailash.config.tenants as tenants
}

# --- reason and result

test_result_allowed if {
	r := authz.result with input as req("POST", ["v1", "workflows", "etl", "executions"], ["business_user"])
	r == {"allowed": true, "headers": {"x-kailash-permission": "workflow:execute"}, "dynamic_metadata": {"kailash_role_limit": {"requests_per_unit": 500, "unit": "HOUR"}}}
	authz.reason == "allowed" with input as req("POST", ["v1", "workflows", "etl", "executions"], ["business_user"])
}

test_result_allowed_for_a_tenant_without_data if {
	r := authz.result with input as treq("acme", "POST", ["v1", "workflows", "etl", "executions"], ["business_user"])
	r == {"allowed": true, "headers": {"x-kailash-permission": "workflow:execute"}, "dynamic_metadata": {"kailash_role_limit": {"requests_per_unit": 500, "unit": "HOUR"}}}
	r2 := authz.result with input as treq("acme", "POST", ["v1", "workflows"], ["business_user"])
	r2.allowed == false
}

test_result_allowed_for_a_tenant_with_data if {
	tenants := {"acme": {"time_zone": "UTC"}}
	r := authz.result with input as treq("acme", "POST", ["v1", "workflows", "etl", "executions"], ["business_user"])
		with data.kailash.config.tenants as tenants
	r == {"allowed": true, "headers": {"x-kailash-permission": "workflow:execute"}, "dynamic_metadata": {"kailash_role_limit": {"requests_per_unit": 500, "unit": "HOUR"}}}
}

# The largest executions_per_hour of the caller's roles, only on execution
# starts (a cancel or a read carries no role limit).
test_result_role_limit if {
	r := authz.result with input as req("POST", ["v1", "workflows", "etl", "executions"], ["business_user", "data_scientist"])
	r.dynamic_metadata == {"kailash_role_limit": {"requests_per_unit": 2000, "unit": "HOUR"}}
	c := authz.result with input as req("POST", ["v1", "workflows", "etl", "executions", "e1", "cancel"], ["business_user"])
	c.dynamic_metadata == {}
	g := authz.result with input as req("GET", ["v1", "workflows"], ["business_user"])
	g.dynamic_metadata == {}
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

# --- the tenant admin API (tenant_store)

test_admin_tenants_api_needs_system_configure if {
	authz.required_permission == "system:configure" with input as req("POST", ["v1", "admin", "tenants"], ["admin"])
	authz.required_permission == "system:configure" with input as req("PUT", ["v1", "admin", "tenants", "acme"], ["admin"])
	authz.required_permission == "system:configure" with input as req("POST", ["v1", "admin", "tenants", "acme", "suspend"], [])
	authz.allow with input as req("DELETE", ["v1", "admin", "tenants", "acme"], ["admin"])
	not authz.allow with input as req("GET", ["v1", "admin", "tenants"], ["data_scientist", "business_user"])
	not authz.required_permission with input as req("GET", ["v1", "admin", "explain", "x"], ["admin"])
}

# --- the API keys admin API (/v1/admin/tenants/{tenant}/api-keys)

# kreq is a request of an identity of tenant idt on the route of tenant t
# (admin: the admin tenant's domains).
kreq(t, idt, admin, method, path, roles) := {
	"attributes": {"request": {"http": {"method": method}}},
	"parsed_path": path,
	"identity": {"tenant": idt, "roles": roles},
	"tenant": {"id": t, "admin": admin},
}

test_own_api_keys_need_apikey_manage if {
	authz.required_permission == "apikey:manage" with input as kreq("acme", "acme", false, "POST", ["v1", "admin", "tenants", "acme", "api-keys"], ["admin"])
	authz.required_permission == "apikey:manage" with input as kreq("acme", "acme", false, "POST", ["v1", "admin", "tenants", "acme", "api-keys", "k1", "rotate"], ["admin"])
	authz.allow with input as kreq("acme", "acme", false, "DELETE", ["v1", "admin", "tenants", "acme", "api-keys", "k1"], ["admin"])
	not authz.allow with input as kreq("acme", "acme", false, "GET", ["v1", "admin", "tenants", "acme", "api-keys"], ["business_user", "data_scientist"])
	r := authz.result with input as kreq("acme", "acme", false, "GET", ["v1", "admin", "tenants", "acme", "api-keys"], ["business_user"])
	contains(r.body, "missing permission apikey:manage")
}

test_other_tenants_api_keys_need_the_admin_tenant if {
	# On the admin tenant's domains: system:configure over any tenant.
	authz.required_permission == "system:configure" with input as kreq("ops", "ops", true, "POST", ["v1", "admin", "tenants", "acme", "api-keys"], ["admin"])
	authz.allow with input as kreq("ops", "ops", true, "GET", ["v1", "admin", "tenants", "acme", "api-keys"], ["admin"])
	not authz.allow with input as kreq("ops", "ops", true, "GET", ["v1", "admin", "tenants", "acme", "api-keys"], ["business_user"])

	# On another tenant's domains, even its admin is refused, naming why.
	not authz.required_permission with input as kreq("globex", "globex", false, "GET", ["v1", "admin", "tenants", "acme", "api-keys"], ["admin"])
	r := authz.result with input as kreq("globex", "globex", false, "GET", ["v1", "admin", "tenants", "acme", "api-keys"], ["admin"])
	r.allowed == false
	r.http_status == 403
	contains(r.body, "admin tenant's domains only")

	# An identity of another tenant than the route's gets nothing.
	not authz.required_permission with input as kreq("acme", "globex", false, "GET", ["v1", "admin", "tenants", "acme", "api-keys"], ["admin"])
}

test_tenant_api_is_not_api_keys if {
	authz.required_permission == "system:configure" with input as kreq("ops", "ops", true, "GET", ["v1", "admin", "tenants", "acme"], ["admin"])
	authz.required_permission == "system:configure" with input as kreq("ops", "ops", true, "POST", ["v1", "admin", "tenants", "acme", "suspend"], ["admin"])
}
