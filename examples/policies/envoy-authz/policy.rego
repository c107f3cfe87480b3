# A typical opa-envoy-plugin policy; it runs unchanged under
#   kailash authz --policy examples/policies/envoy-authz --decision envoy/authz/allow
package envoy.authz

import input.attributes.request.http as http_request

default allow := false

# Reads are open.
allow if http_request.method == "GET"

# Writes need a token whose role claim is "editor". io.jwt.decode does not
# verify the signature: use io.jwt.decode_verify (cached across requests)
# when Envoy's jwt_authn filter has not verified it already.
allow if {
	http_request.method in {"POST", "PUT"}
	claims.role == "editor"
}

claims := payload if {
	[_, encoded] := split(http_request.headers.authorization, " ")
	[_, payload, _] := io.jwt.decode(encoded)
}
