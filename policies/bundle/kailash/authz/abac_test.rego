package kailash.authz_test

import data.kailash.authz

# areq is a request of tenant acme by a business_user with the given
# identity attributes.
areq(method, path, attrs) := {
	"attributes": {
		"request": {"http": {"method": method, "headers": {"x-country": "de"}}},
		"source": {"address": {"socketAddress": {"address": "192.0.2.10", "portValue": 4000}}},
	},
	"parsed_path": path,
	"identity": {"roles": ["business_user", "data_scientist"], "attributes": attrs},
	"tenant": {"id": "acme"},
}

labelled := {"acme": {"workflows": {
	"payroll": {"department": "hr", "classification": "confidential"},
	"hr-only": {"department": "hr"},
	"secret-report": {"classification": "secret"},
	"typo": {"classification": "top-secret"},
}}}

run(name) := ["v1", "workflows", name, "executions"]

finance := {"department": "finance", "clearance": "secret"}

hr_internal := {"department": "hr", "clearance": "internal"}

# --- which resource

test_workflow_name_from_path_and_create_body if {
	authz.workflow_name == "etl" with input as areq("GET", ["v1", "workflows", "etl", "events"], {})
	authz.workflow_name == "etl" with input as object.union(areq("POST", ["v1", "workflows"], {}), {"parsed_body": {"name": "etl"}})
	not authz.workflow_name with input as object.union(areq("POST", ["v1", "workflows"], {}), {"parsed_body": {"name": 7}})
	not authz.workflow_name with input as areq("GET", ["v1", "events"], {})
}

test_resource_labels_come_from_tenant_data if {
	authz.resource == {"department": "hr"} with input as areq("GET", ["v1", "workflows", "hr-only"], {}) with data.kailash.config.tenants as labelled
	not authz.resource with input as areq("GET", ["v1", "workflows", "etl"], {}) with data.kailash.config.tenants as labelled
	not authz.resource with input as object.union(areq("GET", ["v1", "workflows", "hr-only"], {}), {"tenant": {"id": "globex"}}) with data.kailash.config.tenants as labelled
}

test_unlabelled_resource_has_no_abac if {
	authz.allow with input as areq("POST", run("etl"), {}) with data.kailash.config.tenants as labelled
	count(authz.deny) == 0 with input as areq("POST", run("etl"), {}) with data.kailash.config.tenants as labelled
}

# --- the event streams' decision (runner.event_decision)

events_of(name) := ["v1", "workflows", name, "events"]

test_resource_allowed_is_the_labels_decision if {
	authz.resource_allowed with input as areq("GET", events_of("etl"), {}) with data.kailash.config.tenants as labelled
	authz.resource_allowed with input as areq("GET", events_of("payroll"), {"department": "hr", "clearance": "confidential"}) with data.kailash.config.tenants as labelled
	not authz.resource_allowed with input as areq("GET", events_of("payroll"), hr_internal) with data.kailash.config.tenants as labelled
	not authz.resource_allowed with input as areq("GET", events_of("hr-only"), finance) with data.kailash.config.tenants as labelled
	not authz.resource_allowed with input as areq("GET", events_of("typo"), finance) with data.kailash.config.tenants as labelled
	authz.resource_allowed with input as areq("GET", events_of("payroll"), {})
}

# --- department

test_department_must_match if {
	authz.allow with input as areq("POST", run("hr-only"), {"department": "hr"}) with data.kailash.config.tenants as labelled
	not authz.allow with input as areq("POST", run("hr-only"), finance) with data.kailash.config.tenants as labelled
	not authz.allow with input as areq("POST", run("hr-only"), {}) with data.kailash.config.tenants as labelled
	d := authz.deny with input as areq("POST", run("hr-only"), finance) with data.kailash.config.tenants as labelled
	d == {`department "finance" may not access a resource of department "hr"`}
}

test_department_applies_to_creating_a_labelled_workflow if {
	inp := object.union(areq("POST", ["v1", "workflows"], finance), {"parsed_body": {"name": "payroll"}})
	not authz.allow with input as inp with data.kailash.config.tenants as labelled
	ok := object.union(areq("POST", ["v1", "workflows"], {"department": "hr", "clearance": "secret"}), {"parsed_body": {"name": "payroll"}})
	authz.allow with input as ok with data.kailash.config.tenants as labelled
}

