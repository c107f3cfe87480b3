package envoyauth

import (
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// RequestHeaders returns the request's headers with lowercase names, from
// the headers map or, when Envoy sends raw headers, header_map.
func RequestHeaders(h *authv3.AttributeContext_HttpRequest) map[string]string {
	if m := h.GetHeaders(); len(m) > 0 {
		return m
	}
	out := map[string]string{}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		v := hv.GetValue()
		if v == "" {
			v = string(hv.GetRawValue())
		}
		out[strings.ToLower(hv.GetKey())] = v
	}
	return out
}

// RequestHeader is one header of the request (name in lower case), from
// headers or header_map, without building the whole map.
func RequestHeader(h *authv3.AttributeContext_HttpRequest, name string) string {
	if m := h.GetHeaders(); len(m) > 0 {
		return m[name]
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if strings.EqualFold(hv.GetKey(), name) {
			if v := hv.GetValue(); v != "" {
				return v
			}
			return string(hv.GetRawValue())
		}
	}
	return ""
}

// Bearer extracts the token of an "Authorization: Bearer <token>" header
// (scheme case-insensitive); anything else is no token.
func Bearer(h string) string {
	const scheme = "bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return ""
	}
	return strings.TrimSpace(h[len(scheme):])
}
