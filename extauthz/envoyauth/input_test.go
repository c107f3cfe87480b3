package envoyauth

import (
	"encoding/json"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kailash-gw/kailash/internal/config"
)

func httpCheck(method, path string, headers map[string]string, body string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		ContextExtensions: map[string]string{"tenant": "acme"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: method, Path: path, Host: "acme.localhost", Headers: headers, Body: body,
		}},
	}}
}

func get(t *testing.T, v ast.Value, path string) string {
	t.Helper()
	ref := ast.MustParseRef("x." + path)
	got, err := v.Find(ref[1:])
	if err != nil {
		return "<undefined>"
	}
	return got.String()
}

func TestBuildInputPaths(t *testing.T) {
	cases := []struct{ path, parsedPath, parsedQuery string }{
		{"/v1/workflows", `["v1", "workflows"]`, `{}`},
		{"/", `[""]`, `{}`},
		{"", `[""]`, `{}`},
		{"/v1/workflows/", `["v1", "workflows", ""]`, `{}`},
		{"//v1//workflows", `["v1", "", "workflows"]`, `{}`},
		{"/v1/work%20flows/a%2Fb", `["v1", "work flows", "a", "b"]`, `{}`},
		{"/v1/workflows?limit=10&tag=a&tag=b&empty=", `["v1", "workflows"]`, `{"empty": [""], "limit": ["10"], "tag": ["a", "b"]}`},
		{"/v1/w?q=a%20b+c&x%3Dy=1", `["v1", "w"]`, `{"q": ["a b c"], "x=y": ["1"]}`},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			in, err := BuildInput(httpCheck("GET", c.path, nil, ""), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := get(t, in, "parsed_path"); got != c.parsedPath {
				t.Errorf("parsed_path = %s, want %s", got, c.parsedPath)
			}
			if got := get(t, in, "parsed_query"); got != c.parsedQuery {
				t.Errorf("parsed_query = %s, want %s", got, c.parsedQuery)
			}
		})
	}
	for _, bad := range []string{"/v1/%zz", "/v1/a\x00b", "/v1/\x7f"} {
		_, err := BuildInput(httpCheck("GET", bad, nil, ""), nil, nil)
		if _, ok := err.(*InputError); !ok {
			t.Errorf("%s: want InputError, got %v", bad, err)
		}
	}
}

func TestBuildInputBody(t *testing.T) {
	cases := []struct {
		name      string
		headers   map[string]string
		body      string
		parsed    string
		truncated string
		bad       bool
	}{
		{"json", map[string]string{"content-type": "application/json; charset=utf-8"}, `{"inputs": {"n": 1.5}, "tags": ["a"]}`, `{"inputs": {"n": 1.5}, "tags": ["a"]}`, "false", false},
		{"json empty", map[string]string{"content-type": "application/json"}, "", "null", "false", false},
		{"not json content type", map[string]string{"content-type": "text/plain"}, `{"a":1}`, "null", "false", false},
		{"no content type", nil, `{"a":1}`, "null", "false", false},
		{"truncated by content-length", map[string]string{"content-type": "application/json", "content-length": "100"}, `{"a":`, "null", "true", false},
		{"truncated by envoy", map[string]string{"content-type": "application/json", "x-envoy-auth-partial-body": "true"}, `{"a":`, "null", "true", false},
		{"invalid json", map[string]string{"content-type": "application/json"}, `{"a":`, "", "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in, err := BuildInput(httpCheck("POST", "/v1/workflows", c.headers, c.body), nil, nil)
			if c.bad {
				if _, ok := err.(*InputError); !ok {
					t.Fatalf("want InputError, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := get(t, in, "parsed_body"); got != c.parsed {
				t.Errorf("parsed_body = %s, want %s", got, c.parsed)
			}
			if got := get(t, in, "truncated_body"); got != c.truncated {
				t.Errorf("truncated_body = %s, want %s", got, c.truncated)
			}
		})
	}
	// raw_body (pack_as_bytes) is used when body is empty.
	req := httpCheck("POST", "/", map[string]string{"content-type": "application/json"}, "")
	req.Attributes.Request.Http.RawBody = []byte(`[1,2]`)
	in, err := BuildInput(req, nil, nil)
	if err != nil || get(t, in, "parsed_body") != "[1, 2]" {
		t.Fatalf("raw body: %v %v", in, err)
	}
}

func TestBuildInputIdentityTenantVersion(t *testing.T) {
	id := &Identity{Subject: "alice", Tenant: "acme", Issuer: "iss", Roles: []string{"admin"}, Groups: []string{},
		Attributes: map[string]any{"department": "finance", "clearance": json.Number("3")}, Method: "jwt"}
	tenant := &config.Tenant{ID: "acme", Plan: "enterprise", Features: []string{"audit"}}
	req := httpCheck("GET", "/v1/workflows", nil, "")
	req.Attributes.Source = &authv3.AttributeContext_Peer{Principal: "spiffe://acme/frontend"}
	in, err := BuildInput(req, id, tenant)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"identity.sub":                    `"alice"`,
		"identity.tenant":                 `"acme"`,
		"identity.roles":                  `["admin"]`,
		"identity.groups":                 `[]`,
		"identity.method":                 `"jwt"`,
		"identity.attributes.department":  `"finance"`,
		"identity.attributes.clearance":   `3`,
		"tenant.id":                       `"acme"`,
		"tenant.plan":                     `"enterprise"`,
		"tenant.features":                 `["audit"]`,
		"version.encoding":                `"protojson"`,
		"version.ext_authz":               `"v3"`,
		"attributes.request.http.method":  `"GET"`,
		"attributes.contextExtensions":    `{"tenant": "acme"}`,
		"attributes.source.principal":     `"spiffe://acme/frontend"`,
		"source_principal":                `"spiffe://acme/frontend"`,
		"attributes.request.http.headers": `<undefined>`, // unset fields are omitted
	} {
		if got := get(t, in, path); got != want {
			t.Errorf("%s = %s, want %s", path, got, want)
		}
	}
	// Without identity/tenant both are null.
	in, _ = BuildInput(req, nil, nil)
	if get(t, in, "identity") != "null" || get(t, in, "tenant") != "null" {
		t.Fatal("nil identity/tenant should be null")
	}
}

