package main

// Scale through real Envoys: the control plane with many tenants (500 in
// `make test`; KAILASH_SCALE_TENANTS=10000 for the measurement, which
// `make bench` runs), the time from a one-tenant edit to that tenant served
// (logged, not asserted), with per-tenant routes over delta xDS and with one
// route table over state of the world, the control plane's memory, and two
// Envoys as separate nodes of one control plane (one on each protocol) both
// serving an edit within 1s. The 100,000-tenant numbers (tenant store, xds
// as its own process, 100 ADS clients) are e2e_scale_store_test.go's.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/xds"
	"github.com/kailash-gw/kailash/xds/translate"
)

// scaleConfig has n tenants with two domains each, the edge features on
// every tenant, and an ext_authz address nothing listens on: every request
// to an active tenant is refused with 503 (fail closed), so a served edit is
// visible without authorizing anything. With one route table (routes
// single) the second domain is a wildcard; per-tenant routes need exact
// host names.
func scaleConfig(t testing.TB, n int, routes, protocol string) *config.Config {
	cfg := &config.Config{
		Envoy: config.Envoy{Listen: config.MustHostPort(testenv.FreeAddr(t)), NodeID: "scale-a", Cluster: "kailash",
			Routes: routes, XDSProtocol: protocol},
		XDS:       config.XDS{GRPC: config.MustHostPort(testenv.FreeAddr(t))},
		Authz:     config.Authz{GRPC: config.MustHostPort(testenv.FreeAddr(t)), HTTP: config.MustHostPort(testenv.FreeAddr(t)), Timeout: 500 * time.Millisecond},
		Runner:    config.Runner{HTTP: config.MustHostPort(testenv.FreeAddr(t))},
		RateLimit: config.RateLimit{GRPC: config.MustHostPort(testenv.FreeAddr(t))},
	}
	for i := range n {
		id := fmt.Sprintf("t%05d", i)
		second := "www." + id + ".example.net"
		if routes == config.RoutesSingle {
			second = "*." + id + ".example.net"
		}
		cfg.Tenants = append(cfg.Tenants, config.Tenant{
			ID:          id,
			Domains:     []string{id + ".localhost", second},
			CORS:        config.CORS{AllowOrigins: []string{"https://app." + id + ".example.com"}},
			IPAllowlist: []config.Prefix{config.MustPrefix("127.0.0.0/8"), config.MustPrefix("10.0.0.0/8")},
			Limits:      config.TenantLimits{RequestsPerSecond: 1000, Burst: 2000, MaxAPICallsPerDay: 1e6, PerUserPerHour: 1000},
		})
	}
	return cfg
}

func scaleTenants(t *testing.T) int {
	testenv.SkipShort(t, "the scale test")
	n := 500
	if v := os.Getenv("KAILASH_SCALE_TENANTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 2 {
			t.Fatalf("KAILASH_SCALE_TENANTS=%q", v)
		}
	}
	return n
}

// startXDS runs a control plane for cfg until the test ends.
func startXDS(t *testing.T, cfg *config.Config) *xds.Server {
	t.Helper()
	xs, err := xds.New(cfg, xds.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- xs.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("xds: %v", err)
		}
	})
	return xs
}

// scaleEnvoy is one Envoy node and its admin address.
type scaleEnvoy struct {
	node, admin string
	proc        *envoy.Process
}

// startNode runs an Envoy with node id node against cfg's control plane,
// speaking protocol (config.XDSDelta or config.XDSSotW).
func startNode(t *testing.T, cfg *config.Config, node, protocol string) *scaleEnvoy {
	t.Helper()
	c := *cfg
	c.Envoy.NodeID, c.Envoy.Admin, c.Envoy.XDSProtocol = node, config.MustHostPort(testenv.FreeAddr(t)), protocol
	boot, err := envoy.Bootstrap(&c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	proc, err := envoy.Start(ctx, envoy.Options{Binary: envoytest.Binary(t), Bootstrap: boot, Log: testWriter{t}, Concurrency: 1})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-proc.Done()
	})
	rctx, rcancel := context.WithTimeout(ctx, 120*time.Second)
	defer rcancel()
	if err := proc.WaitReady(rctx); err != nil {
		t.Fatal(err)
	}
	return &scaleEnvoy{node: node, admin: c.Envoy.Admin.String(), proc: proc}
}

// stat reads one Envoy stat (counter, gauge or text readout) as text.
func (e *scaleEnvoy) stat(name string) string {
	resp, err := http.Get("http://" + e.admin + "/stats?filter=^" + strings.ReplaceAll(name, ".", `\.`) + "$")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ": "); ok && k == name {
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return ""
}

