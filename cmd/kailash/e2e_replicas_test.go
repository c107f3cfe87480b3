package main

// Replicas as separate processes (this test binary re-executed as
// kailash): `kailash ratelimit` replicas on one Redis give one quota, on
// memory one quota each; `kailash xds` + `kailash authz` + `kailash
// ratelimit` serve a real Envoy with quotas; two `kailash xds` replicas
// serve the same snapshot versions, and an Envoy bootstrapped with both
// keeps serving, and gets edits, when one is killed.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/internal/wire"
)

// replica is one `kailash` server process of a test, with its own
// addresses.
type replica struct {
	*kailashProc
	name       string
	grpc, http string
}

// startReplica runs `kailash <cmd> -c path -grpc A -http B` on fresh
// addresses and waits until its gRPC health says SERVING and /readyz is 200.
func startReplica(t *testing.T, cmd, path string, extra ...string) *replica {
	t.Helper()
	r := &replica{name: cmd, grpc: testenv.FreeAddr(t), http: testenv.FreeAddr(t)}
	r.kailashProc = startKailash(t, append([]string{cmd, "-c", path, "-grpc", r.grpc, "-http", r.http}, extra...)...)
	r.waitReady(t)
	return r
}

// waitReady polls the process's gRPC health and /readyz.
func (r *replica) waitReady(t *testing.T) {
	t.Helper()
	conn := dial(t, r.grpc)
	hc := healthpb.NewHealthClient(conn)
	testenv.Eventually(t, 60*time.Second, func() error {
		select {
		case <-r.done:
			t.Fatalf("kailash %s exited: %v\n%s", r.name, r.err, r.out)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		h, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("gRPC health %v", h.GetStatus())
		}
		if code := httpStatus(r.http, "/readyz"); code != 200 {
			return fmt.Errorf("/readyz: %d", code)
		}
		return nil
	})
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func httpStatus(addr, path string) int {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// metric is the value of the sample named exactly series (name{labels})
// on the process's /metrics; 0 when absent.
func (r *replica) metric(t *testing.T, series string) float64 {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + r.http + "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", r.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == series {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s /metrics: %q: %v", r.name, line, err)
			}
			return f
		}
	}
	return 0
}

// rlsConfig is a config whose tenant acme has a per-user hourly quota of
// limit, counted by the rate-limit service on backend (redisAddr with
// redis). extra is appended to the tenant (e.g. upstreams) and top-level
// sections follow.
func rlsConfig(t *testing.T, p ports, rls, backend, redisAddr string, limit int, tenantExtra, top string) string {
	t.Helper()
	rl := fmt.Sprintf("ratelimit:\n  grpc: %s\n  backend: %s\n  fail_mode: closed\n  timeout: 2s\n", rls, backend)
	if redisAddr != "" {
		rl += fmt.Sprintf("  redis: {addr: %s, timeout: 500ms}\n", redisAddr)
	}
	return configYAML(t, p, "acme") + fmt.Sprintf("    limits: {per_user_per_hour: %d}\n", limit) + tenantExtra + rl + top
}

// take is one ShouldRateLimit call for user of tenant acme, as Envoy makes
// it for a request (the per-user descriptor).
func take(t *testing.T, conn *grpc.ClientConn, user string) rlsv3.RateLimitResponse_Code {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := rlsv3.NewRateLimitServiceClient(conn).ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{
		Domain: wire.RateLimitDomain,
		Descriptors: []*rlcommonv3.RateLimitDescriptor{{Entries: []*rlcommonv3.RateLimitDescriptor_Entry{
			{Key: wire.DescTenant, Value: "acme"}, {Key: wire.DescUser, Value: user},
		}}},
	})
	if err != nil {
		t.Fatalf("ShouldRateLimit: %v", err)
	}
	return resp.GetOverallCode()
}

