package api

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kailash-gw/kailash/internal/wire"
	"github.com/kailash-gw/kailash/workflow"
)

// Completed executions count by tenant and the identity's department; a
// workflow's sla is measured (breaches by workflow, compliance ratio).
func TestBusinessMetrics(t *testing.T) {
	shape := []workflow.Node{{ID: "a", Type: "transform", Config: map[string]any{"set": map[string]any{"x": 1}}}}
	wfs := map[string]*workflow.Workflow{
		"tight": mustCompile(t, workflow.Definition{Name: "tight", SLA: "1ns", Nodes: shape}),
		"loose": mustCompile(t, workflow.Definition{Name: "loose", SLA: "1h", Nodes: shape}),
		"plain": mustCompile(t, workflow.Definition{Name: "plain", Nodes: shape}),
	}
	s := newTestServer(t, wfs)
	sg, jwks := newSigner(t, t.TempDir())
	v, err := newVerifier(jwks, "kailash-runner")
	if err != nil {
		t.Fatal(err)
	}
	s.verify = v
	token := func(attrs map[string]any) string {
		tok, err := jwt.NewBuilder().Audience([]string{"kailash-runner"}).Subject("alice").Expiration(time.Now().Add(time.Minute)).
			Claim("tenant", "acme").Claim("roles", []string{"admin"}).Claim("attributes", attrs).Build()
		if err != nil {
			t.Fatal(err)
		}
		signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256, sg.key))
		if err != nil {
			t.Fatal(err)
		}
		return string(signed)
	}
	exec := func(wf, tok string) {
		req := httptest.NewRequest("POST", "/v1/workflows/"+wf+"/executions", strings.NewReader(`{}`))
		req.Header.Set(wire.HeaderIdentity, tok)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Fatalf("%s: %d %s", wf, rec.Code, rec.Body)
		}
	}
	eng := token(map[string]any{"department": "eng"})
	exec("tight", eng)
	exec("loose", eng)
	exec("plain", token(map[string]any{}))

	if n := testutil.ToFloat64(s.biz.completed.WithLabelValues("acme", "eng")); n != 2 {
		t.Errorf("completed acme/eng = %v, want 2", n)
	}
	if n := testutil.ToFloat64(s.biz.completed.WithLabelValues("acme", "none")); n != 1 {
		t.Errorf("completed acme/none = %v, want 1", n)
	}
	if n := testutil.ToFloat64(s.biz.breaches.WithLabelValues("acme", "tight")); n != 1 {
		t.Errorf("breaches of tight = %v, want 1", n)
	}
	if n := testutil.ToFloat64(s.biz.breaches.WithLabelValues("acme", "loose")); n != 0 {
		t.Errorf("breaches of loose = %v, want 0", n)
	}
	if n := testutil.CollectAndCount(s.biz.compliant, "kailash_runner_sla_compliance_ratio"); n != 1 {
		t.Errorf("compliance series %d, want 1 (tenant acme)", n)
	}
	if n := testutil.CollectAndCount(s.dur, "kailash_runner_execution_duration_seconds"); n != 1 {
		t.Errorf("duration series %d, want 1 (tenant acme)", n)
	}
}

func TestLabelCap(t *testing.T) {
	c := labelCap{max: 2}
	if c.label("a", "a") != "a" || c.label("b", "b") != "b" || c.label("c", "c") != "_other" || c.label("a", "a") != "a" {
		t.Error("labelCap does not cap new values at max while keeping the ones seen")
	}
}

func TestCompileSLA(t *testing.T) {
	if _, err := workflow.Compile(workflow.Definition{Name: "w", SLA: "soon", Nodes: []workflow.Node{{ID: "a", Type: "transform"}}}); err == nil || !strings.Contains(err.Error(), `sla: "soon"`) {
		t.Errorf("bad sla: %v", err)
	}
}
