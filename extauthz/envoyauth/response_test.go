package envoyauth

import (
	"encoding/json"
	"errors"
	"github.com/kailash-gw/kailash/internal/testenv"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/kailash-gw/kailash/internal/wire"
)

func testDecision() Decision {
	return Decision{
		ID: "d1", Tenant: "acme",
		Identity:      &Identity{Subject: "alice", Roles: []string{"admin", "business_user"}},
		ClientHeaders: []string{"x-kailash-user", "x-kailash-admin", "authorization", "X-Kailash-Debug", "accept"},
	}
}

func headerMap(t *testing.T, hs []*corev3.HeaderValueOption) map[string]string {
	return testenv.HeaderMap(t, hs)
}

func num(s string) json.Number { return json.Number(s) }

func TestMapDecisionAllow(t *testing.T) {
	for name, result := range map[string]any{
		"bool":   true,
		"object": map[string]any{"allowed": true},
	} {
		t.Run(name, func(t *testing.T) {
			resp, allowed, err := MapDecision(result, testDecision())
			if err != nil || !allowed {
				t.Fatalf("allowed=%v err=%v", allowed, err)
			}
			if resp.GetStatus().GetCode() != int32(code.Code_OK) {
				t.Fatalf("status %v", resp.GetStatus())
			}
			ok := resp.GetOkResponse()
			h := headerMap(t, ok.GetHeaders())
			want := map[string]string{wire.HeaderTenant: "acme", wire.HeaderUser: "alice", wire.HeaderRoles: "admin,business_user", wire.HeaderDecisionID: "d1"}
			for k, v := range want {
				if h[k] != v {
					t.Errorf("header %s = %q, want %q", k, h[k], v)
				}
			}
			// Forged x-kailash-* headers are removed, except the ones we
			// overwrite (Envoy removes after setting, so listing those would
			// drop our values).
			if got := ok.GetHeadersToRemove(); !slices.Equal(got, []string{"x-kailash-admin", "x-kailash-debug"}) {
				t.Fatalf("headers_to_remove = %v", got)
			}
			md := resp.GetDynamicMetadata().AsMap()
			if md["decision_id"] != "d1" || md["tenant"] != "acme" || md["user"] != "alice" || len(md["roles"].([]any)) != 2 {
				t.Fatalf("dynamic metadata %v", md)
			}
		})
	}
}

func TestMapDecisionObjectFields(t *testing.T) {
	result := map[string]any{
		"allowed": true,
		"headers": map[string]any{
			"x-kailash-permission": "workflow:read",
			"X-Multi":              []any{"a", "b"},
			wire.HeaderUser:        "mallory", // cannot forge identity headers
		},
		"request_headers_to_remove": []any{"Authorization", "x-kailash-permission"},
		"response_headers_to_add":   map[string]any{"x-served-by": "kailash"},
		"dynamic_metadata":          map[string]any{"plan": "enterprise", "weight": num("2"), "user": "mallory"},
	}
	resp, allowed, err := MapDecision(result, testDecision())
	if err != nil || !allowed {
		t.Fatal(allowed, err)
	}
	ok := resp.GetOkResponse()
	h := headerMap(t, ok.GetHeaders())
	if h["x-kailash-permission"] != "workflow:read" || h["x-multi"] != "a,b" || h[wire.HeaderUser] != "alice" {
		t.Fatalf("headers %v", h)
	}
	rm := ok.GetHeadersToRemove()
	if !slices.Contains(rm, "authorization") || slices.Contains(rm, "x-kailash-permission") || slices.Contains(rm, "accept") {
		t.Fatalf("headers_to_remove %v", rm)
	}
	if rh := headerMap(t, ok.GetResponseHeadersToAdd()); rh["x-served-by"] != "kailash" {
		t.Fatalf("response headers %v", rh)
	}
	md := resp.GetDynamicMetadata().AsMap()
	if md["plan"] != "enterprise" || md["weight"] != 2.0 || md["user"] != "alice" {
		t.Fatalf("metadata %v", md)
	}
}

