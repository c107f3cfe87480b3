package main

// End-to-end tests of the HTTPS listener through a real Envoy: the tenant's
// certificate chosen by SNI and delivered over SDS, TLS 1.2 refused when the
// minimum is 1.3, the plain listener redirecting to HTTPS, a rotated
// certificate served without restarting Envoy, and the /auth/ login route
// reaching the authz HTTP address without ext_authz, with the tenant header
// set by Envoy.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/devcert"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/xds"
)

// startStackFrom starts the whole product like startStack, from a config
// file body. xdsCfg, when not nil, adjusts the config the control plane
// (only) is built from.
func startStackFrom(t *testing.T, p ports, body string, xdsCfg func(*config.Config)) (*stack, *xds.Server) {
	t.Helper()
	s := startStackWith(t, stackOptions{ports: p, body: body, xdsCfg: xdsCfg})
	return s, s.xds
}

// tlsTenantYAML is a tenant with a certificate.
func tlsTenantYAML(t testing.TB, id, cert, key string) string {
	return tenantYAML(t, id) + fmt.Sprintf("    tls: {cert_file: %s, key_file: %s}\n", cert, key)
}

// handshake connects to addr with SNI name and returns the server's leaf.
func handshake(addr, name string, cfg *tls.Config) (*tls.ConnectionState, error) {
	c := cfg.Clone()
	c.ServerName = name
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, c)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	st := conn.ConnectionState()
	return &st, nil
}

// httpsClient sends every request to addr, whatever the URL's host, with
// the URL's host as SNI and Host (as DNS pointing at Envoy would).
func httpsClient(addr string, roots *tls.Config) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   roots.Clone(),
			ForceAttemptHTTP2: true,
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// TestTLS runs with per-tenant routes (the default for exact domains) and
// with one route table: the redirect is built differently in each.
func TestTLS(t *testing.T) {
	for _, routes := range []string{config.RoutesPerTenant, config.RoutesSingle} {
		t.Run(routes, func(t *testing.T) { testTLS(t, routes) })
	}
}

