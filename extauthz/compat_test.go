package extauthz

// opa-envoy-plugin compatibility: input (body types, query, failures),
// result fields, drop-in mode, dry-run, shadow and decision logs.

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kailash-gw/kailash/internal/config"
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
		br.GetDeniedResponse().GetStatus().GetCode() != 400 || br.GetDynamicMetadata().AsMap()["decision_id"] != "d9" {
		t.Fatalf("bad request %v", br)
	}
	un := Unauthenticated(&AuthError{Reason: ReasonExpired}, "d9")
	if un.GetDynamicMetadata().AsMap()["decision_id"] != "d9" {
		t.Fatal("401 without decision_id metadata")
	}
}

// envoyPolicy is a typical opa-envoy-plugin policy, unchanged.
const envoyPolicy = `package envoy.authz

import input.attributes.request.http as http_request

default allow := false

allow if http_request.method == "GET"

allow if {
	http_request.method == "POST"
	input.parsed_path == ["orders"]
	input.parsed_body.qty < 10
	claims.role == "buyer"
}

claims := payload if {
	[_, encoded] := split(http_request.headers.authorization, " ")
	[_, payload, _] := io.jwt.decode(encoded)
}
`

func dropInConfig(t testing.TB, dir string) *config.Config {
	t.Helper()
	cfg := &config.Config{Authz: config.Authz{GRPC: config.MustHostPort("127.0.0.1:0"), Timeout: 2 * time.Second},
		Policy: config.Policy{Bundle: dir, Decision: "envoy/authz/allow"}}
	return cfg
}

func policyDir(t testing.TB, body string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func startDropIn(t *testing.T, cfg *config.Config, out *bytes.Buffer) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var w syncWriter
	w.b = out
	srv, err := New(ctx, cfg, Options{Now: fixedClock, DropIn: true, DecisionLogOutput: &w})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r := serve(t, ctx, cancel, srv)
	return r
}

type syncWriter struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b == nil {
		return len(p), nil
	}
	return w.b.Write(p)
}

func unsignedJWT(claims string) string {
	return b64url([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64url([]byte(claims)) + "."
}

func dropInReq(method, path, auth, ct, body string) *authv3.CheckRequest {
	h := map[string]string{}
	if auth != "" {
		h["authorization"] = auth
	}
	if ct != "" {
		h["content-type"] = ct
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Host: "shop", Headers: h, Body: body,
		}},
	}}
}

func TestDropInServer(t *testing.T) {
	r := startDropIn(t, dropInConfig(t, policyDir(t, envoyPolicy)), nil)
	ctx := t.Context()
	buyer := "Bearer " + unsignedJWT(`{"role":"buyer"}`)
	for _, c := range []struct {
		name  string
		req   *authv3.CheckRequest
		allow bool
	}{
		{"GET without any token", dropInReq("GET", "/anything", "", "", ""), true},
		{"POST by a buyer", dropInReq("POST", "/orders", buyer, "application/json", `{"qty": 3}`), true},
		{"POST too many", dropInReq("POST", "/orders", buyer, "application/json", `{"qty": 30}`), false},
		{"POST by a guest", dropInReq("POST", "/orders", "Bearer "+unsignedJWT(`{"role":"guest"}`), "application/json", `{"qty": 3}`), false},
		{"DELETE", dropInReq("DELETE", "/orders", buyer, "", ""), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, err := r.client.Check(ctx, c.req)
			if err != nil {
				t.Fatal(err)
			}
			if (resp.GetStatus().GetCode() == 0) != c.allow || resp.GetHttpResponse() != nil {
				t.Fatalf("got %v", resp)
			}
			if len(resp.GetDynamicMetadata().AsMap()["decision_id"].(string)) != 32 {
				t.Fatal("no decision_id")
			}
		})
	}
	resp, err := r.client.Check(ctx, dropInReq("POST", "/orders", buyer, "application/json", `{"qty":`))
	if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 400 || !strings.HasPrefix(resp.GetDeniedResponse().GetBody(), "request_parse_error: ") {
		t.Fatalf("unparseable body: %v %v", resp, err)
	}
	if _, err := r.client.Check(ctx, &authv3.CheckRequest{}); err != nil {
		t.Fatalf("no attributes: %v", err)
	}
}

func TestDropInUndefinedFailsClosed(t *testing.T) {
	r := startDropIn(t, dropInConfig(t, policyDir(t, "package envoy.authz\nallow if input.parsed_path[0] == \"x\"\n")), nil)
	_, err := r.client.Check(t.Context(), dropInReq("GET", "/y", "", "", ""))
	if status.Code(err) != codes.Internal {
		t.Fatalf("undefined decision: %v", err)
	}
}