// TestRatelimitStandaloneReplicasShareRedis: two `kailash ratelimit`
// processes on one Redis are one quota: limit 10, 20 calls alternating
// between them, exactly the first 10 are OK, 5 answered by each.
func TestRatelimitStandaloneReplicasShareRedis(t *testing.T) {
	rd := testenv.StartRedis(t)
	p := freePorts(t)
	path := filepath.Join(t.TempDir(), "kailash.yaml")
	writeConfig(t, path, rlsConfig(t, p, testenv.FreeAddr(t), "redis", rd.Addr, 10, "", ""))
	rs := []*replica{startReplica(t, "ratelimit", path), startReplica(t, "ratelimit", path)}
	conns := []*grpc.ClientConn{dial(t, rs[0].grpc), dial(t, rs[1].grpc)}
	var got []string
	ok := 0
	for i := range 20 {
		c := take(t, conns[i%2], "alice")
		got = append(got, c.String())
		if c == rlsv3.RateLimitResponse_OK {
			if i >= 10 {
				t.Errorf("call %d (replica %d) allowed past the shared quota of 10", i+1, i%2)
			}
			ok++
		}
	}
	if ok != 10 {
		t.Fatalf("two replicas on one Redis allowed %d of 20 calls, want exactly 10: %v", ok, got)
	}
	for i, r := range rs {
		okN := r.metric(t, `kailash_ratelimit_decisions_total{result="ok"}`)
		over := r.metric(t, `kailash_ratelimit_decisions_total{result="over_limit"}`)
		if okN != 5 || over != 5 {
			t.Errorf("replica %d: %v ok and %v over_limit decisions, want 5 and 5", i, okN, over)
		}
	}
	if n := rs[0].metric(t, "kailash_ratelimit_quotas"); n < 1 {
		t.Errorf("kailash_ratelimit_quotas = %v", n)
	}
}

// TestRatelimitStandaloneMemoryReplicasCountAlone: on the memory backend
// each replica is its own quota (documented in docs/deploy.md): limit 10,
// two replicas allow 20. A config edit reaches a running replica, and
// SIGTERM drains it (not ready, still answering, then a clean exit).
func TestRatelimitStandaloneMemoryReplicasCountAlone(t *testing.T) {
	p := freePorts(t)
	path := filepath.Join(t.TempDir(), "kailash.yaml")
	rls := testenv.FreeAddr(t)
	shutdown := "shutdown: {pre_stop_delay: 5s, drain_timeout: 5s}\n"
	writeConfig(t, path, rlsConfig(t, p, rls, "memory", "", 10, "", shutdown))
	rs := []*replica{startReplica(t, "ratelimit", path), startReplica(t, "ratelimit", path)}
	conns := []*grpc.ClientConn{dial(t, rs[0].grpc), dial(t, rs[1].grpc)}
	ok := 0
	for i := range 20 {
		if take(t, conns[i%2], "alice") == rlsv3.RateLimitResponse_OK {
			ok++
		}
	}
	if ok != 20 {
		t.Fatalf("two memory replicas allowed %d of 20 calls, want 20 (10 each)", ok)
	}
	for i, c := range conns {
		if code := take(t, c, "alice"); code != rlsv3.RateLimitResponse_OVER_LIMIT {
			t.Fatalf("replica %d: call 11 of its own: %v, want OVER_LIMIT", i, code)
		}
	}

	// Hot reload: a higher limit reaches the running replicas.
	writeConfig(t, path, rlsConfig(t, p, rls, "memory", "", 1000, "", shutdown))
	testenv.Eventually(t, 30*time.Second, func() error {
		if code := take(t, conns[0], "alice"); code != rlsv3.RateLimitResponse_OK {
			return fmt.Errorf("after raising the limit: %v", code)
		}
		return nil
	})

	// SIGTERM: /readyz turns 503 at once while calls are still answered
	// for pre_stop_delay, then the process exits cleanly.
	a := rs[0]
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if code := httpStatus(a.http, "/readyz"); code != 503 {
			return fmt.Errorf("/readyz while draining: %d", code)
		}
		return nil
	})
	if code := take(t, conns[0], "alice"); code != rlsv3.RateLimitResponse_OK {
		t.Fatalf("a call during the drain: %v", code)
	}
	select {
	case <-a.done:
		if a.err != nil {
			t.Fatalf("kailash ratelimit exited with %v after SIGTERM\n%s", a.err, a.out)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("kailash ratelimit still running 30s after SIGTERM")
	}
}

