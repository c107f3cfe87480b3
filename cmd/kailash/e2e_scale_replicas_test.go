//go:build scale

package main

// The kill-anything scale test (issue 11, item 4; `make scale-test`, which
// `make test` runs): on one machine, as plain processes on loopback, 3
// Envoys (one listener address, SO_REUSEPORT), 2 `kailash xds`, 2 `kailash
// authz` (sessions in Redis), 2 `kailash ratelimit` (Redis backend), 2
// `kailash runner` (PostgreSQL, execution leases), one Redis, one
// PostgreSQL, one slapd. The replicated services are reached the way a
// Kubernetes Service reaches pods: one DNS name per service resolving to
// every replica (127.0.0.2 and 127.0.0.3, one port), served by a DNS
// server of the test that Envoy's resolver asks (scale_replicas_helpers_test.go).
//
// Under steady load through the Envoys, one process of each kind is killed
// with SIGKILL and restarted: an Envoy, an xds, an authz, a ratelimit, a
// runner. Asserted:
//   - no request without a valid token (none, garbage, expired, another
//     tenant's) ever gets a 2xx;
//   - no 5xx and no failed connection outside the kill windows (below);
//   - a per-tenant day quota of N counted by both ratelimit replicas on
//     one Redis, hit through all Envoys, gives N 200s within ±1%;
//   - a session issued by one authz replica (LDAP login on it directly) is
//     accepted while that replica is dead, so by the other;
//   - long executions running when a runner is killed end completed (on
//     the other) or interrupted naming the dead runner: none stays
//     running, none is lost;
//   - a tenant edit reaches all three Envoys (the time is logged; the
//     issue's "< 1 s" is reported, not asserted: tests never assert speed).
//
// The kill window of a kill is [kill, back + killGrace]: from the SIGKILL
// until killGrace after the restarted process is serving again. While a
// replica is down its address is still in DNS (as a pod's is until its
// readiness probe fails) and Envoy has no active health check of the
// internal clusters, so requests it routes there fail until it is back;
// killGrace covers Envoy's gRPC and HTTP connection pools reconnecting to
// the restarted replica. Outside every window nothing may fail. The 5xx
// inside each window, and how many requests were in flight at the kill,
// are logged.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

const (
	replicaA, replicaB = "127.0.0.2", "127.0.0.3"
	// killGrace: see the file comment.
	killGrace = 2 * time.Second
	// scaleQuota is the quota tenant's max_api_calls_per_day: a day
	// window never rolls over during the test, so the count is exact
	// whatever the box's speed.
	scaleQuota = 200
)

// scaleNet is the addresses of one scale test.
type scaleNet struct {
	listen                    string
	xds, xdsHTTP              [2]string
	authzPort, authzHTTPPort  string
	rlsPort, runnerPort       string
	redis, pgDSN, slow, wfDir string
	acmeLDAP                  func(string) string
}

// yaml is the config for one process: the service addresses are the DNS
// names (the shared file xds, ratelimit and Envoy read) or, for an authz
// or runner replica, that replica's own IP (its copy of the file, as a
// pod's config would bind its own address). extra are further tenants.
func (n *scaleNet) yaml(t *testing.T, authzHost, runnerHost, jwksHost string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `envoy: {listen: %s, node_id: scale, xds_addresses: [%s, %s]}
xds: {grpc: %s, http: %s}
authz: {grpc: "%s:%s", http: "%s:%s", timeout: 2s}
runner: {http: "%s:%s", workflows: %s, postgres_dsn: %q, lease_ttl: 2s, http_allow: [%q],
  identity_jwks: "http://%s:%s/auth/.well-known/jwks.json", identity_audience: kailash-runner}
ratelimit: {grpc: "ratelimit.kailash.test:%s", backend: redis, fail_mode: closed, timeout: 2s, redis: {addr: %s, timeout: 500ms}}
sessions: {redis: {addr: %s}}
lockout: {max_address_failures: 100000}
tenants:
`, n.listen, n.xds[0], n.xds[1], n.xds[0], n.xdsHTTP[0],
		authzHost, n.authzPort, authzHost, n.authzHTTPPort,
		runnerHost, n.runnerPort, n.wfDir, n.pgDSN, n.slow,
		jwksHost, n.authzHTTPPort, n.rlsPort, n.redis, n.redis)
	b.WriteString(n.acmeLDAP("acme"))
	b.WriteString("    limits: {per_user_per_hour: 1000000}\n")
	b.WriteString(tenantYAML(t, "quota"))
	fmt.Fprintf(&b, "    limits: {max_api_calls_per_day: %d}\n", scaleQuota)
	for _, id := range extra {
		b.WriteString(tenantYAML(t, id))
	}
	return b.String()
}

