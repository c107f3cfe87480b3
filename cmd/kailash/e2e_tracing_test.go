package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// otlpReceiver is an OpenTelemetry collector's trace endpoint (the OTLP/gRPC
// protocol, collector.trace.v1.TraceService) that keeps what it is sent.
type otlpReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	discard bool // count only (benchmarks)
	mu      sync.Mutex
	spans   []gotSpan
	count   int
}

type gotSpan struct {
	service, name     string
	trace, id, parent string
	kind              tracepb.Span_SpanKind
	attrs             map[string]string
}

func (s gotSpan) String() string {
	return fmt.Sprintf("%s %q %s trace=%s id=%s parent=%s", s.service, s.name, s.kind, s.trace, s.id, s.parent)
}

func (r *otlpReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.discard {
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				r.count += len(ss.GetSpans())
			}
		}
		return &coltracepb.ExportTraceServiceResponse{}, nil
	}
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				g := gotSpan{service: service, name: sp.GetName(), kind: sp.GetKind(), attrs: map[string]string{},
					trace: hex.EncodeToString(sp.GetTraceId()), id: hex.EncodeToString(sp.GetSpanId()), parent: hex.EncodeToString(sp.GetParentSpanId())}
				for _, kv := range sp.GetAttributes() {
					g.attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
				}
				r.spans = append(r.spans, g)
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (r *otlpReceiver) inTrace(trace string) []gotSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []gotSpan
	for _, s := range r.spans {
		if s.trace == trace {
			out = append(out, s)
		}
	}
	return out
}

func (r *otlpReceiver) all() []gotSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]gotSpan(nil), r.spans...)
}

func startOTLPReceiver(t testing.TB, discard bool) (*otlpReceiver, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{discard: discard}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, r)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return r, ln.Addr().String()
}