// routesVersion is the version of the route configuration serving tenant
// that the Envoy applied (per-tenant or the single table).
func (e *scaleEnvoy) routesVersion(cfg *config.Config, tenant string) string {
	name := translate.RouteConfigName
	if cfg.PerTenantRoutes() {
		name = translate.TenantRouteConfigName(tenant)
	}
	return e.stat("http.ingress_http.rds." + name + ".version_text")
}

// get sends one request on a new connection and returns status and body.
func get(addr, host string) (int, string, error) {
	req, err := http.NewRequest("GET", "http://"+addr+"/v1/workflows", nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	req.Close = true
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// deactivated is cfg with tenant i inactive (a one-tenant edit).
func deactivated(cfg *config.Config, i int) *config.Config {
	c := *cfg
	c.Tenants = append([]config.Tenant(nil), cfg.Tenants...)
	off := false
	c.Tenants[i].Active = &off
	return &c
}

// rss is this process's resident set and its peak, in MiB.
func rss() (cur, peak float64) { return procMem(os.Getpid()) }

// writeHeapProfile writes the process's heap profile to path (for
// KAILASH_SCALE_PPROF=dir: go tool pprof -sample_index=inuse_space).
func writeHeapProfile(t *testing.T, path string) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.WriteHeapProfile(f)
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		t.Errorf("heap profile: %v", err)
		return
	}
	t.Logf("heap profile written to %s", path)
}

// TestScale: with many tenants loaded, a one-tenant edit is served by a real
// Envoy; how long that took, the translation time and the control plane's
// memory are logged (the numbers come from
// KAILASH_SCALE_TENANTS=10000; KAILASH_SCALE_ROUTES picks one mode).
func TestScale(t *testing.T) {
	n := scaleTenants(t)
	envoytest.Binary(t)
	for _, mode := range []struct{ routes, protocol string }{
		{config.RoutesPerTenant, config.XDSDelta},
		{config.RoutesSingle, config.XDSSotW},
	} {
		if only := os.Getenv("KAILASH_SCALE_ROUTES"); only != "" && only != mode.routes {
			continue
		}
		t.Run(mode.routes+"/"+mode.protocol, func(t *testing.T) { testScale(t, n, mode.routes, mode.protocol) })
	}
}

