package main

// Scale through the tenant store (issue 12 items 2 and 3): N tenants in
// PostgreSQL (500 in `make test`, KAILASH_SCALE_TENANTS=100000 in `make
// bench`), `kailash xds` as a process of its own following the store, a real
// Envoy and 100 delta ADS clients (KAILASH_SCALE_CLIENTS). One stored
// tenant's change (suspend, resume, create, delete) is patched into the
// served snapshot — asserted on xds's kailash_xds_snapshot_builds_total: one
// full build, the start, and patches after — and reaches Envoy and every
// client as that tenant's resources alone, under one new version. The times
// and the xds process's memory (/proc/<pid>/status) are logged, never
// asserted.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/tenantstore"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/xds/translate"
)

// fanoutClient is one delta ADS client subscribed, as an Envoy in
// per-tenant mode is, to every tenant's route configuration. It ACKs every
// response and reports each on got, with when its ACK was sent.
type fanoutClient struct {
	got chan fanoutResponse
}

type fanoutResponse struct {
	version string
	names   []string // resources sent
	removed []string
	acked   time.Time
}

func newFanoutClient(ctx context.Context, t *testing.T, addr, node string, names []string) (*fanoutClient, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = conn.Close() })
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err == nil {
		err = st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.RouteType, ResourceNamesSubscribe: names})
	}
	if err != nil {
		return nil, err
	}
	c := &fanoutClient{got: make(chan fanoutResponse, 16)}
	go func() {
		defer close(c.got)
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce}); err != nil {
				return
			}
			out := fanoutResponse{version: r.SystemVersionInfo, removed: r.RemovedResources, acked: time.Now()}
			// Names only: the test's memory stays small.
			for _, res := range r.Resources {
				out.names = append(out.names, res.Name)
			}
			c.got <- out
		}
	}()
	return c, nil
}

// next is the client's next response (acked already).
func (c *fanoutClient) next(within time.Duration) (fanoutResponse, error) {
	select {
	case r, ok := <-c.got:
		if !ok {
			return r, fmt.Errorf("stream ended")
		}
		return r, nil
	case <-time.After(within):
		return fanoutResponse{}, fmt.Errorf("no response within %s", within)
	}
}

// storeTenantDoc is tenant id's stored document: the edge features of
// scaleConfig, a JWT issuer (required), two exact domains.
func storeTenantDoc(id string) string {
	return fmt.Sprintf(`{"id": %q, "domains": ["%s.localhost", "www.%s.example.net"], "cors": {"allow_origins": ["https://app.%s.example.com"]}, `+
		`"ip_allowlist": ["127.0.0.0/8", "10.0.0.0/8"], "limits": {"requests_per_second": 1000, "burst": 2000}, `+
		`"jwt": {"issuer": "https://issuer.example", "audiences": ["kailash"], "jwks_file": "k.json"}}`, id, id, id, id)
}

// loadTenants writes n tenants straight into the store's tables (COPY: the
// admin API would take minutes for 100,000), as the store itself writes
// them.
func loadTenants(t *testing.T, dsn string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := tenantstore.Open(ctx, dsn) // creates the tables
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	now := time.Now().UTC()
	rows := make([][]any, 0, n)
	domains := make([][]any, 0, 2*n)
	for i := range n {
		id := fmt.Sprintf("t%05d", i)
		rows = append(rows, []any{id, storeTenantDoc(id), false, int64(1), now, now, "bench@load"})
		domains = append(domains, []any{id + ".localhost", id}, []any{"www." + id + ".example.net", id})
	}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"kailash_tenants"},
		[]string{"id", "document", "suspended", "version", "created_at", "updated_at", "updated_by"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"kailash_tenant_domains"}, []string{"domain", "tenant"}, pgx.CopyFromRows(domains)); err != nil {
		t.Fatal(err)
	}
}

// procMem is a process's resident set and its peak (VmRSS, VmHWM), in MiB.
func procMem(pid int) (cur, peak float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1, -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			cur = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return cur, peak
}