func TestDryRunShadowAndDecisionLog(t *testing.T) {
	active := policyDir(t, "package envoy.authz\ndefault allow := false\nallow if input.attributes.request.http.method == \"GET\"\n")
	candidate := policyDir(t, "package envoy.authz\ndefault allow := false\nallow if input.attributes.request.http.method in {\"GET\", \"HEAD\"}\n")
	cfg := dropInConfig(t, active)
	cfg.Policy.DryRun = true
	cfg.Policy.Shadow = candidate
	cfg.Policy.DecisionLogs = config.DecisionLogs{Console: true, Mask: []string{"/input/parsed_query/token"}}
	var out bytes.Buffer
	r := startDropIn(t, cfg, &out)
	ctx := t.Context()
	for _, m := range []string{"GET", "HEAD", "DELETE"} {
		req := dropInReq(m, "/x?token=s3cret&q=1", "Bearer top-secret", "", "")
		resp, err := r.client.Check(ctx, req)
		if err != nil || resp.GetStatus().GetCode() != 0 {
			t.Fatalf("dry-run %s: %v %v", m, resp, err) // dry-run answers allow
		}
	}
	reg := r.srv.Registry()
	if got := testutil.ToFloat64(r.srv.shadows.WithLabelValues("disagree")); got != 1 {
		t.Fatalf("disagreements %v, want 1 (HEAD)", got)
	}
	if got := testutil.ToFloat64(r.srv.shadows.WithLabelValues("agree")); got != 2 {
		t.Fatalf("agreements %v", got)
	}
	if got := testutil.ToFloat64(r.srv.checks.WithLabelValues(ResultDeny, "dry_run")); got != 2 {
		t.Fatalf("dry-run denies counted %v", got)
	}
	_ = reg
	// Stop the server: the logger drains.
	r.stop()
	text := out.String()
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d decision log lines:\n%s", len(lines), text)
	}
	if strings.Contains(text, "top-secret") {
		t.Fatal("decision log leaks the Authorization header")
	}
	if !strings.Contains(text, `"/input/parsed_query/token"`) || strings.Contains(text, `"token":["s3cret"]`) {
		t.Fatal("configured mask not applied")
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &ev); err != nil {
		t.Fatal(err)
	}
	sh := ev["shadow"].(map[string]any)
	if ev["outcome"] != "deny" || ev["dry_run"] != true || sh["agrees"] != false || sh["allowed"] != true || ev["path"] != "envoy/authz/allow" {
		t.Fatalf("HEAD event %v", ev)
	}
	if ev["bundles"].(map[string]any)["kailash"].(map[string]any)["revision"] == "" || ev["request_path"] != "/x?token=s3cret&q=1" {
		t.Fatalf("event %v", ev)
	}
}

// TestReloadUnderConcurrentChecks swaps bundles while Checks run (with
// -race): every answer comes from one whole version.
func TestReloadUnderConcurrentChecks(t *testing.T) {
	dir := t.TempDir()
	writePolicy := func(v int) {
		body := "package envoy.authz\nv := " + string(rune('0'+v)) + "\nallow := {\"allowed\": true, \"headers\": {\"x-a\": sprintf(\"%d\", [v]), \"x-b\": sprintf(\"%d\", [v])}}\n"
		tmp := filepath.Join(dir, "p.rego.tmp")
		os.WriteFile(tmp, []byte(body), 0o600)
		os.Rename(tmp, filepath.Join(dir, "p.rego"))
	}
	writePolicy(0)
	r := startDropIn(t, dropInConfig(t, dir), nil)
	ctx := t.Context()
	var stop atomic.Bool
	var n atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				resp, err := r.client.Check(ctx, dropInReq("GET", "/", "", "", ""))
				if err != nil {
					t.Error(err)
					return
				}
				h := map[string]string{}
				for _, o := range resp.GetOkResponse().GetHeaders() {
					h[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
				}
				if h["x-a"] != h["x-b"] {
					t.Errorf("mixed versions: %v", h)
					return
				}
				n.Add(1)
			}
		})
	}
	for v := 1; v <= 9; v++ {
		writePolicy(v)
		rev := r.srv.Engine().Revision()
		if err := r.srv.Engine().Reload(ctx); err != nil {
			t.Fatal(err)
		}
		if r.srv.Engine().Revision() == rev {
			t.Fatalf("reload %d did not swap", v)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d checks during 9 reloads", n.Load())
	var _ = corev3.HeaderValueOption{}
}
