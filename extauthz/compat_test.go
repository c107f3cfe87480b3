package extauthz

// opa-envoy-plugin compatibility of the server: drop-in mode, dry-run,
// shadow and decision logs (input and result mapping: envoyauth).

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kailash-gw/kailash/internal/config"
)

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
			if len(resp.GetDynamicMetadata().AsMap()["decision_id"].(string)) != 36 { // a UUID, as opa-envoy-plugin (contract_test.go)
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
	if status.Code(err) != codes.Unknown { // as opa-envoy-plugin: contract_test.go
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