test_creating_without_a_body_is_denied_where_workflows_are_labelled if {
	create := areq("POST", ["v1", "workflows"], {"department": "hr", "clearance": "secret"})
	d := authz.deny with input as create with data.kailash.config.tenants as labelled
	d == {"the workflow being created cannot be identified (no request body)"}
	not authz.allow with input as object.union(create, {"parsed_body": {"name": 7}}) with data.kailash.config.tenants as labelled

	# a tenant without labels does not need the body
	authz.allow with input as create with data.kailash.config.tenants as {"acme": {"time_zone": "UTC"}}
	authz.allow with input as create
}

# --- clearance >= classification

test_clearance_levels if {
	authz.clearance_level == 0 with input as areq("GET", [], {})
	authz.clearance_level == 0 with input as areq("GET", [], {"clearance": "unknown"})
	authz.clearance_level == 1 with input as areq("GET", [], {"clearance": "internal"})
	authz.clearance_level == 2 with input as areq("GET", [], {"clearance": "confidential"})
	authz.clearance_level == 3 with input as areq("GET", [], {"clearance": "secret"})
	authz.clearance_level == 3 with input as areq("GET", [], {"clearance": 3})
	authz.clearance_level == 0 with input as {}
}

test_clearance_must_reach_classification if {
	authz.allow with input as areq("GET", ["v1", "workflows", "secret-report"], {"clearance": "secret"}) with data.kailash.config.tenants as labelled
	authz.allow with input as areq("GET", ["v1", "workflows", "secret-report"], {"clearance": 3}) with data.kailash.config.tenants as labelled
	not authz.allow with input as areq("GET", ["v1", "workflows", "secret-report"], {"clearance": "confidential"}) with data.kailash.config.tenants as labelled
	not authz.allow with input as areq("GET", ["v1", "workflows", "secret-report"], {}) with data.kailash.config.tenants as labelled
	d := authz.deny with input as areq("GET", ["v1", "workflows", "secret-report"], {"clearance": 2}) with data.kailash.config.tenants as labelled
	d == {"clearance too low for a secret resource"}
}

test_department_and_clearance_both_apply if {
	authz.allow with input as areq("POST", run("payroll"), {"department": "hr", "clearance": "confidential"}) with data.kailash.config.tenants as labelled
	d := authz.deny with input as areq("POST", run("payroll"), hr_internal) with data.kailash.config.tenants as labelled
	d == {"clearance too low for a confidential resource"}
	d2 := authz.deny with input as areq("POST", run("payroll"), {"department": "it"}) with data.kailash.config.tenants as labelled
	count(d2) == 2
}

test_unknown_classification_denies if {
	d := authz.deny with input as areq("GET", ["v1", "workflows", "typo"], {"clearance": "secret"}) with data.kailash.config.tenants as labelled
	d == {`resource classification "top-secret" is unknown`}
}

test_abac_denial_is_a_403_with_the_reasons if {
	r := authz.result with input as areq("POST", run("payroll"), {"department": "it", "clearance": "public"}) with data.kailash.config.tenants as labelled
	r.allowed == false
	r.http_status == 403
	json.unmarshal(r.body).reason == `clearance too low for a confidential resource; department "it" may not access a resource of department "hr"`
	authz.reason == json.unmarshal(r.body).reason with input as areq("POST", run("payroll"), {"department": "it", "clearance": "public"}) with data.kailash.config.tenants as labelled
}

test_abac_never_grants if {
	not authz.allow with input as object.union(areq("DELETE", ["v1", "workflows", "hr-only"], {"department": "hr"}), {"identity": {"roles": ["business_user"]}}) with data.kailash.config.tenants as labelled
}

# --- business hours (opt-in per tenant; times are UTC unless said)

monday_10 := 1894010400000000000 # 2030-01-07 10:00 UTC, a Monday

monday_13 := 1894021200000000000 # 08:00 in New York

monday_15 := 1894028400000000000 # 10:00 in New York

monday_1659 := 1894035599000000000

monday_17 := 1894035600000000000

saturday_10 := 1893837600000000000

hours_utc := {"acme": {"business_hours": {}}}

hours_ny := {"acme": {"time_zone": "America/New_York", "business_hours": {}}}

test_business_hours_off_by_default if {
	authz.allow with input as areq("POST", run("etl"), {}) with time.now_ns as saturday_10
	authz.allow with input as areq("POST", run("etl"), {}) with time.now_ns as saturday_10 with data.kailash.config.tenants as labelled
}