// tokenFor mints a dev token for sub of tenant.
func tokenFor(t *testing.T, tenant, sub string) string {
	t.Helper()
	pem, err := os.ReadFile("../../examples/keys/dev-signing-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	key, err := devtoken.Key(pem)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := devtoken.Mint(key, devtoken.Claims{Issuer: issuer, Audience: []string{audience}, Tenant: tenant, Subject: sub, Roles: []string{"business_user"}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func loadConfig(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startEnvoy runs a real Envoy on the bootstrap of the config at path.
func startEnvoy(t *testing.T, path string) *envoy.Process {
	t.Helper()
	bin := envoytest.Binary(t)
	cfg := loadConfig(t, path)
	boot, err := envoy.Bootstrap(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	proc, err := envoy.Start(ctx, envoy.Options{Binary: bin, Bootstrap: boot, Log: testWriter{t}})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-proc.Done() })
	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	defer rcancel()
	if err := proc.WaitReady(rctx); err != nil {
		t.Fatal(err)
	}
	return proc
}

// serveOK waits until host answers 200 with body through Envoy for token.
func serveOK(t *testing.T, addr, host, token, body string, within time.Duration, procs ...*replica) {
	t.Helper()
	testenv.Eventually(t, within, func() error {
		for _, r := range procs {
			select {
			case <-r.done:
				t.Fatalf("kailash %s exited: %v\n%s", r.name, r.err, r.out)
			default:
			}
		}
		code, got, err := getVia(addr, host, token, "")
		if err != nil {
			return err
		}
		if code != 200 || got != body {
			return fmt.Errorf("%s through Envoy: %d (%d bytes)", host, code, len(got))
		}
		return nil
	})
}

// TestRatelimitStandaloneThroughEnvoy: `kailash xds`, `kailash authz` and
// `kailash ratelimit` as three processes, quotas configured, a real Envoy:
// requests are served (200) until the user's quota is used up, then 429.
// Before `kailash ratelimit` existed nothing served ratelimit.grpc and
// every request was 503 (fail closed).
func TestRatelimitStandaloneThroughEnvoy(t *testing.T) {
	envoytest.Binary(t)
	up, body := slowUpstream(t)
	p := freePorts(t)
	rls := testenv.FreeAddr(t)
	path := filepath.Join(t.TempDir(), "kailash.yaml")
	writeConfig(t, path, rlsConfig(t, p, rls, "memory", "", 3, fmt.Sprintf("    upstreams: [%s]\n", up), ""))
	x := startKailash(t, "xds", "-c", path)
	a := startKailash(t, "authz", "-c", path)
	r := startKailash(t, "ratelimit", "-c", path)
	procs := []*replica{{kailashProc: x, name: "xds"}, {kailashProc: a, name: "authz"}, {kailashProc: r, name: "ratelimit"}}
	startEnvoy(t, path)

	// Warm up with a user of its own (its quota is not the one asserted).
	serveOK(t, p.envoy, "acme.localhost", tokenFor(t, "acme", "warmup"), body, 90*time.Second, procs...)
	tok := tokenFor(t, "acme", "alice")
	for i := range 3 {
		code, got, err := getVia(p.envoy, "acme.localhost", tok, "")
		if err != nil || code != 200 || got != body {
			t.Fatalf("request %d of alice's 3: %d (%d bytes) %v", i+1, code, len(got), err)
		}
	}
	code, _, err := getVia(p.envoy, "acme.localhost", tok, "")
	if err != nil || code != 429 {
		t.Fatalf("request 4 of alice's 3: %d %v, want 429", code, err)
	}
}

// adsView is what one control plane serves one node over SotW ADS: per
// type, the version and the resources by name.
type adsView map[string]struct {
	version   string
	resources map[string]proto.Message
}

// adsFetch asks the control plane at addr for every resource type Kailash
// serves (wildcard: all of them) as node, one SotW ADS stream.
func adsFetch(t *testing.T, addr, node string) adsView {
	t.Helper()
	conn := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.CloseSend() }()
	v := adsView{}
	for _, typ := range []string{resourcev3.ListenerType, resourcev3.ClusterType, resourcev3.RouteType, resourcev3.ScopedRouteType, resourcev3.SecretType} {
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: typ}); err != nil {
			t.Fatal(err)
		}
	}
	type msg struct {
		resp *discoveryv3.DiscoveryResponse
		err  error
	}
	ch := make(chan msg, 8)
	go func() {
		for {
			resp, err := st.Recv()
			ch <- msg{resp, err}
			if err != nil {
				return
			}
		}
	}()
	// Every type that has resources answers at once; stop once listeners
	// and clusters came and nothing more arrived for 2s.
	for {
		var m msg
		select {
		case m = <-ch:
		case <-time.After(2 * time.Second):
			if _, ok := v[resourcev3.ListenerType]; ok {
				if _, ok := v[resourcev3.ClusterType]; ok {
					return v
				}
			}
			continue
		}
		if m.err != nil {
			t.Fatalf("ADS from %s: %v (got %d types)", addr, m.err, len(v))
		}
		e := v[m.resp.GetTypeUrl()]
		e.version = m.resp.GetVersionInfo()
		e.resources = map[string]proto.Message{}
		for _, a := range m.resp.GetResources() {
			r, err := a.UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			e.resources[resourceName(r)] = r
		}
		v[m.resp.GetTypeUrl()] = e
	}
}