// TestAttributesMatchProtojson checks the direct proto→AST conversion
// against protojson.Marshal, the opa-envoy-plugin encoding.
func TestAttributesMatchProtojson(t *testing.T) {
	md, _ := structpb.NewStruct(map[string]any{"envoy.filters.http.jwt_authn": map[string]any{"sub": "x", "n": 2.5, "l": []any{true, nil}}})
	peers := []*authv3.AttributeContext_Peer{
		{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}, Protocol: corev3.SocketAddress_UDP}}},
			Labels: map[string]string{"app": "web"}, Service: "web"},
		{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "::1", PortSpecifier: &corev3.SocketAddress_NamedPort{NamedPort: "https"}, ResolverName: "r", Ipv4Compat: true,
			NetworkNamespaceFilepath: "/var/run/netns/a"}}}},
		{Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/envoy.sock", Mode: 0o600}}}},
		{Address: &corev3.Address{}},
	}
	for i, ts := range []time.Time{
		time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		time.Date(2030, 1, 2, 3, 4, 5, 120_000_000, time.UTC),
		time.Date(2030, 1, 2, 3, 4, 5, 123_456_000, time.UTC),
		time.Date(2030, 1, 2, 3, 4, 5, 123_456_789, time.UTC),
	} {
		attrs := &authv3.AttributeContext{
			Source:            peers[i],
			Destination:       &authv3.AttributeContext_Peer{Principal: "spiffe://kailash/runner", Certificate: "pem"},
			ContextExtensions: map[string]string{"tenant": "acme"},
			MetadataContext:   &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"jwt": md}},
			Request: &authv3.AttributeContext_Request{
				Time: timestamppb.New(ts),
				Http: &authv3.AttributeContext_HttpRequest{
					Id: "123", Method: "POST", Path: "/v1/workflows?x=1", Host: "acme.localhost", Scheme: "https",
					Headers: map[string]string{"content-type": "application/json", ":authority": "acme.localhost"},
					Size:    42, Protocol: "HTTP/2", Body: `{"a":1}`, RawBody: []byte{0, 1, 2, 255},
					Query: "x=1", Fragment: "f",
					HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "a", Value: "1"}, {Key: "b", RawValue: []byte("2")}}},
				},
			},
			TlsSession:           &authv3.AttributeContext_TLSSession{Sni: "acme.localhost"},
			RouteMetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"route": md}},
		}
		b, err := protojson.Marshal(attrs)
		if err != nil {
			t.Fatal(err)
		}
		var want any
		if err := util.UnmarshalJSON(b, &want); err != nil {
			t.Fatal(err)
		}
		wantV, err := ast.InterfaceToValue(want)
		if err != nil {
			t.Fatal(err)
		}
		if got := messageToAST(attrs.ProtoReflect()); got.Compare(wantV) != 0 {
			t.Fatalf("proto→AST differs from protojson\n got: %v\nwant: %v", got, wantV)
		}
		if got := attributesToAST(attrs, nil); got.Compare(wantV) != 0 {
			t.Fatalf("attributesToAST differs from protojson\n got: %v\nwant: %v", got, wantV)
		}
	}
	for _, attrs := range []*authv3.AttributeContext{{}, {Request: &authv3.AttributeContext_Request{}}, {Source: &authv3.AttributeContext_Peer{}}} {
		if got, want := attributesToAST(attrs, nil), messageToAST(attrs.ProtoReflect()); got.Compare(want) != 0 {
			t.Fatalf("attributesToAST(%v) = %v, want %v", attrs, got, want)
		}
	}
	// An empty HTTP request is an empty object, as protojson has it.
	empty := &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{}}}
	if got := messageToAST(empty.ProtoReflect()).String(); got != `{"request": {"http": {}}}` {
		t.Fatalf("empty http request: %s", got)
	}
	// httpRequestToAST reads the fields by name: a new field must be added
	// there (and to the case above) before this passes.
	for _, c := range []struct {
		m    protoreflect.ProtoMessage
		want int
	}{
		{&authv3.AttributeContext_HttpRequest{}, httpRequestFields},
		{&authv3.AttributeContext{}, attributeContextFields},
		{&authv3.AttributeContext_Peer{}, peerFields},
		{&authv3.AttributeContext_Request{}, requestFields},
		{&corev3.SocketAddress{}, socketAddressFields},
	} {
		d := c.m.ProtoReflect().Descriptor()
		if n := d.Fields().Len(); n != c.want {
			t.Fatalf("%s has %d fields, its conversion knows %d", d.FullName(), n, c.want)
		}
	}
}
