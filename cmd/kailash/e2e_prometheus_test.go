package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/monitoring"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// exporterMetrics come from the standard exporters, not from Kailash
// (deploy/prometheus/kailash-exporter-alerts.yaml documents which).
var exporterMetrics = map[string]bool{"pg_up": true, "redis_up": true}

// quietPanel reports whether a dashboard query shows nothing on a healthy
// stack with a few requests (it counts events the test does not cause).
func quietPanel(q string) bool {
	// The runner's quota refusals (limit_*).
	for _, m := range []string{`outcome=~"limit_.*"`} {
		if strings.Contains(q, m) {
			return true
		}
	}
	return false
}

// monitoredNames are the metric names the dashboards and alert rules use,
// minus the recording rules' own names (they must be defined by a rule).
func monitoredNames(t *testing.T) (names map[string][]string, recorded map[string]bool) {
	t.Helper()
	var exprs []monitoring.Expr
	recorded = map[string]bool{}
	rules, err := filepath.Glob("../../deploy/prometheus/*-alerts.yaml")
	if err != nil || len(rules) == 0 {
		t.Fatalf("no rule files under deploy/prometheus (%v)", err)
	}
	for _, f := range rules {
		rf, err := monitoring.LoadRules(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				if r.Record != "" {
					recorded[r.Record] = true
				}
			}
		}
		exprs = append(exprs, rf.Exprs(filepath.Base(f))...)
	}
	ds, err := monitoring.LoadDashboards("../../deploy/grafana/dashboards")
	if err != nil {
		t.Fatal(err)
	}
	for f, d := range ds {
		exprs = append(exprs, d.Exprs(filepath.Base(f))...)
	}
	names = map[string][]string{}
	for _, e := range exprs {
		for _, n := range monitoring.MetricNames(monitoring.Substitute(e.PromQL)) {
			if strings.Contains(n, ":") {
				if !recorded[n] {
					t.Errorf("%s uses %s, which no recording rule defines", e.Where, n)
				}
				continue
			}
			names[n] = append(names[n], e.Where)
		}
	}
	return names, recorded
}

