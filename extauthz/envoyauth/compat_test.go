package envoyauth

// opa-envoy-plugin compatibility: input (body types, query, failures),
// result fields, drop-in mapping.

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestBuildInputBodyTypes(t *testing.T) {
	mp := "--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nalice\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"k\": [1, 2]}\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nbob\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n" +
		"--XyZ--\r\n"
	cases := []struct {
		name, ct, body, parsed, truncated string
		cl                                string
		bad                               bool
	}{
		{"urlencoded", "application/x-www-form-urlencoded", "a=1&b=x+y&a=2&c=%2F", `{"a": ["1", "2"], "b": ["x y"], "c": ["/"]}`, "false", "", false},
		{"urlencoded bad escape", "application/x-www-form-urlencoded", "a=%zz", "", "", "", true},
		{"urlencoded truncated", "application/x-www-form-urlencoded", "a=1", "null", "true", "999", false},
		{"multipart", "multipart/form-data; boundary=XyZ", mp, `{"file": ["hello"], "meta": [{"k": [1, 2]}], "name": ["alice", "bob"]}`, "false", "", false},
		{"multipart without boundary", "multipart/form-data", mp, "null", "false", "", false},
		{"multipart broken", "multipart/form-data; boundary=XyZ", "--XyZ\r\nnot a header\r\n", "", "", "", true},
		{"multipart bad json part", "multipart/form-data; boundary=B", "--B\r\nContent-Disposition: form-data; name=\"j\"\r\nContent-Type: application/json\r\n\r\n{\r\n--B--\r\n", "", "", "", true},
		{"bad content-length", "application/json", `{}`, "", "", "ten", true},
		{"other type", "text/csv", "a,b", "null", "false", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := map[string]string{"content-type": c.ct}
			if c.cl != "" {
				h["content-length"] = c.cl
			}
			in, err := BuildInput(httpCheck("POST", "/upload", h, c.body), nil, nil)
			if c.bad {
				if _, ok := err.(*InputError); !ok || !strings.HasPrefix(err.Error(), "request_parse_error: ") {
					t.Fatalf("want a request_parse_error, got %v", err)
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
}

func TestBuildInputCompatDetails(t *testing.T) {
	// Malformed query pairs are left out (Go's url.Values, as in
	// opa-envoy-plugin); the fragment is not part of path or query.
	in, err := BuildInput(httpCheck("GET", "/a%2Fb/c?x=1&bad=%zz&y=2;z=3&k#frag", nil, ""), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := get(t, in, "parsed_query"); got != `{"k": [""], "x": ["1"]}` {
		t.Errorf("parsed_query %s", got)
	}
	if got := get(t, in, "parsed_path"); got != `["a", "b", "c"]` {
		t.Errorf("parsed_path %s", got)
	}
	// A request without HTTP attributes cannot become input.
	if _, err := BuildInput(&authv3.CheckRequest{}, nil, nil); err == nil || !strings.Contains(err.Error(), "missing required attributes") {
		t.Fatalf("no attributes: %v", err)
	}
	// skip-request-body-parse leaves both body fields out; drop-in leaves
	// identity and tenant out.
	req := httpCheck("POST", "/", map[string]string{"content-type": "application/json"}, `{"a": 1}`)
	in, err = BuildInputWith(req, nil, nil, InputOptions{SkipBodyParse: true, DropIn: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"parsed_body", "truncated_body", "identity", "tenant"} {
		if got := get(t, in, f); got != "<undefined>" {
			t.Errorf("%s = %s, want absent", f, got)
		}
	}
	if get(t, in, "attributes.request.http.body") != `"{\"a\": 1}"` {
		t.Errorf("raw body still in attributes: %s", get(t, in, "attributes.request.http.body"))
	}
}

func TestMapDecisionCompatFields(t *testing.T) {
	result := map[string]any{
		"allowed":                    true,
		"headers":                    []any{map[string]any{"x-a": "1"}, map[string]any{"x-a": "2", "x-b": []any{"3"}}},
		"query_parameters_to_set":    map[string]any{"page": "2", "tag": []any{"a", "b"}},
		"query_parameters_to_remove": []any{"debug"},
	}
	for _, dropIn := range []bool{false, true} {
		d := testDecision()
		d.DropIn = dropIn
		resp, allowed, err := MapDecision(result, d)
		if err != nil || !allowed {
			t.Fatal(err)
		}
		ok := resp.GetOkResponse()
		if h := headerMap(t, ok.GetHeaders()); h["x-a"] != "1,2" || h["x-b"] != "3" {
			t.Fatalf("headers %v", h)
		}
		var qs []string
		for _, q := range ok.GetQueryParametersToSet() {
			qs = append(qs, q.GetKey()+"="+q.GetValue())
		}
		if !slices.Equal(qs, []string{"page=2", "tag=a", "tag=b"}) || !slices.Equal(ok.GetQueryParametersToRemove(), []string{"debug"}) {
			t.Fatalf("query %v / %v", qs, ok.GetQueryParametersToRemove())
		}
		md := resp.GetDynamicMetadata().AsMap()
		if md["decision_id"] != "d1" {
			t.Fatalf("no decision_id in metadata: %v", md)
		}
		if _, has := md["tenant"]; has == dropIn {
			t.Fatalf("drop-in=%v metadata %v", dropIn, md)
		}
	}
	for name, bad := range map[string]any{
		"query set not object":   map[string]any{"allowed": true, "query_parameters_to_set": []any{"a"}},
		"query set value number": map[string]any{"allowed": true, "query_parameters_to_set": map[string]any{"a": num("1")}},
		"query remove not list":  map[string]any{"allowed": true, "query_parameters_to_remove": "a"},
		"status not in enum":     map[string]any{"allowed": false, "http_status": num("299")},
		"headers list of string": map[string]any{"allowed": true, "headers": []any{"x"}},
	} {
		if _, _, err := MapDecision(bad, testDecision()); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

func TestMapDecisionDropIn(t *testing.T) {
	d := Decision{ID: "d9", DropIn: true, ClientHeaders: []string{"x-kailash-user"}}
	// A boolean sets only the status, as opa-envoy-plugin does.
	for _, allowed := range []bool{true, false} {
		resp, got, err := MapDecision(allowed, d)
		if err != nil || got != allowed || resp.GetHttpResponse() != nil {
			t.Fatalf("bool %v: %v %v", allowed, resp, err)
		}
		want := code.Code_OK
		if !allowed {
			want = code.Code_PERMISSION_DENIED
		}
		if resp.GetStatus().GetCode() != int32(want) || resp.GetDynamicMetadata().AsMap()["decision_id"] != "d9" {
			t.Fatalf("bool %v: %v", allowed, resp)
		}
	}
	// An object deny: its headers, body and status only (no defaults added).
	resp, _, err := MapDecision(map[string]any{"allowed": false, "headers": map[string]any{"x-r": "1"}}, d)
	if err != nil {
		t.Fatal(err)
	}
	den := resp.GetDeniedResponse()
	if den.GetStatus().GetCode() != 403 || den.GetBody() != "" || len(den.GetHeaders()) != 1 {
		t.Fatalf("deny %v", den)
	}
	// Allow: no identity headers, client x-kailash-* left alone.
	resp, _, _ = MapDecision(map[string]any{"allowed": true}, d)
	if ok := resp.GetOkResponse(); len(ok.GetHeaders()) != 0 || len(ok.GetHeadersToRemove()) != 0 {
		t.Fatalf("allow %v", ok)
	}
	if r := DryRunAllow(d); r.GetStatus().GetCode() != 0 || r.GetOkResponse() == nil || r.GetDynamicMetadata().AsMap()["decision_id"] != "d9" {
		t.Fatalf("dry run %v", r)
	}
	br := BadRequest(&InputError{Detail: "x"}, d)
	if br.GetDeniedResponse().GetBody() != "request_parse_error: x" || br.GetStatus().GetCode() != int32(code.Code_PERMISSION_DENIED) ||
		br.GetDeniedResponse().GetStatus().GetCode() != 400 || br.GetDynamicMetadata() != nil { // opa-envoy-plugin: no decision_id on a parse error
		t.Fatalf("bad request %v", br)
	}
	un := Unauthenticated(&AuthError{Reason: ReasonExpired}, "d9")
	if un.GetDynamicMetadata().AsMap()["decision_id"] != "d9" {
		t.Fatal("401 without decision_id metadata")
	}
}

// opa-envoy-plugin's protomap: Timestamp as {seconds, nanos}, int64 and
// enums as numbers, exactly {ext_authz, encoding} in version; full mode
// keeps protojson's forms and its own version key (docs/integrations.md).
func TestBuildInputDropInProtomap(t *testing.T) {
	req := httpCheck("GET", "/x", nil, "")
	req.Attributes.Request.Time = timestamppb.New(time.Unix(1700000000, 5))
	req.Attributes.Request.Http.Size = 42
	req.Attributes.Source = &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
		SocketAddress: &corev3.SocketAddress{Protocol: corev3.SocketAddress_UDP, Address: "10.0.0.1"}}}}
	in, err := BuildInputWith(req, nil, nil, InputOptions{DropIn: true})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"attributes.request.time":                          `{"nanos": 5, "seconds": 1700000000}`,
		"attributes.request.http.size":                     `42`,
		"attributes.source.address.socketAddress.protocol": `1`,
		"version": `{"encoding": "protojson", "ext_authz": "v3"}`,
	} {
		if got := get(t, in, path); got != want {
			t.Errorf("drop-in %s = %s, want %s", path, got, want)
		}
	}
	full, err := BuildInput(req, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := get(t, full, "attributes.request.time"); got != `"2023-11-14T22:13:20.000000005Z"` {
		t.Errorf("full mode time = %s", got)
	}
}