func resourceName(m proto.Message) string {
	if n, ok := m.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	return fmt.Sprintf("%T", m)
}

// sameView reports how a and b differ ("" when they do not).
func sameView(a, b adsView) string {
	var diffs []string
	for typ, ea := range a {
		eb, ok := b[typ]
		switch {
		case !ok:
			diffs = append(diffs, typ+": missing on the second")
			continue
		case ea.version != eb.version:
			diffs = append(diffs, fmt.Sprintf("%s: version %q vs %q", typ, ea.version, eb.version))
		}
		var names []string
		for n := range ea.resources {
			names = append(names, n)
		}
		sort.Strings(names)
		if len(ea.resources) != len(eb.resources) {
			diffs = append(diffs, fmt.Sprintf("%s: %d vs %d resources", typ, len(ea.resources), len(eb.resources)))
		}
		for _, n := range names {
			if !proto.Equal(ea.resources[n], eb.resources[n]) {
				diffs = append(diffs, fmt.Sprintf("%s %s differs", typ, n))
			}
		}
	}
	return strings.Join(diffs, "; ")
}

// TestXDSReplicaVersionsDeterministic: two `kailash xds` processes on one
// config file serve the same resources under the same versions, even when
// one has seen an edit the other started after (different histories).
func TestXDSReplicaVersionsDeterministic(t *testing.T) {
	p := freePorts(t)
	path := filepath.Join(t.TempDir(), "kailash.yaml")
	writeConfig(t, path, configYAML(t, p, "acme"))
	a := startReplica(t, "xds", path)
	before := adsFetch(t, a.grpc, "e2e-envoy")

	writeConfig(t, path, configYAML(t, p, "acme", "globex"))
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := a.metric(t, "kailash_xds_snapshots_total"); n != 2 {
			return fmt.Errorf("replica a published %v snapshots, want 2", n)
		}
		return nil
	})
	b := startReplica(t, "xds", path)
	va, vb := adsFetch(t, a.grpc, "e2e-envoy"), adsFetch(t, b.grpc, "e2e-envoy")
	if d := sameView(va, vb); d != "" {
		t.Fatalf("two replicas on one config serve different snapshots: %s", d)
	}
	if sameView(before, va) == "" {
		t.Fatal("the edit changed nothing replica a serves")
	}
	if len(va[resourcev3.ListenerType].resources) == 0 || len(va[resourcev3.ClusterType].resources) == 0 {
		t.Fatalf("no listeners or clusters served: %v", va)
	}
	t.Logf("both replicas serve listeners and clusters at version %s", va[resourcev3.ListenerType].version)
}

