package main

// The integration guides of docs/integrations.md, through a real Envoy
// with a static config (no xDS), `kailash authz` separate:
//   (a) an existing Envoy: the pieces `kailash translate --ext-authz-only`
//       prints, pasted into its static config (context_extensions per
//       tenant's virtual host);
//   (b) Istio's envoyExtAuthzGrpc CUSTOM provider: the ext_authz filter
//       Istio generates has a grpc_service to the provider and no
//       context_extensions, so authz runs with authz.tenant_from: host;
//   (c) Envoy Gateway's SecurityPolicy extAuth with contextExtensions: a
//       filter named envoy.filters.http.ext_authz/securitypolicy/<ns>/<name>,
//       disabled on the listener and enabled per route by a FilterConfig
//       holding ExtAuthzPerRoute's context_extensions.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// integrationPolicy allows a request whose x-want header names the tenant
// the Check was decided for: it shows which tenant's policy ran.
const integrationPolicy = `package e2e

default allow := false

allow if input.tenant.id == input.attributes.request.http.headers["x-want"]
`

const egFilter = "envoy.filters.http.ext_authz/securitypolicy/default/kailash"

func socketAddr(t *testing.T, hp string) map[string]any {
	t.Helper()
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return map[string]any{"socket_address": map[string]any{"address": h, "port_value": n}}
}

func routeTo(cluster string, perFilter map[string]any) map[string]any {
	r := map[string]any{"match": map[string]any{"prefix": "/"}, "route": map[string]any{"cluster": cluster}}
	if perFilter != nil {
		r["typed_per_filter_config"] = perFilter
	}
	return r
}

