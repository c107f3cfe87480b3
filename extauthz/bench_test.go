package extauthz

import (
	"context"
	"testing"

	"github.com/kailash-gw/kailash/policies"
)

func benchServer(b *testing.B, cacheSize int) *Server {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	srv, err := New(ctx, testConfig(b), Options{Now: fixedClock, TokenCacheSize: cacheSize})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	return srv
}

// BenchmarkCheck is a whole Check in process (no gRPC transport): bearer
// token verification, input building, policy evaluation, response mapping.
func BenchmarkCheck(b *testing.B) {
	for _, bc := range []struct {
		name  string
		cache int
	}{{"token-cache", 0}, {"no-token-cache", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			srv := benchServer(b, bc.cache)
			req := checkReq("acme", "POST", "/v1/workflows/etl/executions?dry_run=1", mint(b, devKey(b), claims(nil)),
				map[string]string{"x-kailash-user": "forged", "accept": "application/json", "user-agent": "bench"})
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				resp, err := srv.Check(ctx, req)
				if err != nil || resp.GetOkResponse() == nil {
					b.Fatal(resp, err)
				}
			}
		})
	}
}

// BenchmarkEval is the policy evaluation alone, with input prebuilt.
func BenchmarkEval(b *testing.B) {
	ctx := context.Background()
	e, err := policies.NewEngine(ctx, policies.EngineOptions{})
	if err != nil {
		b.Fatal(err)
	}
	id := &Identity{Subject: "alice", Tenant: "acme", Roles: []string{"business_user"}, Method: "jwt"}
	in, err := BuildInput(checkReq("acme", "POST", "/v1/workflows/etl/executions", "x", nil), id, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Eval(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuildInput(b *testing.B) {
	id := &Identity{Subject: "alice", Tenant: "acme", Roles: []string{"business_user"}, Method: "jwt",
		Attributes: map[string]any{"department": "finance"}}
	req := checkReq("acme", "POST", "/v1/workflows/etl/executions?x=1", "token", map[string]string{"accept": "*/*"})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildInput(req, id, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, bc := range []struct {
		name  string
		cache int
	}{{"cache", 0}, {"no-cache", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			v := newTestVerifier(b, bc.cache, fixedClock)
			tok := mint(b, devKey(b), claims(nil))
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