// scaleEnvoyProc is one of the Envoys, restartable on its bootstrap.
type scaleEnvoyProc struct {
	*scaleEnvoy
	boot   []byte
	cancel context.CancelFunc
}

func (e *scaleEnvoyProc) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	proc, err := envoy.Start(ctx, envoy.Options{Binary: envoytest.Binary(t), Bootstrap: e.boot, Log: testWriter{t}, Concurrency: 1})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	e.proc, e.cancel = proc, cancel
	t.Cleanup(func() { cancel(); <-proc.Done() })
	rctx, rcancel := context.WithTimeout(ctx, 90*time.Second)
	defer rcancel()
	if err := proc.WaitReady(rctx); err != nil {
		t.Fatal(err)
	}
}

// proc is a restartable kailash replica: the command line it was started
// with and how to tell it is serving again.
type scaleProc struct {
	*replica
	args  []string
	ready func(t *testing.T, r *replica)
}

func (p *scaleProc) start(t *testing.T) {
	t.Helper()
	p.replica.kailashProc = startKailash(t, p.args...)
	p.ready(t, p.replica)
}

func grpcReady(t *testing.T, r *replica) { r.waitReady(t) }

func httpReady(t *testing.T, r *replica) {
	testenv.Eventually(t, 60*time.Second, func() error {
		select {
		case <-r.done:
			t.Fatalf("kailash %s exited: %v\n%s", r.name, r.err, r.out)
		default:
		}
		if code := httpStatus(r.http, "/readyz"); code != 200 {
			return fmt.Errorf("%s /readyz: %d", r.name, code)
		}
		return nil
	})
}

// kill is one SIGKILL and restart.
type kill struct {
	what             string
	at, back         time.Time
	inFlight, failed int
}