// TestTracingOneTrace: one request through `kailash up` (a child process)
// and a real Envoy, into a workflow with an http node and a sql node,
// reaches a real OTLP receiver as one trace: Envoy's spans, the authz
// Check and the rate-limit call as children of Envoy's spans, the runner's
// request as a child of Envoy's, each node a child of the runner's, the
// sql query and the outgoing call children of their nodes, and the http
// node's upstream receiving the same trace in traceparent. Envoy's JSON
// access log and the decision log carry the request id the client was
// answered, the trace id, the tenant and the decision id.
func TestTracingOneTrace(t *testing.T) {
	envoytest.Binary(t)
	recv, otlp := startOTLPReceiver(t, false)

	// The http node's target: it records the traceparent it is sent.
	var gotParent chan string = make(chan string, 4)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case gotParent <- r.Header.Get("Traceparent"):
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok": true}`)
	}))
	t.Cleanup(target.Close)
	targetHost := strings.TrimPrefix(target.URL, "http://")

	dir := t.TempDir()
	wfDir := filepath.Join(dir, "workflows")
	if err := os.MkdirAll(wfDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, filepath.Join(wfDir, "traced.yaml"), fmt.Sprintf(`name: traced
nodes:
  - id: fetch
    type: http
    config: {url: "%s/status", method: GET}
  - id: count
    type: sql
    config: {query: "SELECT 1 AS one"}
  - id: shape
    type: transform
    config: {set: {done: true}}
connections:
  - {from: fetch, to: count}
  - {from: count, to: shape}
`, target.URL))
	accessLog := filepath.Join(dir, "access.log")
	decisions := filepath.Join(dir, "decisions.log")

	p := freePorts(t)
	body := configYAML(t, p, "acme")
	for _, r := range [][2]string{
		{`access_log: "off"`, "access_log: " + accessLog},
		{"workflows: " + abs(t, "../../examples/workflows"), "workflows: " + wfDir + ", data_dir: " + filepath.Join(dir, "data") + ", http_allow: [\"" + targetHost + "\"]"},
		{"    plan: enterprise\n", "    plan: enterprise\n    limits: {max_api_calls_per_day: 1000}\n"},
		{"\ntenants:\n", fmt.Sprintf("\nratelimit: {grpc: %s, fail_mode: closed, timeout: 2s}\ntelemetry: {otlp_endpoint: \"http://%s\", sampling_ratio: 1}\npolicy: {decision_logs: {file: %s}}\ntenants:\n", testenv.FreeAddr(t), otlp, decisions)},
	} {
		if !strings.Contains(body, r[0]) {
			t.Fatalf("config template changed: no %q in\n%s", r[0], body)
		}
		body = strings.Replace(body, r[0], r[1], 1)
	}
	path := filepath.Join(dir, "kailash.yaml")
	writeConfig(t, path, body)
	k := startKailash(t, "up", "-c", path, "-log-level", "info")
	tok := devToken(t, "acme")

	var requestID string
	client := &http.Client{Timeout: 10 * time.Second}
	testenv.Eventually(t, 90*time.Second, func() error {
		select {
		case <-k.done:
			t.Fatalf("kailash up exited: %v\n%s", k.err, k.out)
		default:
		}
		req, _ := http.NewRequest("POST", "http://"+p.envoy+"/v1/workflows/traced/executions", strings.NewReader(`{}`))
		req.Host = "acme.localhost"
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Request-Id", "client-chosen-id") // replaced at the edge
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("through Envoy: %d %s", resp.StatusCode, b)
		}
		requestID = resp.Header.Get("X-Request-Id")
		return nil
	})
	if requestID == "" || requestID == "client-chosen-id" {
		t.Fatalf("x-request-id in the response = %q, want one Envoy made", requestID)
	}

	// The access log line of that request names its trace.
	var line map[string]any
	testenv.Eventually(t, 30*time.Second, func() error {
		line = findJSONLine(accessLog, "request_id", requestID)
		if line == nil {
			return fmt.Errorf("no access log line with request_id %s in %s", requestID, accessLog)
		}
		return nil
	})
	trace, _ := line["trace_id"].(string)
	if len(trace) != 32 {
		t.Fatalf("access log trace_id = %v, want 32 hex digits; line %v", line["trace_id"], line)
	}
	if line["tenant"] != "acme" || line["status"] != float64(200) || line["method"] != "POST" || line["path"] != "/v1/workflows/traced/executions" {
		t.Errorf("access log line: %v", line)
	}
	decisionID, _ := line["decision_id"].(string)
	if decisionID == "" {
		t.Errorf("access log line has no decision_id: %v", line)
	}

	// The decision log entry is the same request, trace and decision.
	var ev map[string]any
	testenv.Eventually(t, 30*time.Second, func() error {
		if ev = findJSONLine(decisions, "decision_id", decisionID); ev == nil {
			return fmt.Errorf("no decision log entry %s", decisionID)
		}
		return nil
	})
	if ev["request_id"] != requestID || ev["trace_id"] != trace || ev["span_id"] == "" {
		t.Errorf("decision log entry request_id=%v trace_id=%v span_id=%v, want %s %s and a span", ev["request_id"], ev["trace_id"], ev["span_id"], requestID, trace)
	}

	// The http node's call carried the same trace.
	select {
	case tp := <-gotParent:
		if parts := strings.Split(tp, "-"); len(parts) != 4 || parts[1] != trace {
			t.Errorf("http node sent traceparent %q, want trace %s", tp, trace)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the http node's target was not called")
	}

	// Every part's spans arrive, in one trace, with correct parents.
	want := []string{"kailash-envoy", "kailash-authz", "kailash-ratelimit", "kailash-runner"}
	var spans []gotSpan
	testenv.Eventually(t, 60*time.Second, func() error {
		spans = recv.inTrace(trace)
		have := map[string]bool{}
		for _, s := range spans {
			have[s.service] = true
		}
		for _, w := range want {
			if !have[w] {
				return fmt.Errorf("no span from %s in trace %s yet; %d spans received in all: %v", w, trace, len(recv.all()), recv.all())
			}
		}
		for _, n := range []string{"node fetch", "node count", "node shape", "sql query"} {
			if findSpan(spans, "kailash-runner", n) == nil {
				return fmt.Errorf("no runner span %q yet in %v", n, spans)
			}
		}
		return nil
	})
	byID := map[string]gotSpan{}
	for _, s := range spans {
		byID[s.id] = s
	}
	parentService := func(s gotSpan) string {
		p, ok := byID[s.parent]
		if !ok {
			return ""
		}
		return p.service
	}
	check := func(s *gotSpan, what, parentSvc string) {
		t.Helper()
		if s == nil {
			t.Errorf("no %s span in %v", what, spans)
			return
		}
		if got := parentService(*s); got != parentSvc {
			t.Errorf("%s span %v: parent is from %q, want %q", what, *s, got, parentSvc)
		}
	}
	authz := findKind(spans, "kailash-authz", tracepb.Span_SPAN_KIND_SERVER)
	check(authz, "authz Check", "kailash-envoy")
	if authz != nil && (authz.attrs["kailash.decision_id"] != decisionID || authz.attrs["kailash.tenant"] != "acme" || authz.attrs["kailash.result"] != "allow") {
		t.Errorf("authz span attributes %v, want decision %s, tenant acme, allow", authz.attrs, decisionID)
	}
	check(findKind(spans, "kailash-ratelimit", tracepb.Span_SPAN_KIND_SERVER), "ratelimit", "kailash-envoy")
	runner := findKind(spans, "kailash-runner", tracepb.Span_SPAN_KIND_SERVER)
	check(runner, "runner request", "kailash-envoy")
	for _, n := range []string{"node fetch", "node count", "node shape"} {
		s := findSpan(spans, "kailash-runner", n)
		if s != nil && runner != nil && s.parent != runner.id {
			t.Errorf("%s span: parent %s, want the runner request span %s", n, s.parent, runner.id)
		}
	}
	if sq, node := findSpan(spans, "kailash-runner", "sql query"), findSpan(spans, "kailash-runner", "node count"); sq != nil && node != nil && sq.parent != node.id {
		t.Errorf("sql query span's parent %s, want node count %s", sq.parent, node.id)
	}
	fetch := findSpan(spans, "kailash-runner", "node fetch")
	anyClient := findKind(spans, "kailash-runner", tracepb.Span_SPAN_KIND_CLIENT)
	if fetch != nil {
		var call *gotSpan
		for i := range spans {
			if spans[i].service == "kailash-runner" && spans[i].kind == tracepb.Span_SPAN_KIND_CLIENT && spans[i].parent == fetch.id {
				call = &spans[i]
			}
		}
		if call == nil {
			t.Errorf("no client span under node fetch (a client span: %v)", anyClient)
		}
	}
	if t.Failed() {
		for _, s := range spans {
			t.Log(s)
		}
	}
}

func findSpan(spans []gotSpan, service, name string) *gotSpan {
	for i := range spans {
		if spans[i].service == service && spans[i].name == name {
			return &spans[i]
		}
	}
	return nil
}

func findKind(spans []gotSpan, service string, kind tracepb.Span_SpanKind) *gotSpan {
	for i := range spans {
		if spans[i].service == service && spans[i].kind == kind {
			return &spans[i]
		}
	}
	return nil
}

// findJSONLine is the first JSON line of file whose key is value.
func findJSONLine(file, key, value string) map[string]any {
	f, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m[key] == value {
			return m
		}
	}
	return nil
}