func testTLS(t *testing.T, routes string) {
	ca, err := devcert.NewCA("kailash e2e CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string][2]string{}
	for _, id := range []string{"acme", "globex"} {
		pair, err := ca.Issue(time.Hour, id+".localhost")
		if err != nil {
			t.Fatal(err)
		}
		c, k, err := pair.Write(dir, id)
		if err != nil {
			t.Fatal(err)
		}
		files[id] = [2]string{c, k}
	}
	p := freePorts(t)
	httpsAddr := testenv.FreeAddr(t)
	body := configYAML(t, p, "initech") + tlsTenantYAML(t, "acme", files["acme"][0], files["acme"][1]) +
		tlsTenantYAML(t, "globex", files["globex"][0], files["globex"][1]) +
		fmt.Sprintf("tls: {listen: %s, redirect_http: true}\n", httpsAddr)

	// The login endpoints: the control plane routes /auth/ to this
	// recorder instead of the authz server's HTTP address.
	var authMu sync.Mutex
	var authSeen []http.Header
	authLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	authSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authMu.Lock()
		authSeen = append(authSeen, r.Header.Clone())
		authMu.Unlock()
		fmt.Fprintf(w, "login page for %s", r.Header.Get("X-Kailash-Tenant"))
	})}
	go func() { _ = authSrv.Serve(authLn) }()
	t.Cleanup(func() { _ = authSrv.Close() })

	s, _ := startStackFrom(t, p, body, func(c *config.Config) {
		c.Authz.HTTP = config.MustHostPort(authLn.Addr().String())
		c.Envoy.Routes = routes
	})
	roots := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}

	// The HTTPS listener warms until its secrets arrive over SDS.
	testenv.Eventually(t, 20*time.Second, func() error {
		_, err := handshake(httpsAddr, "acme.localhost", roots)
		return err
	})

	t.Run("SNI picks each tenant's certificate", func(t *testing.T) {
		for _, id := range []string{"acme", "globex"} {
			st, err := handshake(httpsAddr, id+".localhost", roots)
			if err != nil {
				t.Fatalf("%s: %v", id, err)
			}
			leaf := st.PeerCertificates[0]
			if leaf.Subject.CommonName != id+".localhost" || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != id+".localhost" {
				t.Fatalf("SNI %s.localhost got CN %q SANs %v", id, leaf.Subject.CommonName, leaf.DNSNames)
			}
			if st.Version != tls.VersionTLS13 {
				t.Errorf("%s: negotiated %s, want TLS 1.3", id, tls.VersionName(st.Version))
			}
		}
		if _, err := handshake(httpsAddr, "nobody.localhost", &tls.Config{InsecureSkipVerify: true}); err == nil {
			t.Fatal("a name no tenant serves got a certificate")
		}
		if _, err := handshake(httpsAddr, "initech.localhost", &tls.Config{InsecureSkipVerify: true}); err == nil {
			t.Fatal("a tenant without a certificate got one")
		}
	})

	t.Run("TLS 1.2 client is refused", func(t *testing.T) {
		_, err := handshake(httpsAddr, "acme.localhost", &tls.Config{RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS12})
		if err == nil {
			t.Fatal("a TLS 1.2-only client completed a handshake; the minimum is 1.3")
		}
		t.Logf("TLS 1.2 refused: %v", err)
	})

	hc := httpsClient(httpsAddr, roots)
	alice := s.token(devtoken.Claims{Tenant: "acme", Subject: "alice", Roles: []string{"business_user"}})

	t.Run("request over HTTPS is authorized and served", func(t *testing.T) {
		for _, proto := range []string{"h2", "http/1.1"} {
			c := httpsClient(httpsAddr, roots)
			tr := c.Transport.(*http.Transport)
			if proto == "http/1.1" {
				tr.ForceAttemptHTTP2 = false
				tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
			}
			port := httpsAddr[strings.LastIndex(httpsAddr, ":")+1:]
			req, _ := http.NewRequest("POST", "https://acme.localhost:"+port+"/v1/workflows/hello/executions", strings.NewReader(`{"order": 42}`))
			req.Header.Set("Authorization", "Bearer "+alice)
			req.Header.Set("Content-Type", "application/json")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(b), `"tenant":"acme"`) {
				t.Fatalf("%s: %d %s", proto, resp.StatusCode, b)
			}
			if proto == "h2" && resp.ProtoMajor != 2 {
				t.Errorf("ALPN: got %s, want HTTP/2", resp.Proto)
			}
		}
	})

	t.Run("plain HTTP redirects tenants with a certificate", func(t *testing.T) {
		// Also when the client claims the request came over TLS: the
		// scheme is the connection's, not a header's.
		for _, claimed := range []string{"", "https"} {
			req, _ := http.NewRequest("GET", "http://"+s.ports.envoy+"/v1/workflows?x=1", nil)
			req.Host = "acme.localhost"
			if claimed != "" {
				req.Header.Set("X-Forwarded-Proto", claimed)
			}
			plain := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := plain.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			_, port, _ := net.SplitHostPort(httpsAddr)
			want := "https://acme.localhost:" + port + "/v1/workflows?x=1"
			if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
				t.Fatalf("x-forwarded-proto %q: got %d Location %q, want 301 %q", claimed, resp.StatusCode, resp.Header.Get("Location"), want)
			}
		}
		// A tenant without a certificate is served on plain HTTP as before.
		if r := s.mustDo("initech.localhost", "", nil); r.code != 401 {
			t.Fatalf("initech on plain HTTP: %d %s", r.code, r.body)
		}
	})

	t.Run("login route skips ext_authz and carries the tenant set by Envoy", func(t *testing.T) {
		port := httpsAddr[strings.LastIndex(httpsAddr, ":")+1:]
		req, _ := http.NewRequest("POST", "https://globex.localhost:"+port+"/auth/login", strings.NewReader("user=gina"))
		req.Header.Set("X-Kailash-Tenant", "acme") // forged: Envoy overwrites it
		req.Header.Set("X-Kailash-User", "admin")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "login page for globex" {
			t.Fatalf("got %d %q (no token: ext_authz must not run on /auth/)", resp.StatusCode, b)
		}
		authMu.Lock()
		h := authSeen[len(authSeen)-1]
		authMu.Unlock()
		if got := h.Values("X-Kailash-Tenant"); len(got) != 1 || got[0] != "globex" {
			t.Fatalf("x-kailash-tenant at the login endpoint: %q", got)
		}
		if h.Get("X-Kailash-User") != "" {
			t.Fatal("a client-sent x-kailash-user reached the login endpoint")
		}
		// Everything else still needs a token.
		req, _ = http.NewRequest("GET", "https://globex.localhost:"+port+"/authx", nil)
		if resp, err = hc.Do(req); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("/authx without a token: %d", resp.StatusCode)
		}
	})

	t.Run("a rotated certificate is served without restarting Envoy", func(t *testing.T) {
		pid := s.proc.Pid()
		before, err := handshake(httpsAddr, "acme.localhost", roots)
		if err != nil {
			t.Fatal(err)
		}
		next, err := ca.Issue(time.Hour, "acme.localhost", "api.acme.localhost")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := next.Write(dir, "acme"); err != nil {
			t.Fatal(err)
		}
		written := time.Now()
		testenv.Eventually(t, 5*time.Second, func() error {
			st, err := handshake(httpsAddr, "acme.localhost", roots)
			if err != nil {
				return err
			}
			if st.PeerCertificates[0].SerialNumber.Cmp(before.PeerCertificates[0].SerialNumber) == 0 {
				return errors.New("still the old certificate")
			}
			if len(st.PeerCertificates[0].DNSNames) != 2 {
				return fmt.Errorf("SANs %v", st.PeerCertificates[0].DNSNames)
			}
			return nil
		})
		t.Logf("rotated certificate served %s after the files were written", time.Since(written).Round(time.Millisecond))
		if s.proc.Pid() != pid {
			t.Fatal("envoy was restarted")
		}
		// globex kept its certificate.
		st, err := handshake(httpsAddr, "globex.localhost", roots)
		if err != nil || st.PeerCertificates[0].Subject.CommonName != "globex.localhost" {
			t.Fatalf("globex after acme's rotation: %v", err)
		}
	})

	t.Run("a broken certificate file keeps the last good one", func(t *testing.T) {
		cur, err := handshake(httpsAddr, "acme.localhost", roots)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(files["acme"][0], []byte("not a certificate"), 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		st, err := handshake(httpsAddr, "acme.localhost", roots)
		if err != nil {
			t.Fatal(err)
		}
		if st.PeerCertificates[0].SerialNumber.Cmp(cur.PeerCertificates[0].SerialNumber) != 0 {
			t.Fatal("certificate changed after a broken file")
		}
	})
}
