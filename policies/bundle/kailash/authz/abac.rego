# Attribute-based rules of the shipped decision. Each adds a reason to deny;
# a request is allowed only when RBAC allows it and deny is empty.
#
#   - department and clearance apply to a resource that declares them: a
#     workflow labelled in data.kailash.config.tenants[t].workflows[name]
#     ({"department": ..., "classification": ...}). Labels come only from
#     bundle data, never from the request, so a client cannot drop them.
#   - business hours and allowed countries apply to a tenant that opts in
#     with business_hours / countries in its data.kailash.config.tenants
#     entry; they are off by default.
package kailash.authz

import data.kailash.config

# workflow_name is the workflow a request is about: the {name} segment of
# /v1/workflows/{name}/..., or the name in the body of POST /v1/workflows
# (creating or replacing a workflow).
workflow_name := name if {
	input.parsed_path[0] == "v1"
	input.parsed_path[1] == "workflows"
	name := input.parsed_path[2]
}

workflow_name := name if {
	input.parsed_path == ["v1", "workflows"]
	input.attributes.request.http.method == "POST"
	name := input.parsed_body.name
	is_string(name)
}

# resource is the labels of that workflow in the tenant's data.
resource := tenant_config.workflows[workflow_name]

# Creating a workflow in a tenant with labelled workflows needs its name
# (the request body, which Envoy sends when authz.max_request_bytes is set):
# without it the request might replace a labelled workflow, so it is denied.
deny contains "the workflow being created cannot be identified (no request body)" if {
	count(tenant_config.workflows) > 0
	input.attributes.request.http.method == "POST"
	input.parsed_path == ["v1", "workflows"]
	not workflow_name
}

# The caller's attributes ({} without any). A path, not object.get(input,
# …): a policy that reads input only by paths keeps the input its Check
# builds to those paths (and is what the decision cache can key on).
default user_attributes := {}

user_attributes := input.identity.attributes

# resource_deny is the part of deny the resource's labels make: department
# and clearance.
deny contains msg if {
	some msg in resource_deny
}

# resource_allowed: the labels of the workflow the request names (if any)
# admit the caller. The runner evaluates it (runner.event_decision) for each
# workflow whose events a tenant-wide event stream would show, with the
# input of GET /v1/workflows/{name}/events; RBAC, business hours and
# countries were the stream route's own decision.
default resource_allowed := false

resource_allowed if count(resource_deny) == 0

resource_deny contains msg if {
	want := resource.department
	have := object.get(user_attributes, "department", "")
	have != want
	msg := sprintf("department %q may not access a resource of department %q", [have, want])
}

# clearance_level is the caller's clearance as a number: a level name
# (public, internal, confidential, secret) or a number; none is public.
default clearance_level := 0

clearance_level := config.classification_levels[user_attributes.clearance]

clearance_level := user_attributes.clearance if is_number(user_attributes.clearance)

resource_deny contains msg if {
	label := resource.classification
	not config.classification_levels[label]
	msg := sprintf("resource classification %q is unknown", [label])
}

resource_deny contains msg if {
	label := resource.classification
	config.classification_levels[label] > clearance_level
	msg := sprintf("clearance too low for a %s resource", [label])
}

# Business hours: {"time_zone": "Europe/Berlin", "business_hours": {}} in a
# tenant's entry enforces 09:00-17:00, Monday to Friday, in that zone;
# start_hour, end_hour (exclusive) and days override the defaults.
default business_days := ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]

within_business_hours(bh) if {
	tz := object.get(tenant_config, "time_zone", "UTC")
	now := time.now_ns()
	[hour, _, _] := time.clock([now, tz])
	hour >= object.get(bh, "start_hour", 9)
	hour < object.get(bh, "end_hour", 17)
	time.weekday([now, tz]) in object.get(bh, "days", business_days)
}

deny contains "outside business hours" if {
	bh := tenant_config.business_hours
	is_object(bh)
	not within_business_hours(bh)
}

# Countries: {"countries": {"allowed": ["DE", "FR"]}} in a tenant's entry
# allows only requests from those countries. The country comes from the
# request header named by countries.header when set (name it in
# envoy.geo_header too: authz then removes it unless a trusted proxy sent
# it), else from the source
# address looked up in data.kailash.config.country_networks
# ({"DE": ["192.0.2.0/24", ...]}). A request whose country is unknown is
# denied.
request_countries contains upper(country) if {
	name := tenant_config.countries.header
	country := input.attributes.request.http.headers[lower(name)]
}

request_countries contains country if {
	not tenant_config.countries.header
	addr := input.attributes.source.address.socketAddress.address
	some country, networks in config.country_networks
	some network in networks
	net.cidr_contains(network, addr)
}

country_allowed if {
	some country in request_countries
	country in tenant_config.countries.allowed
}

deny contains msg if {
	tenant_config.countries.allowed
	not country_allowed
	msg := sprintf("requests from %s are not allowed", [country_label])
}

default country_label := "an unknown country"

country_label := concat(", ", sort(request_countries)) if count(request_countries) > 0