func TestMapDecisionDeny(t *testing.T) {
	cases := []struct {
		name       string
		result     any
		status     int32
		body       string
		headerWant map[string]string
	}{
		{"bool", false, 403, `"error":"forbidden"`, map[string]string{"content-type": "application/json"}},
		{"object default", map[string]any{"allowed": false}, 403, `"decision_id":"d1"`, nil},
		{"object with fields", map[string]any{
			"allowed": false, "http_status": num("429"), "body": "slow down",
			"headers": map[string]any{"retry-after": "10", wire.HeaderDecisionID: "forged"},
		}, 429, "slow down", map[string]string{"retry-after": "10"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, allowed, err := MapDecision(c.result, testDecision())
			if err != nil || allowed {
				t.Fatal(allowed, err)
			}
			if resp.GetStatus().GetCode() != int32(code.Code_PERMISSION_DENIED) {
				t.Fatalf("status %v", resp.GetStatus())
			}
			d := resp.GetDeniedResponse()
			if int32(d.GetStatus().GetCode()) != c.status || !strings.Contains(d.GetBody(), c.body) {
				t.Fatalf("status %v body %q", d.GetStatus().GetCode(), d.GetBody())
			}
			h := headerMap(t, d.GetHeaders())
			if h[wire.HeaderDecisionID] != "d1" {
				t.Fatalf("decision id header %q", h[wire.HeaderDecisionID])
			}
			for k, v := range c.headerWant {
				if h[k] != v {
					t.Errorf("%s = %q, want %q", k, h[k], v)
				}
			}
		})
	}
}

func TestMapDecisionInvalid(t *testing.T) {
	for name, result := range map[string]any{
		"undefined (nil)":           nil,
		"string":                    "yes",
		"number":                    num("1"),
		"list":                      []any{true},
		"missing allowed":           map[string]any{"headers": map[string]any{}},
		"non-bool allowed":          map[string]any{"allowed": "true"},
		"headers not object":        map[string]any{"allowed": true, "headers": []any{"a"}},
		"header value number":       map[string]any{"allowed": true, "headers": map[string]any{"a": num("1")}},
		"remove not list":           map[string]any{"allowed": true, "request_headers_to_remove": "a"},
		"body not string":           map[string]any{"allowed": false, "body": map[string]any{}},
		"status not number":         map[string]any{"allowed": false, "http_status": "403"},
		"status out of range":       map[string]any{"allowed": false, "http_status": num("1000")},
		"status not int":            map[string]any{"allowed": false, "http_status": num("403.5")},
		"metadata not object":       map[string]any{"allowed": true, "dynamic_metadata": "x"},
		"metadata key not UTF-8":    map[string]any{"allowed": true, "dynamic_metadata": map[string]any{"\xff": "x"}},
		"metadata value not UTF-8":  map[string]any{"allowed": true, "dynamic_metadata": map[string]any{"a": []any{"\xff"}}},
		"response headers not obj":  map[string]any{"allowed": true, "response_headers_to_add": true},
		"remove holds a non-string": map[string]any{"allowed": true, "request_headers_to_remove": []any{num("1")}},
	} {
		t.Run(name, func(t *testing.T) {
			resp, allowed, err := MapDecision(result, testDecision())
			if !errors.Is(err, ErrBadDecision) || resp != nil || allowed {
				t.Fatalf("want ErrBadDecision, got resp=%v allowed=%v err=%v", resp, allowed, err)
			}
		})
	}
}

func TestUnauthenticated(t *testing.T) {
	for _, c := range []struct {
		reason Reason
		want   string
	}{
		{ReasonMissingToken, `Bearer realm="kailash"`},
		{ReasonExpired, `Bearer realm="kailash", error="invalid_token", error_description="expired"`},
	} {
		resp := Unauthenticated(&AuthError{Reason: c.reason, Detail: "secret detail"}, "d1")
		d := resp.GetDeniedResponse()
		if resp.GetStatus().GetCode() != int32(code.Code_UNAUTHENTICATED) || d.GetStatus().GetCode() != 401 {
			t.Fatalf("status %v / %v", resp.GetStatus(), d.GetStatus())
		}
		h := headerMap(t, d.GetHeaders())
		if h["www-authenticate"] != c.want || h[wire.HeaderDecisionID] != "d1" || h["content-type"] != "application/json" {
			t.Fatalf("headers %v", h)
		}
		var body map[string]string
		if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil || body["error"] != "unauthenticated" || body["reason"] != string(c.reason) {
			t.Fatalf("body %q", d.GetBody())
		}
		if strings.Contains(d.GetBody(), "secret detail") {
			t.Fatal("detail leaked to the client")
		}
	}
	resp := BadRequest(&InputError{Detail: "path"}, Decision{ID: "d2"})
	if resp.GetDeniedResponse().GetStatus().GetCode() != 400 {
		t.Fatal(resp)
	}
	var _ *authv3.CheckResponse = resp
}