// xdsMetric is the value of one sample of xds's /metrics (-1 when absent).
func xdsMetric(t *testing.T, addr, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// median of ds (nil: 0).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func TestScaleTenantStore(t *testing.T) {
	n := scaleTenants(t)
	clients := 100
	if v := os.Getenv("KAILASH_SCALE_CLIENTS"); v != "" {
		var err error
		if clients, err = strconv.Atoi(v); err != nil || clients < 0 {
			t.Fatalf("KAILASH_SCALE_CLIENTS=%q", v)
		}
	}
	envoytest.Binary(t)
	pg := testenv.StartPostgres(t)
	start := time.Now()
	loadTenants(t, pg.DSN, n)
	t.Logf("%d tenants: stored (COPY) in %s", n, time.Since(start).Round(time.Millisecond))

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.json"), []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	a := func() string { return testenv.FreeAddr(t) }
	envoyAddr, admin, xdsGRPC, xdsHTTP := a(), a(), a(), a()
	path := filepath.Join(dir, "kailash.yaml")
	// ext_authz's address has no listener: an active tenant is refused with
	// 503 (fail closed), a suspended one with 403 at the edge, an unknown
	// host with 404; no authorization is needed to see an edit served.
	writeConfig(t, path, fmt.Sprintf(`envoy: {listen: %s, admin: %s, node_id: scale-envoy, routes: per_tenant, xds_protocol: delta, access_log: "off"}
xds: {grpc: %s, http: %s}
authz: {grpc: %s, http: %s, timeout: 20ms}
runner: {http: %s}
tenant_store: {postgres_dsn: %q, admin_tenant: ops, resync: 10m}
tenants:
  - id: ops
    domains: [ops.localhost]
    jwt: {issuer: "https://issuer.example", audiences: [kailash], jwks_file: k.json}
`, envoyAddr, admin, xdsGRPC, xdsHTTP, a(), a(), a(), pg.DSN))

	// Start → the gRPC port answers: read the store, decode, compose,
	// translate, first snapshot (xds binds its ports after it).
	// KAILASH_SCALE_PPROF=dir: heap profiles of the xds process at each
	// stage (go tool pprof -sample_index=inuse_space dir/xds-*.heap).
	profDir := os.Getenv("KAILASH_SCALE_PPROF")
	var env []string
	pprofAddr := ""
	if profDir != "" {
		pprofAddr = a()
		env = append(env, helperPprofEnv+"="+pprofAddr)
	}
	profile := func(stage string) {
		if profDir == "" {
			return
		}
		t.Helper()
		resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/heap?gc=1")
		if err == nil {
			var f *os.File
			if f, err = os.Create(filepath.Join(profDir, fmt.Sprintf("xds-%d-%s.heap", n, stage))); err == nil {
				_, err = io.Copy(f, resp.Body)
				err = errors.Join(err, f.Close())
			}
			_ = resp.Body.Close()
		}
		if err != nil {
			t.Errorf("heap profile %s: %v", stage, err)
		}
	}

	// cpuProfile starts a CPU profile of the xds process (seconds long);
	// the function it returns waits for it.
	cpuProfile := func(stage string, seconds int) func() {
		if profDir == "" {
			return func() {}
		}
		done := make(chan error, 1)
		go func() {
			resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, seconds))
			if err == nil {
				var f *os.File
				if f, err = os.Create(filepath.Join(profDir, fmt.Sprintf("xds-%d-%s.cpu", n, stage))); err == nil {
					_, err = io.Copy(f, resp.Body)
					err = errors.Join(err, f.Close())
				}
				_ = resp.Body.Close()
			}
			done <- err
		}()
		return func() {
			if err := <-done; err != nil {
				t.Errorf("CPU profile %s: %v", stage, err)
			}
		}
	}

	start = time.Now()
	x := startKailashEnv(t, env, "xds", "-c", path)
	pid := x.cmd.Process.Pid
	for {
		if c, err := net.DialTimeout("tcp", xdsGRPC, time.Second); err == nil {
			_ = c.Close()
			break
		}
		select {
		case <-x.done:
			t.Fatalf("kailash xds exited: %v\n%s", x.err, x.out)
		default:
		}
		if time.Since(start) > 5*time.Minute {
			t.Fatalf("xds not listening after 5 minutes\n%s", x.out)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ready := time.Since(start)
	build := xdsMetric(t, xdsHTTP, "kailash_xds_snapshot_build_seconds_sum")
	cur, peak := procMem(pid)
	t.Logf("%d tenants: xds start → serving %s (of which translate + first snapshot %.3fs); xds RSS %.0f MiB (peak %.0f MiB)",
		n, ready.Round(time.Millisecond), build, cur, peak)
	profile("first-snapshot")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st, err := tenantstore.Open(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	start = time.Now()
	startNode(t, loadConfig(t, path), "scale-envoy", config.XDSDelta)
	last := fmt.Sprintf("t%05d.localhost", n-1)
	testenv.Eventually(t, 10*time.Minute, func() error {
		if code, body, err := get(envoyAddr, last); err != nil || code != http.StatusServiceUnavailable {
			return fmt.Errorf("%s: %d %s %v", last, code, body, err)
		}
		return nil
	})
	t.Logf("%d tenants: Envoy started and serving the last tenant after %s", n, time.Since(start).Round(time.Millisecond))

	// edit changes one stored tenant and returns how long until Envoy
	// answers its host with want, polled with requests (authz.timeout is
	// 20ms: each 503 of the old route waits it out, so that is the
	// resolution). Not Envoy's admin interface: at 100,000 tenants one
	// /stats query takes seconds of Envoy's main thread, which applies xDS.
	wait := func(what, host string, want int, since time.Time) time.Duration {
		t.Helper()
		for {
			code, body, err := get(envoyAddr, host)
			if err == nil && code == want {
				return time.Since(since)
			}
			if time.Since(since) > 60*time.Second {
				t.Fatalf("%s: %s still %d %q %v 60s after the change", what, host, code, body, err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	edit := func(what, id string, want int, change func() error) time.Duration {
		t.Helper()
		edited := time.Now()
		if err := change(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return wait(what, id+".localhost", want, edited)
	}
	suspend := func(i int, on bool) func() error {
		return func() error {
			_, err := st.SetSuspended(ctx, fmt.Sprintf("t%05d", i), on, 0, "bench@scale", time.Now())
			return err
		}
	}
	// Envoy applies its responses in order: once a change is served, the
	// initial sync is behind it, and the edits below are timed alone.
	d := edit("warm-up", fmt.Sprintf("t%05d", n-2), http.StatusForbidden, suspend(n-2, true))
	t.Logf("%d tenants: first store edit (behind Envoy's initial sync) served after %s", n, d.Round(time.Millisecond))
	cur, peak = procMem(pid)
	t.Logf("%d tenants, Envoy synced: xds RSS %.0f MiB (peak %.0f MiB)", n, cur, peak)
	profile("envoy-synced")

	// One-tenant edits through the store → served by Envoy.
	waitCPU := cpuProfile("edits", 10)
	var served []time.Duration
	for k, i := range []int{n / 2, n / 3, n / 4, n / 5, n / 6} {
		id := fmt.Sprintf("t%05d", i)
		d := edit("suspend", id, http.StatusForbidden, suspend(i, true))
		served = append(served, d)
		t.Logf("%d tenants, store edit %d (suspend %s): served by Envoy after %s", n, k+1, id, d.Round(time.Millisecond))
		if code, _, err := get(envoyAddr, fmt.Sprintf("t%05d.localhost", i+1)); err != nil || code != http.StatusServiceUnavailable {
			t.Errorf("untouched tenant t%05d after the edit: %d %v", i+1, code, err)
		}
	}
	waitCPU()
	// A tenant created, then deleted, through the store.
	doc := storeTenantDoc("fresh")
	tenant, err := config.ParseTenant("fresh", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	created := edit("create", "fresh", http.StatusServiceUnavailable, func() error {
		_, err := st.Create(ctx, json.RawMessage(doc), tenant, "bench@scale", time.Now())
		return err
	})
	deleted := edit("delete", "fresh", http.StatusNotFound, func() error { _, err := st.Delete(ctx, "fresh", 0); return err })
	t.Logf("%d tenants: tenant created through the store served by Envoy after %s, deleted → 404 after %s",
		n, created.Round(time.Millisecond), deleted.Round(time.Millisecond))

	// Every change was a patch: one full build (the start).
	full := xdsMetric(t, xdsHTTP, `kailash_xds_snapshot_builds_total{how="full"}`)
	patched := xdsMetric(t, xdsHTTP, `kailash_xds_snapshot_builds_total{how="patch"}`)
	if full != 1 || patched < 8 {
		t.Fatalf("xds snapshot builds: %v full, %v patch; want 1 full (the start) and every store change (8) a patch", full, patched)
	}
	cur, peak = procMem(pid)
	t.Logf("%d tenants: one-tenant store edit → served by Envoy: median %s of %d (%v); xds RSS %.0f MiB (peak %.0f MiB)",
		n, median(served).Round(time.Millisecond), len(served), served, cur, peak)
	profile("edits")
	if clients == 0 {
		return
	}

	// The same edit fanned out: clients delta ADS streams besides Envoy,
	// each subscribed to every tenant's route configuration. They connect
	// one at a time (each first response is every route configuration: at
	// 100,000 tenants, hundreds of MB marshalled per client).
	names := make([]string, 0, n+1)
	names = append(names, translate.TenantRouteConfigName("ops"))
	for i := range n {
		names = append(names, translate.TenantRouteConfigName(fmt.Sprintf("t%05d", i)))
	}
	start = time.Now()
	cs := make([]*fanoutClient, clients)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 1)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := newFanoutClient(ctx, t, xdsGRPC, fmt.Sprintf("fanout-%03d", i), names)
			if err != nil {
				t.Errorf("client %d: %v", i, err)
				return
			}
			for got := 0; got < len(names); {
				r, err := c.next(10 * time.Minute)
				if err != nil {
					t.Errorf("client %d: %v", i, err)
					return
				}
				got += len(r.names)
			}
			cs[i] = c
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	cur, peak = procMem(pid)
	t.Logf("%d tenants: %d delta ADS clients connected and synced (every route configuration each) after %s; xds RSS %.0f MiB (peak %.0f MiB)",
		n, clients, time.Since(start).Round(time.Millisecond), cur, peak)
	profile("clients-synced")

	var fanned, envoyServed []time.Duration
	seen := map[string]bool{}
	for k, i := range []int{n/2 + 1, n/3 + 1, n/4 + 1} {
		id := fmt.Sprintf("t%05d", i)
		want := translate.TenantRouteConfigName(id)
		edited := time.Now()
		if err := suspend(i, true)(); err != nil {
			t.Fatal(err)
		}
		versions := make([]string, clients)
		var mu sync.Mutex
		var lastAck time.Time
		for j, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := c.next(60 * time.Second)
				if err != nil {
					t.Errorf("client %d after the edit: %v", j, err)
					return
				}
				if len(r.names) != 1 || r.names[0] != want || len(r.removed) != 0 {
					t.Errorf("client %d after the edit: sent %v, removed %v; want %s alone", j, r.names, r.removed, want)
				}
				versions[j] = r.version
				mu.Lock()
				if r.acked.After(lastAck) {
					lastAck = r.acked
				}
				mu.Unlock()
			}()
		}
		// Envoy, meanwhile.
		ed := wait("fanned-out edit", id+".localhost", http.StatusForbidden, edited)
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		if uniq := slices.Compact(slices.Sorted(slices.Values(versions))); len(uniq) != 1 || uniq[0] == "" || seen[uniq[0]] {
			t.Fatalf("after the edit the clients have versions %v (want one, new: seen %v)", uniq, seen)
		}
		seen[versions[0]] = true
		all := lastAck.Sub(edited)
		fanned, envoyServed = append(fanned, all), append(envoyServed, ed)
		t.Logf("%d tenants, %d clients, fanned-out edit %d (suspend %s): all %d ACKed version %s after %s; Envoy served it after %s",
			n, clients, k+1, id, clients, versions[0], all.Round(time.Millisecond), ed.Round(time.Millisecond))
	}
	cur, peak = procMem(pid)
	t.Logf("%d tenants, %d ADS clients + Envoy: one-tenant store edit ACKed by all clients: median %s of %d (%v); served by Envoy: median %s; xds RSS %.0f MiB (peak %.0f MiB)",
		n, clients, median(fanned).Round(time.Millisecond), len(fanned), fanned, median(envoyServed).Round(time.Millisecond), cur, peak)
	if full := xdsMetric(t, xdsHTTP, `kailash_xds_snapshot_builds_total{how="full"}`); full != 1 {
		t.Fatalf("xds snapshot builds: %v full after the fanned-out edits, want 1", full)
	}
}
