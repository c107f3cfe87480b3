package envoyauth

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

func TestRequestHeader(t *testing.T) {
	m := &authv3.AttributeContext_HttpRequest{Headers: map[string]string{"x-request-id": "a"}}
	if got := RequestHeader(m, "x-request-id"); got != "a" {
		t.Errorf("headers: %q", got)
	}
	raw := &authv3.AttributeContext_HttpRequest{HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "X-Other", Value: "x"}, {Key: "X-Request-Id", RawValue: []byte("b")}}}}
	if got := RequestHeader(raw, "x-request-id"); got != "b" {
		t.Errorf("header_map raw value: %q", got)
	}
	if got := RequestHeader(raw, "x-missing"); got != "" {
		t.Errorf("missing: %q", got)
	}
}