func TestScaleReplicas(t *testing.T) {
	envoytest.Binary(t)
	rd := testenv.StartRedis(t)
	pg := testenv.StartPostgres(t)
	sl := testenv.StartSlapd(t)
	upAddr, _ := slowUpstream(t)

	n := &scaleNet{
		listen:    testenv.FreeAddr(t),
		xds:       [2]string{testenv.FreeAddr(t), testenv.FreeAddr(t)},
		xdsHTTP:   [2]string{testenv.FreeAddr(t), testenv.FreeAddr(t)},
		authzPort: sharedPort(t, replicaA, replicaB), authzHTTPPort: sharedPort(t, replicaA, replicaB),
		rlsPort: sharedPort(t, replicaA, replicaB), runnerPort: sharedPort(t, replicaA, replicaB),
		redis: rd.Addr, pgDSN: pg.DSN, slow: upAddr, wfDir: t.TempDir(),
	}
	ldap := ldapTenantYAML(t, sl)
	ldap = strings.Replace(ldap, "    mfa:\n      roles: [admin]\n", "", 1)
	n.acmeLDAP = func(string) string { return ldap }
	hello, err := os.ReadFile("../../examples/workflows/hello.yaml")
	if err != nil {
		t.Fatal(err)
	}
	writeConfig(t, filepath.Join(n.wfDir, "hello.yaml"), string(hello))
	// long: one http node waiting 6s on the upstream, to be running when
	// its runner is killed.
	writeConfig(t, filepath.Join(n.wfDir, "long.yaml"), fmt.Sprintf(`name: long
nodes:
  - id: wait
    type: http
    config:
      url: http://%s/long
      headers: {x-test-slow: 6s}
`, upAddr))

	dir := t.TempDir()
	shared := filepath.Join(dir, "kailash.yaml")
	authzFile := [2]string{filepath.Join(dir, "authz-a.yaml"), filepath.Join(dir, "authz-b.yaml")}
	runnerFile := [2]string{filepath.Join(dir, "runner-a.yaml"), filepath.Join(dir, "runner-b.yaml")}
	ips := [2]string{replicaA, replicaB}
	writeAll := func(extra ...string) {
		// The replicas' own copies first, the one the control planes read
		// last: the edit is timed from that write.
		for i := range 2 {
			writeConfig(t, authzFile[i], n.yaml(t, ips[i], "runner.kailash.test", ips[i], extra...))
			writeConfig(t, runnerFile[i], n.yaml(t, "authz.kailash.test", ips[i], ips[i], extra...))
		}
		writeConfig(t, shared, n.yaml(t, "authz.kailash.test", "runner.kailash.test", replicaA, extra...))
	}
	writeAll()
	dns := testDNS(t, map[string][]net.IP{
		"authz.kailash.test":     {net.ParseIP(replicaA), net.ParseIP(replicaB)},
		"ratelimit.kailash.test": {net.ParseIP(replicaA), net.ParseIP(replicaB)},
		"runner.kailash.test":    {net.ParseIP(replicaA), net.ParseIP(replicaB)},
	})

	// The kailash processes, each kind's replica a and b.
	var procs []*scaleProc
	add := func(name, cmd, grpcAddr, httpAddr string, ready func(*testing.T, *replica), args ...string) *scaleProc {
		p := &scaleProc{replica: &replica{name: name, grpc: grpcAddr, http: httpAddr}, args: append([]string{cmd}, args...), ready: ready}
		procs = append(procs, p)
		return p
	}
	var xdsP, authzP, rlsP, runnerP [2]*scaleProc
	for i, ab := range []string{"a", "b"} {
		xdsP[i] = add("xds "+ab, "xds", n.xds[i], n.xdsHTTP[i], grpcReady, "-c", shared, "-grpc", n.xds[i], "-http", n.xdsHTTP[i])
		authzP[i] = add("authz "+ab, "authz", ips[i]+":"+n.authzPort, ips[i]+":"+n.authzHTTPPort, grpcReady, "-c", authzFile[i])
		rg, rh := ips[i]+":"+n.rlsPort, testenv.FreeAddr(t)
		rlsP[i] = add("ratelimit "+ab, "ratelimit", rg, rh, grpcReady, "-c", shared, "-grpc", rg, "-http", rh)
		runnerP[i] = add("runner "+ab, "runner", "", ips[i]+":"+n.runnerPort, httpReady, "-c", runnerFile[i])
	}
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.start(t) }()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	cfg := loadConfig(t, shared)
	envoys := make([]*scaleEnvoyProc, 3)
	for i := range envoys {
		c := *cfg
		c.Envoy.NodeID, c.Envoy.Admin = fmt.Sprintf("scale-%d", i), config.MustHostPort(testenv.FreeAddr(t))
		boot, err := envoy.Bootstrap(&c)
		if err != nil {
			t.Fatal(err)
		}
		envoys[i] = &scaleEnvoyProc{scaleEnvoy: &scaleEnvoy{node: c.Envoy.NodeID, admin: c.Envoy.Admin.String()}, boot: withResolver(boot, dns)}
		wg.Add(1)
		go func() { defer wg.Done(); envoys[i].start(t) }()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Tokens: acme's (dev key), the quota tenant's, and the bad ones.
	acmeTok := "Bearer " + tokenFor(t, "acme", "alice")
	quotaTok := "Bearer " + tokenFor(t, "quota", "quinn")
	expired := "Bearer " + mintAt(t, "acme", "alice", time.Now().Add(-3*time.Hour))
	bad := []string{"", "Bearer not-a-jwt", expired, "Bearer " + tokenFor(t, "globex", "gina"), "Basic YWxpY2U6YWxpY2UtcHc="}

	serveOK200 := func(host, auth string) {
		t.Helper()
		testenv.Eventually(t, 90*time.Second, func() error {
			for _, e := range envoys {
				select {
				case <-e.proc.Done():
					t.Fatalf("Envoy %s exited", e.node)
				default:
				}
			}
			code, body, err := send(n.listen, "POST", host, "/v1/workflows/hello/executions", auth, "{}")
			if err != nil || code != 200 {
				return fmt.Errorf("%s: %d %v %.200s", host, code, err, body)
			}
			return nil
		})
	}
	serveOK200("acme.localhost", acmeTok)

	// A session issued by authz a: LDAP login on its own HTTP address.
	code, body, err := sendTo("http://"+authzP[0].http+"/auth/login", "acme.localhost", `{"username":"bob","password":"bob-pw"}`)
	var login struct {
		Access string `json:"access_token"`
	}
	if err != nil || code != 200 || json.Unmarshal(body, &login) != nil || login.Access == "" {
		t.Fatalf("LDAP login on authz a: %d %v %.300s", code, err, body)
	}
	sessTok := "Bearer " + login.Access
	serveOK200("acme.localhost", sessTok)
	t.Logf("stack up: 3 Envoys, 2 xds, 2 authz, 2 ratelimit, 2 runners, Redis, PostgreSQL, slapd")

	// The load: a few clients at a modest rate (2 cores).
	rec := &loadRecord{}
	ctx, stopLoad := context.WithCancel(context.Background())
	var lwg sync.WaitGroup
	client := func(kind string, every time.Duration, next func(i int) (host, auth string)) {
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				host, auth := next(i)
				o := outcome{kind: kind, start: time.Now()}
				o.code, _, o.err = send(n.listen, "POST", host, "/v1/workflows/hello/executions", auth, "{}")
				o.end = time.Now()
				rec.add(o)
				select {
				case <-ctx.Done():
				case <-time.After(every):
				}
			}
		}()
	}
	client("jwt", 100*time.Millisecond, func(int) (string, string) { return "acme.localhost", acmeTok })
	client("session", 100*time.Millisecond, func(int) (string, string) { return "acme.localhost", sessTok })
	client("bad", 100*time.Millisecond, func(i int) (string, string) { return "acme.localhost", bad[i%len(bad)] })
	client("quota", 120*time.Millisecond, func(int) (string, string) { return "quota.localhost", quotaTok })
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopLoad()
			lwg.Wait()
		}
	}
	defer stop()
	time.Sleep(3 * time.Second)

	var kills []*kill
	doKill := func(what string, pid int, done <-chan struct{}, restart func()) *kill {
		t.Helper()
		k := &kill{what: what}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %s: %v", what, err)
		}
		k.at = time.Now()
		<-done
		restart()
		k.back = time.Now()
		kills = append(kills, k)
		t.Logf("killed %s (SIGKILL), serving again after %s", what, k.back.Sub(k.at).Round(time.Millisecond))
		time.Sleep(killGrace + 2*time.Second) // steady load between kills
		return k
	}
	kp := func(p *scaleProc) { doKill("kailash "+p.name, p.cmd.Process.Pid, p.done, func() { p.start(t) }) }

	// 1. An Envoy.
	doKill("Envoy "+envoys[0].node, envoys[0].proc.Pid(), envoys[0].proc.Done(), func() { envoys[0].cancel(); envoys[0].start(t) })
	// 2. A control plane.
	kp(xdsP[0])
	// 3. The authz replica that issued the session: while it is down the
	// session must be accepted by the other.
	doKill("kailash "+authzP[0].name, authzP[0].cmd.Process.Pid, authzP[0].done, func() {
		// Down: the session is still good (authz b), on a fresh connection.
		for i := range 3 {
			if c, b, err := send(n.listen, "POST", "acme.localhost", "/v1/workflows/hello/executions", sessTok, "{}"); c == 401 || c == 403 {
				t.Errorf("with authz a dead, the session it issued: %d %v %.200s (try %d)", c, err, b, i+1)
			}
		}
		authzP[0].start(t)
	})
	// 4. A rate-limit replica.
	kp(rlsP[0])
	// 5. A runner, with long executions running on both.
	var longIDs []string
	for range 8 {
		c, b, err := send(n.listen, "POST", "acme.localhost", "/v1/workflows/long/executions?async=true", acmeTok, "{}")
		var r struct {
			ID string `json:"execution_id"`
		}
		if err != nil || c != 202 || json.Unmarshal(b, &r) != nil || r.ID == "" {
			t.Fatalf("starting a long execution: %d %v %.300s", c, err, b)
		}
		longIDs = append(longIDs, r.ID)
	}
	time.Sleep(time.Second)
	deadRunner := runnerP[0].cmd.Process.Pid
	kp(runnerP[0])

	// A tenant edit under load reaches all three Envoys.
	was := make([]string, len(envoys))
	for i, e := range envoys {
		was[i] = e.routesVersion(cfg, "late")
	}
	writeAll("late")
	edited := time.Now()
	applied := make([]time.Duration, len(envoys))
	for pending := len(envoys); pending > 0; {
		for i, e := range envoys {
			if applied[i] == 0 && e.routesVersion(cfg, "late") != was[i] {
				applied[i] = time.Since(edited)
				pending--
			}
		}
		if time.Since(edited) > 60*time.Second {
			t.Fatalf("the tenant edit not applied by every Envoy 60s after it: %v", applied)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("tenant edit applied by the Envoys after %v (issue target < 1s; logged, not asserted)", roundAll(applied))
	serveOK200("late.localhost", "Bearer "+tokenFor(t, "late", "lee"))

	// The long executions: each ended, completed or interrupted.
	statuses := map[string]int{}
	for _, id := range longIDs {
		var ex struct {
			Status, Error string
		}
		testenv.Eventually(t, 60*time.Second, func() error {
			c, b, err := send(n.listen, "GET", "acme.localhost", "/v1/workflows/long/executions/"+id, acmeTok, "")
			if err != nil || c != 200 {
				return fmt.Errorf("execution %s: %d %v %.200s", id, c, err, b)
			}
			if err := json.Unmarshal(b, &ex); err != nil {
				return err
			}
			if ex.Status == "running" {
				return fmt.Errorf("execution %s still running", id)
			}
			return nil
		})
		statuses[ex.Status]++
		switch ex.Status {
		case "completed":
		case "interrupted":
			if !strings.Contains(ex.Error, fmt.Sprintf("-%d-", deadRunner)) {
				t.Errorf("execution %s interrupted, but not as the killed runner's (pid %d): %q", id, deadRunner, ex.Error)
			}
		default:
			t.Errorf("execution %s ended %s: %s", id, ex.Status, ex.Error)
		}
	}
	t.Logf("long executions across the runner kill: %v", statuses)
	if statuses["interrupted"] == 0 {
		t.Errorf("no long execution was on the killed runner (%v): the takeover is not exercised", statuses)
	}
	if statuses["completed"] == 0 {
		t.Errorf("no long execution completed on the surviving runner (%v)", statuses)
	}
	// The quota must be reached whatever the box's speed (a fast run ends
	// its kills before the quota client sent scaleQuota requests): keep the
	// load on until the quota tenant is refused once, then judge the count.
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if slices.ContainsFunc(rec.snapshot(), func(o outcome) bool { return o.kind == "quota" && o.code == 429 }) {
			break
		}
	}
	stop()

	// The record.
	all := rec.snapshot()
	inWindow := func(o outcome) *kill {
		for _, k := range kills {
			if !o.end.Before(k.at) && o.start.Before(k.back.Add(killGrace)) {
				return k
			}
		}
		return nil
	}
	byKind := map[string]map[int]int{}
	var outside []string
	for _, o := range all {
		if byKind[o.kind] == nil {
			byKind[o.kind] = map[int]int{}
		}
		byKind[o.kind][o.code]++
		if o.kind == "bad" && o.code >= 200 && o.code < 300 {
			t.Errorf("a request with a bad token was allowed: %d at %s", o.code, o.start.Format(time.StampMilli))
		}
		if o.kind == "session" && (o.code == 401 || o.code == 403) {
			t.Errorf("the session was refused (%d) at %s", o.code, o.start.Format(time.StampMilli))
		}
		failed := o.code >= 500 || o.code == 0
		if !failed {
			continue
		}
		if k := inWindow(o); k != nil {
			k.failed++
			continue
		}
		outside = append(outside, fmt.Sprintf("%s %d %v at %s", o.kind, o.code, o.err, o.start.Format(time.StampMilli)))
	}
	for _, k := range kills {
		for _, o := range all {
			if o.start.Before(k.at) && o.end.After(k.at) {
				k.inFlight++
			}
		}
		t.Logf("kill %-16s down %6s: %d failed (5xx or no answer) in its window, %d requests in flight at the kill",
			k.what, k.back.Sub(k.at).Round(time.Millisecond), k.failed, k.inFlight)
	}
	t.Logf("%d requests: %v", len(all), byKind)
	if len(outside) > 0 {
		t.Errorf("%d failures outside the kill windows: %s", len(outside), strings.Join(first(outside, 20), "; "))
	}
	got := byKind["quota"][200]
	tol := max(1, scaleQuota/100)
	t.Logf("quota tenant: %d of %d allowed (limit %d per day, both ratelimit replicas on one Redis), %d refused 429",
		got, sumCodes(byKind["quota"]), scaleQuota, byKind["quota"][429])
	if got < scaleQuota-tol || got > scaleQuota+tol {
		t.Errorf("quota of %d across replicas allowed %d (want within ±%d)", scaleQuota, got, tol)
	}
	if byKind["quota"][429] == 0 {
		t.Errorf("the quota tenant was never refused: the quota was not reached, exactness unproved")
	}
	for _, e := range envoys {
		if r := e.stat("http.ingress_http.downstream_rq_total"); r == "" || r == "0" {
			t.Errorf("Envoy %s served no request (%q)", e.node, r)
		}
	}
}

// mintAt is a dev token for sub of tenant issued at (an hour's lifetime).
func mintAt(t *testing.T, tenant, sub string, at time.Time) string {
	t.Helper()
	pem, err := os.ReadFile("../../examples/keys/dev-signing-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	key, err := devtoken.Key(pem)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := devtoken.Mint(key, devtoken.Claims{Issuer: issuer, Audience: []string{audience}, Tenant: tenant, Subject: sub,
		Roles: []string{"business_user"}, TTL: time.Hour, Now: at})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// sendTo posts body as JSON to url with Host host, not through Envoy.
func sendTo(url, host, body string) (int, []byte, error) {
	addr := strings.TrimPrefix(url, "http://")
	addr, path, _ := strings.Cut(addr, "/")
	return send(addr, "POST", host, "/"+path, "", body)
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

func first(s []string, n int) []string {
	sort.Strings(s)
	if len(s) > n {
		return s[:n]
	}
	return s
}

func sumCodes(m map[int]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