// TestXDSReplicaFailover: Envoy bootstrapped with two `kailash xds`
// replicas (envoy.xds_addresses) serves; the replica holding its ADS stream
// is killed (SIGKILL); Envoy keeps serving, reconnects to the other, and a
// tenant added after the kill reaches it through the survivor.
func TestXDSReplicaFailover(t *testing.T) {
	envoytest.Binary(t)
	up, body := slowUpstream(t)
	p := freePorts(t)
	xa, xb := testenv.FreeAddr(t), testenv.FreeAddr(t)
	path := filepath.Join(t.TempDir(), "kailash.yaml")
	upstream := fmt.Sprintf("    upstreams: [%s]\n", up)
	cfg := func(tenants ...string) string {
		s := configYAML(t, p, tenants...)
		s = strings.Replace(s, "envoy: {", fmt.Sprintf("envoy: {xds_addresses: [%s, %s], ", xa, xb), 1)
		return strings.ReplaceAll(s, "      jwks_file: "+abs(t, "../../examples/keys/dev.jwks.json")+"\n",
			"      jwks_file: "+abs(t, "../../examples/keys/dev.jwks.json")+"\n"+upstream)
	}
	writeConfig(t, path, cfg("acme"))
	ra := &replica{name: "xds a", grpc: xa, http: testenv.FreeAddr(t)}
	ra.kailashProc = startKailash(t, "xds", "-c", path, "-grpc", ra.grpc, "-http", ra.http)
	rb := &replica{name: "xds b", grpc: xb, http: testenv.FreeAddr(t)}
	rb.kailashProc = startKailash(t, "xds", "-c", path, "-grpc", rb.grpc, "-http", rb.http)
	ra.waitReady(t)
	rb.waitReady(t)
	az := &replica{name: "authz", kailashProc: startKailash(t, "authz", "-c", path)}
	startEnvoy(t, path)
	tokA, tokG := tokenFor(t, "acme", "alice"), tokenFor(t, "globex", "gina")
	serveOK(t, p.envoy, "acme.localhost", tokA, body, 90*time.Second, ra, rb, az)

	// Kill the replica Envoy streams from.
	var victim, survivor *replica
	testenv.Eventually(t, 30*time.Second, func() error {
		switch sa, sb := ra.metric(t, "kailash_xds_streams"), rb.metric(t, "kailash_xds_streams"); {
		case sa >= 1 && sb == 0:
			victim, survivor = ra, rb
		case sb >= 1 && sa == 0:
			victim, survivor = rb, ra
		default:
			return fmt.Errorf("xds streams: a %v, b %v; want Envoy on exactly one", sa, sb)
		}
		return nil
	})
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-victim.done
	killed := time.Now()
	t.Logf("killed %s (SIGKILL); %s survives", victim.name, survivor.name)

	// Envoy keeps serving what it has.
	for i := range 5 {
		code, got, err := getVia(p.envoy, "acme.localhost", tokA, "")
		if err != nil || code != 200 || got != body {
			t.Fatalf("request %d after the kill: %d (%d bytes) %v", i+1, code, len(got), err)
		}
	}
	// An edit made after the kill reaches Envoy through the survivor.
	writeConfig(t, path, cfg("acme", "globex"))
	edited := time.Now()
	serveOK(t, p.envoy, "globex.localhost", tokG, body, 120*time.Second, survivor, az)
	t.Logf("the tenant added after the kill served %s after the edit (%s after the kill)",
		time.Since(edited).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	if n := survivor.metric(t, "kailash_xds_streams"); n < 1 {
		t.Errorf("the survivor has %v xDS streams after the failover", n)
	}
	serveOK(t, p.envoy, "acme.localhost", tokA, body, 10*time.Second, survivor, az)
}

// TestRatelimitStandaloneNeedsGRPC: a config without ratelimit.grpc is
// refused by name, not served on some default.
func TestRatelimitStandaloneNeedsGRPC(t *testing.T) {
	_, err := runOut(t, "ratelimit", "-c", "../../examples/kailash.yaml")
	if err == nil || !strings.Contains(err.Error(), "ratelimit.grpc: required") || !strings.Contains(err.Error(), "kailash.yaml") {
		t.Fatalf("got %v", err)
	}
}
