package extauthz

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/kailash-gw/kailash/internal/config"
)

// With the decision cache on (and no decision log, explain or shadow
// policy reading the whole input), the input holds only the attributes
// and the parsed body the policy can read. Randomized Check requests
// (sources, destinations, context extensions, metadata, JSON, form and
// malformed bodies, headers) get the same answer from a server building
// the trimmed input as from one building all of it (cache disabled), for
// policies reading different parts; a malformed JSON body the policy never
// reads is refused on both.
func TestTrimmedInputDecidesAsFull(t *testing.T) {
	for name, policy := range map[string]string{
		"method and path": `package envoy.authz
default allow := false
allow if { input.attributes.request.http.method == "GET"; input.parsed_path[0] == "orders" }`,
		"body": `package envoy.authz
default allow := false
allow if input.parsed_body.qty < 5
allow if input.truncated_body`,
		"source and extensions": `package envoy.authz
default allow := false
allow if { input.attributes.source.address.socketAddress.address == "10.0.0.1"; input.attributes.contextExtensions.tier == "gold" }
allow if input.attributes.metadataContext.filterMetadata.k.v == "yes"`,
		"non-deterministic builtin": `package envoy.authz
default allow := false
allow if { time.now_ns() > 0; input.attributes.request.http.method == "POST"; input.parsed_body.qty > 2 }`,
		"headers object": `package envoy.authz
default allow := {"allowed": false, "body": "no"}
allow := {"allowed": true, "headers": {"x-ua": object.get(input.attributes.request.http.headers, "user-agent", "none")}} if {
	input.attributes.destination.address.socketAddress.portValue == 8443
}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := policyDir(t, policy)
			trimmed := startDropIn(t, dropInConfig(t, dir), nil)
			// The reference: no cache, and a decision log, which reads the
			// whole input (so the input is built whole).
			full := dropInConfig(t, dir)
			full.Policy.DecisionCache.Disabled = true
			full.Policy.DecisionLogs = config.DecisionLogs{Console: true}
			whole := startDropIn(t, full, &bytes.Buffer{})
			// Trimmed without the cache too.
			nocache := dropInConfig(t, dir)
			nocache.Policy.DecisionCache.Disabled = true
			uncached := startDropIn(t, nocache, nil)
			r := rand.New(rand.NewPCG(1, uint64(len(name))))
			pick := func(s ...string) string { return s[r.IntN(len(s))] }
			refused := 0
			for i := range 400 {
				ct := pick("application/json", "application/x-www-form-urlencoded", "text/plain", "")
				body := pick(fmt.Sprintf(`{"qty": %d}`, r.IntN(10)), `{"qty": 1`, `qty=2&x=y`, "", `[1, 2]`, `{"qty": 1} x`)
				req := dropInReq(pick("GET", "POST"), pick("/orders", "/orders/1", "/admin", "/"), "", ct, body)
				h := req.Attributes.Request.Http
				h.Headers["user-agent"] = pick("curl", "go", "x")
				if r.IntN(4) == 0 {
					h.Headers["content-length"] = pick("100000", "3")
				}
				if r.IntN(2) == 0 {
					req.Attributes.Source = peer(pick("10.0.0.1", "10.0.0.2"), 1234)
				}
				if r.IntN(2) == 0 {
					req.Attributes.Destination = peer("10.1.0.1", uint32(pick2(r, 8443, 80)))
				}
				if r.IntN(2) == 0 {
					req.Attributes.ContextExtensions = map[string]string{"tier": pick("gold", "silver")}
				}
				if r.IntN(3) == 0 {
					s, _ := structpb.NewStruct(map[string]any{"v": pick("yes", "no")})
					req.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"k": s}}
				}
				a, aerr := trimmed.client.Check(t.Context(), req)
				b, berr := whole.client.Check(t.Context(), req)
				c, cerr := uncached.client.Check(t.Context(), req)
				if (aerr == nil) != (berr == nil) || (cerr == nil) != (berr == nil) {
					t.Fatalf("request %d %v: trimmed %v, uncached trimmed %v, full %v", i, req, aerr, cerr, berr)
				}
				if aerr != nil {
					continue
				}
				a.DynamicMetadata, b.DynamicMetadata, c.DynamicMetadata = nil, nil, nil
				if !proto.Equal(a, b) || !proto.Equal(c, b) {
					t.Fatalf("request %d %v:\ntrimmed  %v\nuncached %v\nfull     %v", i, req, a, c, b)
				}
				if ct == "application/json" && (body == `{"qty": 1` || body == `{"qty": 1} x`) && a.GetStatus().GetCode() != 0 && a.GetDeniedResponse() != nil {
					refused++
				}
			}
			if refused == 0 {
				t.Error("no malformed JSON body was refused")
			}
			if plan := trimmed.srv.Engine().CachePlan(); plan == "off" {
				t.Fatalf("the trimmed server has no plan: %q", plan)
			}
		})
	}
}

func pick2(r *rand.Rand, a, b int) int {
	if r.IntN(2) == 0 {
		return a
	}
	return b
}

func peer(addr string, port uint32) *authv3.AttributeContext_Peer {
	return &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
		SocketAddress: &corev3.SocketAddress{Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}
}