func testScale(t *testing.T, n int, routes, protocol string) {
	cfg := scaleConfig(t, n, routes, protocol)
	start := time.Now()
	xs := startXDS(t, cfg)
	t.Logf("%d tenants, %s routes: translation + first snapshot %s", n, routes, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	e := startNode(t, cfg, "scale-a", protocol)
	last := fmt.Sprintf("t%05d.localhost", n-1)
	testenv.Eventually(t, 120*time.Second, func() error {
		code, body, err := get(cfg.Envoy.Listen.String(), last)
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable {
			return fmt.Errorf("%s: %d %s", last, code, body)
		}
		return nil
	})
	t.Logf("%d tenants: Envoy (%s) started and serving the last tenant after %s", n, protocol, time.Since(start).Round(time.Millisecond))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	cur, peak := rss()
	t.Logf("%d tenants: control plane (test process) RSS %.0f MiB (peak %.0f MiB), Go heap in use %.0f MiB",
		n, cur, peak, float64(ms.HeapInuse)/(1<<20))
	if dir := os.Getenv("KAILASH_SCALE_PPROF"); dir != "" {
		writeHeapProfile(t, filepath.Join(dir, fmt.Sprintf("scale-%d-%s.heap", n, routes)))
	}

	// Deactivate one tenant: served (503 from the fail-closed ext_authz)
	// becomes refused at the edge (403 naming the tenant). Another tenant
	// keeps being served throughout.
	var worst time.Duration
	for round, i := range []int{n / 2, n / 3, n - 2} {
		host := fmt.Sprintf("t%05d.localhost", i)
		next := deactivated(cfg, i)
		edited := time.Now()
		if err := xs.Update(next); err != nil {
			t.Fatal(err)
		}
		published := time.Since(edited)
		var served time.Duration
		for {
			code, body, err := get(cfg.Envoy.Listen.String(), host)
			if err == nil && code == http.StatusForbidden && strings.Contains(body, "inactive") {
				served = time.Since(edited)
				break
			}
			if time.Since(edited) > 30*time.Second {
				t.Fatalf("%s not refused 30s after the edit (Update took %s; Envoy applied route version %q, control plane serves %s): %d %s %v",
					host, published.Round(time.Millisecond), e.routesVersion(cfg, fmt.Sprintf("t%05d", i)), xs.Version(), code, body, err)
			}
			time.Sleep(2 * time.Millisecond)
		}
		t.Logf("%d tenants, %s routes over %s, edit %d: Update (translate+hash+snapshot) %s, served by Envoy %s after the edit",
			n, routes, protocol, round+1, published.Round(time.Millisecond), served.Round(time.Millisecond))
		worst = max(worst, served)
		cfg = next
		other := fmt.Sprintf("t%05d.localhost", (i+1)%n)
		if code, body, err := get(cfg.Envoy.Listen.String(), other); err != nil || code != http.StatusServiceUnavailable {
			t.Errorf("untouched tenant %s after the edit: %d %q %v", other, code, body, err)
		}
	}
	if code, body, err := get(cfg.Envoy.Listen.String(), "nobody.example"); err != nil || code != http.StatusNotFound || body != "unknown host\n" {
		t.Errorf("unknown host: %d %q %v", code, body, err)
	}
	if e.proc.Pid() == 0 {
		t.Fatal("no envoy")
	}
	t.Logf("%d tenants, %s routes over %s: worst one-tenant edit served after %s (issue target < 1s at 10,000)",
		n, routes, protocol, worst.Round(time.Millisecond))
}

// TestTwoEnvoys: two Envoys, separate nodes of one control plane (one over
// delta xDS, one over state of the world), both serve a tenant edit within
// 1s (the requirement; generous next to the milliseconds it takes). They share the listener address (Envoy binds with
// SO_REUSEPORT and the kernel spreads connections over both), as a fleet
// behind one address would; each Envoy's applied route version is read from
// its own admin interface, and requests on fresh connections must all see
// the edit.
func TestTwoEnvoys(t *testing.T) {
	testenv.SkipShort(t, "two Envoys")
	envoytest.Binary(t)
	cfg := scaleConfig(t, 200, config.RoutesPerTenant, config.XDSDelta)
	xs := startXDS(t, cfg)
	var envoys [2]*scaleEnvoy
	var wg sync.WaitGroup
	for i, node := range []string{"fleet-delta", "fleet-sotw"} {
		protocol := []string{config.XDSDelta, config.XDSSotW}[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			envoys[i] = startNode(t, cfg, node, protocol)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	const victim = 42
	tenant := fmt.Sprintf("t%05d", victim)
	var was [2]string
	for i, e := range envoys {
		testenv.Eventually(t, 60*time.Second, func() error {
			if was[i] = e.routesVersion(cfg, tenant); was[i] == "" {
				return fmt.Errorf("%s has no routes for %s yet", e.node, tenant)
			}
			return nil
		})
	}
	reqs := func(e *scaleEnvoy) int {
		n, _ := strconv.Atoi(e.stat("http.ingress_http.downstream_rq_total"))
		return n
	}
	before := [2]int{reqs(envoys[0]), reqs(envoys[1])}

	host := tenant + ".localhost"
	if code, _, err := get(cfg.Envoy.Listen.String(), host); err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("before the edit: %d %v", code, err)
	}
	edited := time.Now()
	if err := xs.Update(deactivated(cfg, victim)); err != nil {
		t.Fatal(err)
	}
	var applied [2]time.Duration
	for applied[0] == 0 || applied[1] == 0 {
		for i, e := range envoys {
			if applied[i] == 0 && e.routesVersion(cfg, tenant) != was[i] {
				applied[i] = time.Since(edited)
			}
		}
		if time.Since(edited) > 10*time.Second {
			t.Fatalf("not applied by both Envoys 10s after the edit: %v", applied)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("edit applied by %s after %s and by %s after %s", envoys[0].node, applied[0].Round(time.Millisecond),
		envoys[1].node, applied[1].Round(time.Millisecond))
	for i, d := range applied {
		if d > time.Second {
			t.Errorf("%s applied the edit after %s (target < 1s)", envoys[i].node, d.Round(time.Millisecond))
		}
	}
	// Every connection, whichever Envoy the kernel gives it to, sees the edit.
	for range 60 {
		code, body, err := get(cfg.Envoy.Listen.String(), host)
		if err != nil || code != http.StatusForbidden || !strings.Contains(body, "inactive") {
			t.Fatalf("after the edit: %d %q %v", code, body, err)
		}
	}
	for i, e := range envoys {
		if reqs(e) == before[i] {
			t.Logf("note: the kernel gave no connection to %s; its admin version check stands alone", e.node)
		}
	}
}