func hcmListener(t *testing.T, name, addr string, filters, vhosts []any) map[string]any {
	t.Helper()
	filters = append(filters, map[string]any{"name": "envoy.filters.http.router",
		"typed_config": map[string]any{"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
	return map[string]any{
		"name": name, "address": socketAddr(t, addr),
		"filter_chains": []any{map[string]any{"filters": []any{map[string]any{
			"name": "envoy.filters.network.http_connection_manager",
			"typed_config": map[string]any{
				"@type":        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
				"stat_prefix":  name,
				"route_config": map[string]any{"name": name, "virtual_hosts": vhosts},
				"http_filters": filters,
			},
		}}}},
	}
}

func TestIntegrationGuidesThroughEnvoy(t *testing.T) {
	bin := envoytest.Binary(t)
	pa, pb := freePorts(t), freePorts(t) // a: context_extensions authz; b: tenant_from host authz
	listenA, listenIstio, listenEG := pa.envoy, pb.envoy, testenv.FreeAddr(t)
	dir := t.TempDir()
	policyDir := filepath.Join(dir, "policy")
	if err := os.MkdirAll(policyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(policyDir, "policy.rego"), []byte(integrationPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf("policy: {bundle: %s, decision: e2e/allow}\n", policyDir)
	cfgA := filepath.Join(dir, "a.yaml")
	writeConfig(t, cfgA, configYAML(t, pa, "acme", "globex")+policy)
	cfgB := filepath.Join(dir, "b.yaml")
	writeConfig(t, cfgB, strings.Replace(configYAML(t, pb, "acme", "globex"), "authz: {", "authz: {tenant_from: host, ", 1)+policy)

	// (a) What the guide tells an Envoy operator to run.
	var out strings.Builder
	if err := run(context.Background(), []string{"translate", "--ext-authz-only", "-c", cfgA}, &out); err != nil {
		t.Fatal(err)
	}
	var gen struct {
		HTTPFilters  []any            `yaml:"http_filters"`
		Clusters     []map[string]any `yaml:"clusters"`
		VirtualHosts []map[string]any `yaml:"virtual_hosts"`
	}
	if err := yaml.Unmarshal([]byte(out.String()), &gen); err != nil {
		t.Fatalf("translate --ext-authz-only output:\n%s\n%v", out.String(), err)
	}
	if len(gen.HTTPFilters) != 1 || len(gen.Clusters) != 1 || len(gen.VirtualHosts) != 2 {
		t.Fatalf("translate --ext-authz-only output:\n%s", out.String())
	}

	var hits atomic.Int64
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "upstream")
	}))
	t.Cleanup(upstream.Close)
	upstreamCluster := map[string]any{"name": "app", "type": "STATIC", "connect_timeout": "1s",
		"load_assignment": map[string]any{"cluster_name": "app", "endpoints": []any{map[string]any{"lb_endpoints": []any{
			map[string]any{"endpoint": map[string]any{"address": socketAddr(t, upstream.Listener.Addr().String())}}}}}}}

	var vhostsA []any
	for _, vh := range gen.VirtualHosts {
		vh["routes"] = []any{routeTo("app", nil)}
		vhostsA = append(vhostsA, vh)
	}
	vhostsA = append(vhostsA, map[string]any{"name": "others", "domains": []any{"*"}, "routes": []any{routeTo("app", nil)}})

	// (b) Istio's CUSTOM provider: ext_authz to the provider's cluster,
	// no context_extensions anywhere; the mesh routes by host.
	meshCluster := map[string]any{}
	b, _ := json.Marshal(gen.Clusters[0])
	_ = json.Unmarshal(b, &meshCluster)
	meshCluster["name"] = "outbound|9191||kailash-authz.kailash.svc.cluster.local"
	meshCluster["load_assignment"] = map[string]any{"cluster_name": meshCluster["name"], "endpoints": []any{map[string]any{"lb_endpoints": []any{
		map[string]any{"endpoint": map[string]any{"address": socketAddr(t, pb.authz)}}}}}}
	istioFilter := map[string]any{"name": "envoy.filters.http.ext_authz", "typed_config": map[string]any{
		"@type":                 "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
		"grpc_service":          map[string]any{"envoy_grpc": map[string]any{"cluster_name": meshCluster["name"], "authority": "kailash-authz.kailash.svc.cluster.local"}, "timeout": "600s"},
		"transport_api_version": "V3",
		"status_on_error":       map[string]any{"code": "Forbidden"},
	}}
	istioVhosts := []any{map[string]any{"name": "mesh", "domains": []any{"*"}, "routes": []any{routeTo("app", nil)}}}

	// (c) Envoy Gateway: the SecurityPolicy's filter, disabled on the
	// listener, enabled on each targeted route with its contextExtensions.
	egExtAuthz := map[string]any{"@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
		"grpc_service":          map[string]any{"envoy_grpc": map[string]any{"cluster_name": "kailash_authz"}, "timeout": "10s"},
		"transport_api_version": "V3"}
	egFilterCfg := map[string]any{"name": egFilter, "disabled": true, "typed_config": egExtAuthz}
	var egVhosts []any
	for _, tenant := range []string{"acme", "globex"} {
		per := map[string]any{egFilter: map[string]any{"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
			"config": map[string]any{"@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
				"check_settings": map[string]any{"context_extensions": map[string]any{"tenant": tenant}}}}}
		egVhosts = append(egVhosts, map[string]any{"name": tenant, "domains": []any{tenant + ".localhost"}, "routes": []any{routeTo("app", per)}})
	}

	boot := map[string]any{
		"admin": map[string]any{"address": socketAddr(t, pa.admin)},
		"static_resources": map[string]any{
			"listeners": []any{
				hcmListener(t, "existing", listenA, gen.HTTPFilters, vhostsA),
				hcmListener(t, "istio", listenIstio, []any{istioFilter}, istioVhosts),
				hcmListener(t, "eg", listenEG, []any{egFilterCfg}, egVhosts),
			},
			"clusters": []any{gen.Clusters[0], meshCluster, upstreamCluster},
		},
	}
	bootJSON, err := json.Marshal(boot)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, cfg := range []string{cfgA, cfgB} {
		wg.Go(func() {
			if err := run(ctx, []string{"authz", "-c", cfg, "-log-level", "warn"}, io.Discard); err != nil && ctx.Err() == nil {
				t.Errorf("authz %s: %v", cfg, err)
			}
		})
	}
	proc, err := envoy.Start(ctx, envoy.Options{Binary: bin, Bootstrap: bootJSON, AdminAddr: pa.admin, Log: testWriter{t}})
	if err != nil {
		cancel()
		wg.Wait()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		<-proc.Done()
	})
	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	defer rcancel()
	if err := proc.WaitReady(rctx); err != nil {
		t.Fatalf("envoy rejected the static config: %v\n%s", err, bootJSON)
	}
	for _, l := range []string{listenA, listenIstio, listenEG} {
		if err := waitListener(rctx, l); err != nil {
			t.Fatal(err)
		}
	}

	pem, err := os.ReadFile("../../examples/keys/dev-signing-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	key, err := devtoken.Key(pem)
	if err != nil {
		t.Fatal(err)
	}
	token := func(tenant string) string {
		tok, err := devtoken.Mint(key, devtoken.Claims{Issuer: issuer, Audience: []string{audience}, Tenant: tenant, Subject: "u-" + tenant,
			Roles: []string{"business_user"}, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	client := &http.Client{Timeout: 10 * time.Second}
	send := func(t *testing.T, listen, host, tok, want string) (int, string, bool) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+listen+"/orders", nil)
		req.Host = host
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("x-want", want)
		before := hits.Load()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), hits.Load() > before
	}
	for _, l := range []string{listenA, listenIstio} { // both authz servers answering
		testenv.Eventually(t, 15*time.Second, func() error {
			if code, body, _ := send(t, l, "acme.localhost", token("acme"), "acme"); code != 200 {
				return fmt.Errorf("%s: %d %s", l, code, body)
			}
			return nil
		})
	}

	type tc struct {
		name, host, tenant, want string
		status                   int
		reached                  bool
		body                     string
	}
	common := []tc{
		{"tenant A's host runs A's policy", "acme.localhost", "acme", "acme", 200, true, ""},
		{"tenant B's host runs B's policy", "globex.localhost", "globex", "globex", 200, true, ""},
		{"A's host is not B's tenant", "acme.localhost", "acme", "globex", 403, false, ""},
		{"A's token on B's host is refused", "globex.localhost", "acme", "globex", 401, false, ""},
	}
	for _, g := range []struct {
		guide, listen string
		extra         []tc
	}{
		{"existing Envoy (translate --ext-authz-only)", listenA, []tc{{"a host no tenant serves is 404", "evil.localhost", "acme", "acme", 404, false, "unknown host\n"}}},
		{"Istio CUSTOM provider (tenant_from host)", listenIstio, []tc{
			{"a host no tenant serves is 404", "evil.localhost", "acme", "acme", 404, false, "unknown host\n"},
			{"host with port and capitals", "ACME.localhost:8443", "acme", "acme", 200, true, ""},
		}},
		{"Envoy Gateway extAuth contextExtensions", listenEG, nil},
	} {
		t.Run(g.guide, func(t *testing.T) {
			for _, c := range append(append([]tc{}, common...), g.extra...) {
				t.Run(c.name, func(t *testing.T) {
					code, body, reached := send(t, g.listen, c.host, token(c.tenant), c.want)
					if code != c.status || reached != c.reached || (c.body != "" && body != c.body) {
						t.Fatalf("got %d %q reached=%v, want %d reached=%v", code, body, reached, c.status, c.reached)
					}
				})
			}
		})
	}
}