test_business_hours_in_utc if {
	authz.allow with input as areq("POST", run("etl"), {}) with time.now_ns as monday_10 with data.kailash.config.tenants as hours_utc
	authz.allow with input as areq("POST", run("etl"), {}) with time.now_ns as monday_1659 with data.kailash.config.tenants as hours_utc
	not authz.allow with input as areq("POST", run("etl"), {}) with time.now_ns as monday_17 with data.kailash.config.tenants as hours_utc
	not authz.allow with input as areq("POST", run("etl"), {}) with time.now_ns as saturday_10 with data.kailash.config.tenants as hours_utc
	d := authz.deny with input as areq("POST", run("etl"), {}) with time.now_ns as saturday_10 with data.kailash.config.tenants as hours_utc
	d == {"outside business hours"}
}

test_business_hours_in_the_tenant_time_zone if {
	not authz.allow with input as areq("POST", run("etl"), {}) with time.now_ns as monday_13 with data.kailash.config.tenants as hours_ny
	authz.allow with input as areq("POST", run("etl"), {}) with time.now_ns as monday_15 with data.kailash.config.tenants as hours_ny
}

test_business_hours_settings if {
	custom := {"acme": {"business_hours": {"start_hour": 11, "end_hour": 20, "days": ["Saturday"]}}}
	not authz.allow with input as areq("POST", run("etl"), {}) with time.now_ns as saturday_10 with data.kailash.config.tenants as custom
	authz.allow with input as areq("POST", run("etl"), {}) with time.now_ns as (saturday_10 + 3600000000000) with data.kailash.config.tenants as custom
	not authz.allow with input as areq("POST", run("etl"), {}) with time.now_ns as monday_15 with data.kailash.config.tenants as custom
}

test_business_hours_apply_only_to_their_tenant if {
	inp := object.union(areq("POST", run("etl"), {}), {"tenant": {"id": "globex"}})
	authz.allow with input as inp with time.now_ns as saturday_10 with data.kailash.config.tenants as hours_utc
}

# --- allowed countries (opt-in per tenant)

test_countries_off_by_default if {
	authz.allow with input as areq("POST", run("etl"), {})
}

test_country_from_a_trusted_header if {
	ok := {"acme": {"countries": {"allowed": ["DE", "FR"], "header": "X-Country"}}}
	authz.allow with input as areq("POST", run("etl"), {}) with data.kailash.config.tenants as ok
	authz.request_countries == {"DE"} with input as areq("POST", run("etl"), {}) with data.kailash.config.tenants as ok
	no := {"acme": {"countries": {"allowed": ["FR"], "header": "x-country"}}}
	d := authz.deny with input as areq("POST", run("etl"), {}) with data.kailash.config.tenants as no
	d == {"requests from DE are not allowed"}
	missing := {"acme": {"countries": {"allowed": ["DE"], "header": "x-geo"}}}
	d2 := authz.deny with input as areq("POST", run("etl"), {}) with data.kailash.config.tenants as missing
	d2 == {"requests from an unknown country are not allowed"}
}

test_country_from_the_source_address if {
	networks := {"DE": ["192.0.2.0/25"], "FR": ["192.0.2.128/25", "2001:db8::/32"]}
	de := {"acme": {"countries": {"allowed": ["DE"]}}}
	fr := {"acme": {"countries": {"allowed": ["FR"]}}}
	authz.allow with input as areq("POST", run("etl"), {}) with data.kailash.config.tenants as de with data.kailash.config.country_networks as networks
	not authz.allow with input as areq("POST", run("etl"), {}) with data.kailash.config.tenants as fr with data.kailash.config.country_networks as networks
	v6 := json.patch(areq("POST", run("etl"), {}), [{"op": "replace", "path": "/attributes/source/address/socketAddress/address", "value": "2001:db8::1"}])
	authz.allow with input as v6 with data.kailash.config.tenants as fr with data.kailash.config.country_networks as networks
}

test_unknown_source_country_is_denied if {
	de := {"acme": {"countries": {"allowed": ["DE"]}}}
	not authz.allow with input as areq("POST", run("etl"), {}) with data.kailash.config.tenants as de
	nosrc := json.remove(areq("POST", run("etl"), {}), ["/attributes/source"])
	not authz.allow with input as nosrc with data.kailash.config.tenants as de with data.kailash.config.country_networks as {"DE": ["0.0.0.0/0"]}
}

test_empty_country_list_denies_everyone if {
	none := {"acme": {"countries": {"allowed": [], "header": "x-country"}}}
	not authz.allow with input as areq("POST", run("etl"), {}) with data.kailash.config.tenants as none
}
