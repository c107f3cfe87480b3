package envoyauth

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/kailash-gw/kailash/internal/config"
)

// FuzzBuildInput drives the policy input builder with arbitrary paths,
// content types, bodies and headers. It must never panic; whatever it
// accepts must be a document OPA can serialise, whose attributes equal the
// protojson encoding opa-envoy-plugin would give (our hand-written
// conversion must not drift from it on any input), and whose parsed_body is
// exactly what OPA's own JSON decoding gives for a complete JSON body.
// Rejections are InputErrors (a 400-class "request_parse_error"), never
// another error type.
func FuzzBuildInput(f *testing.F) {
	seeds := []struct{ method, path, ct, body, hk, hv string }{
		{"GET", "/v1/workflows?limit=10&tag=a&tag=b", "", "", "x-a", "1"},
		{"POST", "/v1/workflows", "application/json", `{"name":"a","inputs":{"n":1.5},"tags":["x"]}`, "x-b", "2"},
		{"POST", "/v1/workflows", "application/json", `{"name":"decoy","NAME":"x"}`, "", ""},
		{"POST", "/v1/workflows", "application/json", `{"a":1,"a":2}`, "", ""},
		{"POST", "/v1/w", "application/json; charset=utf-8", `[1,2,{"b":null}]`, "", ""},
		{"POST", "/v1/w", "application/json", `{"a":`, "", ""},
		{"POST", "/f", "application/x-www-form-urlencoded", "a=1&a=2&b=%zz", "", ""},
		{"POST", "/m", "multipart/form-data; boundary=XYZ", "--XYZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XYZ--\r\n", "", ""},
		{"GET", "/v1/%zz", "", "", "", ""},
		{"GET", "//a//b/%2F?x%3Dy=1&q=a+b", "", "", "content-length", "7"},
		{"PUT", "/\x00", "application/json", "1e400", "", ""},
		{"POST", "/n", "application/json", `12345678901234567890123456789`, "", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.ct, s.body, s.hk, s.hv)
	}
	tenant := &config.Tenant{ID: "acme", Plan: "pro"}
	f.Fuzz(func(t *testing.T, method, path, ct, body, hk, hv string) {
		headers := map[string]string{}
		if ct != "" {
			headers["content-type"] = ct
		}
		if hk != "" {
			headers[strings.ToLower(hk)] = hv
		}
		req := httpCheck(method, path, headers, body)
		id := &Identity{Subject: "alice", Tenant: "acme", Roles: []string{"admin"}, Method: "jwt"}
		v, err := BuildInput(req, id, tenant)
		if err != nil {
			if _, ok := err.(*InputError); !ok {
				t.Fatalf("error %T (%v) is not an InputError", err, err)
			}
			return
		}
		if _, err := ast.JSON(v); err != nil {
			t.Fatalf("input is not serialisable: %v", err)
		}
		// Attributes as opa-envoy-plugin encodes them (protojson). protojson
		// refuses invalid UTF-8 in any string field, as gRPC's decoding
		// does before a CheckRequest reaches the builder; only a request no
		// field of which is invalid must encode.
		b, err := protojson.Marshal(req.Attributes)
		if err != nil {
			if allValidUTF8(method, path, ct, body, strings.ToLower(hk), hv) {
				t.Fatalf("protojson refused a valid-UTF-8 request we accepted: %v", err)
			}
			return
		}
		var want any
		if err := util.UnmarshalJSON(b, &want); err != nil {
			t.Fatal(err)
		}
		wantV, err := ast.InterfaceToValue(want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := v.Find(ast.MustParseRef("x.attributes")[1:])
		if err != nil {
			t.Fatalf("no attributes: %v", err)
		}
		if got.Compare(wantV) != 0 {
			t.Fatalf("attributes differ from protojson\n got: %v\nwant: %v", got, wantV)
		}
		// A complete JSON body is OPA's own decoding of it, nothing else.
		if strings.Contains(ct, "application/json") && body != "" && headers["x-envoy-auth-partial-body"] != "true" {
			if _, has := headers["content-length"]; has {
				return
			}
			var x any
			if err := util.UnmarshalJSON([]byte(body), &x); err != nil {
				t.Fatalf("accepted a body OPA cannot decode: %q: %v", body, err)
			}
			wantBody, err := ast.InterfaceToValue(x)
			if err != nil {
				t.Fatal(err)
			}
			gotBody, err := v.Find(ast.MustParseRef("x.parsed_body")[1:])
			if err != nil || gotBody.Compare(wantBody) != 0 {
				t.Fatalf("parsed_body = %v, want %v", gotBody, wantBody)
			}
		}
	})
}

// allValidUTF8 reports whether each string is valid UTF-8 (their
// concatenation may be valid when two of them are not: "\xd3" + "\x92").
func allValidUTF8(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}