// TestPrometheusScrapesEveryMonitoredMetric starts a real Prometheus
// (Debian's) that scrapes a running stack (xds, authz, runner, ratelimit
// and Envoy) with the alert rules loaded, sends requests that make the
// counters move, and checks that every metric name a dashboard or alert
// rule uses has series, that the rules load and evaluate without error,
// and that every component reports kailash_build_info.
func TestPrometheusScrapesEveryMonitoredMetric(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		testenv.Missing(t, "prometheus", "apt-get install prometheus (Debian)")
	}
	names, _ := monitoredNames(t)

	// A JWKS-by-URL issuer, so the JWKS metrics exist.
	jwks, err := os.ReadFile("../../examples/keys/dev.jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwks)
	}))
	t.Cleanup(idp.Close)
	own := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(own.Close)

	// The policy bundle from a directory, so it is watched and reloads count.
	bundle := t.TempDir()
	if err := os.CopyFS(bundle, os.DirFS("../../policies/bundle")); err != nil {
		t.Fatal(err)
	}
	dlog := filepath.Join(t.TempDir(), "decisions.log")
	rlGRPC, rlHTTP := testenv.FreeAddr(t), testenv.FreeAddr(t)
	p := freePorts(t)
	body := configYAML(t, p, "acme") + fmt.Sprintf(`  - id: quota
    domains: [quota.localhost]
    limits: {max_api_calls_per_day: 2}
    jwt: {issuer: %[1]s, audiences: [%[2]s], jwks_file: %[3]s}
  - id: own
    domains: [own.localhost]
    upstreams: [%[4]s]
    limits: {max_api_calls_per_day: 3}
    jwt: {issuer: %[1]s, audiences: [%[2]s], jwks_file: %[3]s}
  - id: idp
    domains: [idp.localhost]
    jwt: {issuer: %[5]s, audiences: [%[2]s], jwks_url: %[5]s/jwks.json}
ratelimit: {grpc: %[6]s, http: %[7]s, fail_mode: closed, timeout: 500ms}
policy:
  bundle: %[8]s
  decision_logs: {file: %[9]s}
`, issuer, audience, abs(t, "../../examples/keys/dev.jwks.json"), strings.TrimPrefix(own.URL, "http://"),
		idp.URL, rlGRPC, rlHTTP, bundle, dlog)
	s := startStackWith(t, stackOptions{ports: p, body: body})

	// Traffic: allowed, unauthenticated, denied, over quota, an own
	// upstream, a JWKS-by-URL issuer, a failed refresh; a bundle that does
	// not load, then one that does.
	alice := s.token(devtoken.Claims{Tenant: "acme", Subject: "alice", Roles: []string{"business_user"}})
	if r := s.mustDo("acme.localhost", alice, nil); r.code != 200 {
		t.Fatalf("allowed request: %d %s", r.code, r.body)
	}
	if r := s.mustDo("acme.localhost", "", nil); r.code != 401 {
		t.Fatalf("no token: %d %s; want 401", r.code, r.body)
	}
	nobody := s.token(devtoken.Claims{Tenant: "acme", Subject: "eve", Roles: []string{"nobody"}})
	if r := s.mustDo("acme.localhost", nobody, nil); r.code != 403 {
		t.Fatalf("role without rights: %d %s; want 403", r.code, r.body)
	}
	q := s.token(devtoken.Claims{Tenant: "quota", Subject: "alice", Roles: []string{"business_user"}})
	var codes []int
	for range 4 {
		codes = append(codes, s.mustDo("quota.localhost", q, nil).code)
	}
	if codes[len(codes)-1] != 429 {
		t.Fatalf("quota tenant answered %v; want the last one 429", codes)
	}
	o := s.token(devtoken.Claims{Tenant: "own", Subject: "alice", Roles: []string{"business_user"}})
	if r := s.mustDo("own.localhost", o, nil); r.code != 200 {
		t.Fatalf("own upstream: %d %s", r.code, r.body)
	}
	oNobody := s.token(devtoken.Claims{Tenant: "own", Subject: "eve", Roles: []string{"nobody"}})
	if r := s.mustDo("own.localhost", oNobody, nil); r.code != 403 {
		t.Fatalf("own tenant, role without rights: %d %s; want 403", r.code, r.body)
	}
	codes = codes[:0]
	for range 4 {
		codes = append(codes, s.mustDo("own.localhost", o, nil).code)
	}
	if codes[len(codes)-1] != 429 {
		t.Fatalf("own tenant answered %v; want the last one 429", codes)
	}
	ti := s.token(devtoken.Claims{Issuer: idp.URL, Tenant: "idp", Subject: "alice", Roles: []string{"business_user"}})
	if r := s.mustDo("idp.localhost", ti, nil); r.code != 200 {
		t.Fatalf("JWKS-by-URL tenant: %d %s", r.code, r.body)
	}
	if r := s.request("POST", "acme.localhost", "/auth/refresh", "", `{"refresh_token":"not-a-token"}`); r.code != 401 {
		t.Fatalf("bogus refresh: %d %s; want 401", r.code, r.body)
	}
	broken := filepath.Join(bundle, "kailash", "broken.rego")
	nackOnce(t, p.xds, p.xdsHTTP, "e2e-envoy")
	if err := os.WriteFile(broken, []byte("package kailash.broken\nthis is not rego\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	authzMetric := func(want string) func() error {
		return func() error {
			b, err := httpGet("http://" + p.authzHTTP + "/metrics")
			if err != nil {
				return err
			}
			if !strings.Contains(b, want) {
				return fmt.Errorf("authz /metrics has no %s yet", want)
			}
			return nil
		}
	}
	testenv.Eventually(t, 30*time.Second, authzMetric(`kailash_authz_policy_reloads_total{bundle="active",result="error"}`))
	if err := os.Remove(broken); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, authzMetric(`kailash_authz_policy_reloads_total{bundle="active",result="ok"}`))

	// Prometheus: its own data dir, a free loopback port, every component.
	dir := t.TempDir()
	promAddr := testenv.FreeAddr(t)
	var rules []string
	for _, f := range []string{"kailash-alerts.yaml", "kailash-exporter-alerts.yaml"} {
		rules = append(rules, abs(t, "../../deploy/prometheus/"+f))
	}
	job := func(name, addr, path string) string {
		return fmt.Sprintf("  - job_name: %s\n    metrics_path: %s\n    static_configs: [{targets: [%q]}]\n", name, path, addr)
	}
	cfg := "global: {scrape_interval: 1s, evaluation_interval: 1s}\nrule_files: [" + strings.Join(rules, ", ") + "]\nscrape_configs:\n" +
		job("kailash-xds", p.xdsHTTP, "/metrics") + job("kailash-authz", p.authzHTTP, "/metrics") +
		job("kailash-runner", p.runner, "/metrics") + job("kailash-ratelimit", rlHTTP, "/metrics") +
		job("envoy", s.admin, "/stats/prometheus")
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	startPrometheus(t, promBin, cfgPath, filepath.Join(dir, "data"), promAddr)
	api := "http://" + promAddr + "/api/v1/"

	// Every target up.
	testenv.Eventually(t, 60*time.Second, func() error {
		var res struct {
			ActiveTargets []struct {
				Labels    map[string]string `json:"labels"`
				Health    string            `json:"health"`
				LastError string            `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := promAPI(api+"targets", &res); err != nil {
			return err
		}
		if len(res.ActiveTargets) != 5 {
			return fmt.Errorf("%d targets; want 5", len(res.ActiveTargets))
		}
		for _, tg := range res.ActiveTargets {
			if tg.Health != "up" {
				return fmt.Errorf("target %s is %s: %s", tg.Labels["job"], tg.Health, tg.LastError)
			}
		}
		return nil
	})

	// Every monitored metric name has series in Prometheus.
	var missing []string
	testenv.Eventually(t, 60*time.Second, func() error {
		var have []string
		if err := promAPI(api+"label/__name__/values", &have); err != nil {
			return err
		}
		got := map[string]bool{}
		for _, n := range have {
			got[n] = true
		}
		missing = missing[:0]
		for n := range names {
			if !got[n] && !exporterMetrics[n] {
				missing = append(missing, n)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			var b strings.Builder
			for _, n := range missing {
				fmt.Fprintf(&b, "\n  %s (used by %s)", n, strings.Join(names[n], "; "))
			}
			return fmt.Errorf("metrics not in Prometheus:%s", b.String())
		}
		return nil
	})
	for n := range names {
		if exporterMetrics[n] {
			for _, w := range names[n] {
				if !strings.HasPrefix(w, "kailash-exporter-alerts.yaml") {
					t.Errorf("%s uses the exporter metric %s: only kailash-exporter-alerts.yaml may", w, n)
				}
			}
		}
	}

	// The Tenant dashboard's variable finds the tenant with its own
	// upstream, and every dashboard query, with the variables picked as a
	// user would, runs without error and shows data.
	var tenants []string
	if err := promAPI(api+"label/envoy_cluster_name/values?match[]="+url.QueryEscape(`envoy_cluster_upstream_rq_total{envoy_cluster_name=~"tenant_.+"}`), &tenants); err != nil {
		t.Fatal(err)
	}
	if strings.Join(tenants, ",") != "tenant_own" {
		t.Errorf("tenant variable values %v; want [tenant_own]", tenants)
	}
	ds, err := monitoring.LoadDashboards("../../deploy/grafana/dashboards")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"tenant": "own", "job": "kailash-.*"}
	testenv.Eventually(t, 60*time.Second, func() error {
		var empty []string
		for f, d := range ds {
			for _, e := range d.Exprs(filepath.Base(f)) {
				if strings.Contains(e.Where, ": variable ") {
					continue
				}
				var res struct {
					Result []json.RawMessage `json:"result"`
				}
				q := monitoring.SubstituteWith(e.PromQL, vars)
				if err := promAPI(api+"query?query="+url.QueryEscape(q), &res); err != nil {
					t.Fatalf("%s: %v", e.Where, err)
				}
				if len(res.Result) == 0 && !quietPanel(e.PromQL) {
					empty = append(empty, e.Where+": "+q)
				}
			}
		}
		if len(empty) > 0 {
			sort.Strings(empty)
			return fmt.Errorf("dashboard queries without data:\n  %s", strings.Join(empty, "\n  "))
		}
		return nil
	})

	// Every component says which build it runs.
	testenv.Eventually(t, 30*time.Second, func() error {
		var res struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		}
		if err := promAPI(api+"query?query="+url.QueryEscape(`count by (job) (kailash_build_info{version!="",goversion!=""})`), &res); err != nil {
			return err
		}
		var jobs []string
		for _, r := range res.Result {
			jobs = append(jobs, r.Metric["job"])
		}
		sort.Strings(jobs)
		if want := "kailash-authz kailash-ratelimit kailash-runner kailash-xds"; strings.Join(jobs, " ") != want {
			return fmt.Errorf("kailash_build_info from %v; want %s", jobs, want)
		}
		return nil
	})

	// The rules loaded, every one evaluated without error.
	testenv.Eventually(t, 60*time.Second, func() error {
		var res struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name           string `json:"name"`
					Health         string `json:"health"`
					LastError      string `json:"lastError"`
					LastEvaluation string `json:"lastEvaluation"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := promAPI(api+"rules", &res); err != nil {
			return err
		}
		n := 0
		for _, g := range res.Groups {
			for _, r := range g.Rules {
				n++
				if r.Health != "ok" {
					return fmt.Errorf("rule %s/%s: health %q %s", g.Name, r.Name, r.Health, r.LastError)
				}
			}
		}
		if n < 20 {
			return fmt.Errorf("%d rules loaded; want the rule files' 20 and more", n)
		}
		return nil
	})
}

// nackOnce NACKs the clusters the control plane at addr (metrics at
// httpAddr) sends, as an
// Envoy that refuses a configuration does (an error_detail naming the
// response's nonce), on an ADS stream of its own, then closes the stream.
func nackOnce(t *testing.T, addr, httpAddr, node string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := &corev3.Node{Id: node, Cluster: "kailash"}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatalf("ADS probe: %v", err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType, ResponseNonce: r.Nonce,
		ErrorDetail: &status.Status{Code: 3, Message: "e2e probe: configuration refused"}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		b, err := httpGet("http://" + httpAddr + "/metrics")
		if err != nil {
			return err
		}
		if !strings.Contains(b, "kailash_xds_nacks_total{") {
			return errors.New("no kailash_xds_nacks_total after the NACK")
		}
		return nil
	})
	_ = st.CloseSend()
}

// startPrometheus runs Prometheus until the test ends, then stops it by
// its pid (SIGTERM, SIGKILL after 10s).
func startPrometheus(t *testing.T, bin, cfg, data, addr string) {
	t.Helper()
	var logs testenv.LogBuffer
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+data, "--web.listen-address="+addr,
		"--storage.tsdb.retention.time=1h", "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
	testenv.Eventually(t, 60*time.Second, func() error {
		select {
		case <-done:
			t.Fatalf("prometheus exited: %s", logs.String())
		default:
		}
		_, err := httpGet("http://" + addr + "/-/ready")
		return err
	})
}

func httpGet(url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b), nil
}

// promAPI GETs a Prometheus HTTP API URL and decodes its data into v.
func promAPI(url string, v any) error {
	b, err := httpGet(url)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal([]byte(b), &env); err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s", url, env.Error)
	}
	return json.Unmarshal(env.Data, v)
}
