package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// trustedStack is a stack with a tenant that admits only 203.0.113.0/24,
// one whose login is limited to 1 per minute per client address, and
// listener settings (envoy.listener) of the test's choosing.
func trustedStack(t *testing.T, listener string) (*stack, ports) {
	t.Helper()
	jwt := fmt.Sprintf("    jwt: {issuer: %s, audiences: [%s], jwks_file: %s}\n", issuer, audience, abs(t, "../../examples/keys/dev.jwks.json"))
	p := freePorts(t)
	body := configYAML(t, p, "acme")
	body = strings.Replace(body, `access_log: "off"}`, `access_log: "off", listener: {`+listener+`}}`, 1)
	body = strings.Replace(body, "\ntenants:\n", fmt.Sprintf("\nratelimit: {grpc: %s, fail_mode: closed, timeout: 2s}\ntenants:\n", testenv.FreeAddr(t)), 1)
	body += "  - id: walled\n    domains: [walled.localhost]\n    ip_allowlist: [203.0.113.0/24]\n" + jwt +
		"  - id: logins\n    domains: [logins.localhost]\n    limits: {auth_per_minute: 1}\n" + jwt
	return startStackWith(t, stackOptions{ports: p, body: body}), p
}

// sendFrom sends one request to Envoy from the local address from ("" any),
// with an X-Forwarded-For header when xff is set, after prefix (a PROXY
// protocol header) when set; it returns the status and the x-request-id.
func sendFrom(t *testing.T, envoyAddr, from, prefix, host, method, path, token, xff string) (int, string, error) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	conn, err := d.DialContext(context.Background(), "tcp", envoyAddr)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req, _ := http.NewRequest(method, "http://"+host+path, strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	if _, err := io.WriteString(conn, prefix); err != nil {
		return 0, "", err
	}
	if err := req.Write(conn); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Request-Id"), nil
}

// TestTrustedProxies: through a real Envoy, the client address IP
// allowlists, the login quota's remote_address key and the policy input
// (authz's source, seen in kailash explain) use is the connection's peer by
// default (X-Forwarded-For not believed), the one xff_num_trusted_hops
// names, or the first outside trusted_proxies when the peer is a trusted
// proxy; with proxy_protocol, the PROXY header's. A client cannot forge it.
func TestTrustedProxies(t *testing.T) {
	const exec = "/v1/workflows/hello/executions"
	t.Run("default: X-Forwarded-For is not believed", func(t *testing.T) {
		s, p := trustedStack(t, "idle_timeout: 1h")
		tok := s.token(devtoken.Claims{Tenant: "walled", Subject: "w", Roles: []string{"admin"}})
		code, _, err := sendFrom(t, p.envoy, "", "", "walled.localhost", "POST", exec, tok, "203.0.113.7")
		if err != nil || code != 403 {
			t.Fatalf("forged X-Forwarded-For: %d %v, want 403", code, err)
		}
	})

	t.Run("xff_num_trusted_hops", func(t *testing.T) {
		s, p := trustedStack(t, "xff_num_trusted_hops: 1")
		tok := s.token(devtoken.Claims{Tenant: "walled", Subject: "w", Roles: []string{"admin"}})
		code, _, err := sendFrom(t, p.envoy, "", "", "walled.localhost", "POST", exec, tok, "203.0.113.7")
		if err != nil || code != 200 {
			t.Fatalf("client 203.0.113.7 behind one proxy: %d %v, want 200", code, err)
		}
		// A client's own entries are left of the proxy's: 198.51.100.1 is
		// what the (trusted) proxy saw.
		code, rid, err := sendFrom(t, p.envoy, "", "", "walled.localhost", "POST", exec, tok, "203.0.113.7, 198.51.100.1")
		if err != nil || code != 403 {
			t.Fatalf("forged entry left of the proxy's: %d %v, want 403", code, err)
		}
		if rec := explainOfID(t, p, rid); rec.ClientIP != "198.51.100.1" || rec.Edge == nil || rec.Edge.Check != "ip_allowlist" {
			t.Errorf("explain: client %q edge %+v, want 198.51.100.1 refused by the ip_allowlist", rec.ClientIP, rec.Edge)
		}
		// The policy input's source is the trusted address too.
		bob := s.token(devtoken.Claims{Tenant: "acme", Subject: "bob", Roles: []string{"viewer"}})
		code, rid, err = sendFrom(t, p.envoy, "", "", "acme.localhost", "POST", exec, bob, "192.0.2.44")
		if err != nil || code != 403 {
			t.Fatalf("viewer: %d %v", code, err)
		}
		if rec := explainOfID(t, p, rid); rec.ClientIP != "192.0.2.44" {
			t.Errorf("authz's source address %q, want 192.0.2.44", rec.ClientIP)
		}
		// The login quota counts per trusted client address.
		login := func(xff string) int {
			code, _, err := sendFrom(t, p.envoy, "", "", "logins.localhost", "POST", "/auth/login", "", xff)
			if err != nil {
				t.Fatal(err)
			}
			return code
		}
		first := login("203.0.113.20")
		if first == 429 {
			t.Fatal("the first login of a client was limited")
		}
		if got := login("203.0.113.20"); got != 429 {
			t.Errorf("second login from 203.0.113.20 in a minute: %d, want 429", got)
		}
		if got := login("203.0.113.21"); got == 429 {
			t.Errorf("another client's first login was limited: %d", got)
		}
	})

	t.Run("trusted_proxies", func(t *testing.T) {
		s, p := trustedStack(t, "trusted_proxies: [127.0.0.1/32]")
		tok := s.token(devtoken.Claims{Tenant: "walled", Subject: "w", Roles: []string{"admin"}})
		code, _, err := sendFrom(t, p.envoy, "127.0.0.1", "", "walled.localhost", "POST", exec, tok, "203.0.113.7, 127.0.0.1")
		if err != nil || code != 200 {
			t.Fatalf("via the trusted proxy 127.0.0.1: %d %v, want 200", code, err)
		}
		// A peer that is not a trusted proxy is the client, whatever it says.
		code, _, err = sendFrom(t, p.envoy, "127.0.0.2", "", "walled.localhost", "POST", exec, tok, "203.0.113.7")
		if err != nil || code != 403 {
			t.Fatalf("untrusted peer 127.0.0.2 forging X-Forwarded-For: %d %v, want 403", code, err)
		}
	})

	t.Run("proxy_protocol", func(t *testing.T) {
		s, p := trustedStack(t, "proxy_protocol: true")
		tok := s.token(devtoken.Claims{Tenant: "walled", Subject: "w", Roles: []string{"admin"}})
		_, port, _ := net.SplitHostPort(p.envoy)
		hdr := "PROXY TCP4 203.0.113.9 127.0.0.1 5555 " + port + "\r\n"
		code, _, err := sendFrom(t, p.envoy, "", hdr, "walled.localhost", "POST", exec, tok, "")
		if err != nil || code != 200 {
			t.Fatalf("PROXY 203.0.113.9: %d %v, want 200", code, err)
		}
		if code, _, err := sendFrom(t, p.envoy, "", "", "walled.localhost", "POST", exec, tok, ""); err == nil {
			t.Fatalf("a connection without a PROXY header was answered %d", code)
		}
	})
}

// explainOfID is the explain record of a request id, once Envoy's access
// log reached authz.
func explainOfID(t *testing.T, p ports, id string) (rec explainRecord) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() error {
		var err error
		if rec, err = fetchExplain(p.authzHTTP, id); err != nil {
			return err
		}
		if rec.Status == 0 {
			return fmt.Errorf("no edge step yet")
		}
		return nil
	})
	return rec
}

// TestGeoHeaderOnlyFromTrustedProxies: envoy.geo_header is believed only
// from a trusted source: the policy's country rule reads it when the
// connection comes from the trusted proxy, and sees no country (denied)
// when a client sends it directly; a tenant without a country rule is
// served but its upstream never gets the client's header.
func TestGeoHeaderOnlyFromTrustedProxies(t *testing.T) {
	bundle := bundleWithData(t, func(data map[string]any) {
		data["tenants"] = map[string]any{"acme": map[string]any{"countries": map[string]any{"allowed": []string{"DE"}, "header": "X-Country"}}}
	})
	jwt := fmt.Sprintf("    jwt: {issuer: %s, audiences: [%s], jwks_file: %s}\n", issuer, audience, abs(t, "../../examples/keys/dev.jwks.json"))
	p := freePorts(t)
	body := configYAML(t, p, "acme")
	body = strings.Replace(body, `access_log: "off"}`, `access_log: "off", listener: {trusted_proxies: [127.0.0.1/32]}, geo_header: {name: X-Country}}`, 1)
	body = strings.Replace(body, "\ntenants:\n", "\npolicy: {bundle: "+bundle+"}\ntenants:\n", 1)
	body += "  - id: plain\n    domains: [plain.localhost]\n" + jwt
	s := startStackWith(t, stackOptions{ports: p, body: body})
	const exec = "/v1/workflows/hello/executions"
	tok := s.token(devtoken.Claims{Tenant: "acme", Subject: "a", Roles: []string{"admin"}})
	geo := func(from, host, token, country string) int {
		t.Helper()
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		conn, err := d.DialContext(context.Background(), "tcp", p.envoy)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		req, _ := http.NewRequest("POST", "http://"+host+exec, strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Country", country)
		if err := req.Write(conn); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := geo("127.0.0.1", "acme.localhost", tok, "DE"); got != 200 {
		t.Errorf("DE from the trusted proxy: %d, want 200", got)
	}
	if got := geo("127.0.0.1", "acme.localhost", tok, "FR"); got != 403 {
		t.Errorf("FR from the trusted proxy: %d, want 403 (the policy reads the header)", got)
	}
	if got := geo("127.0.0.2", "acme.localhost", tok, "DE"); got != 403 {
		t.Errorf("DE sent by a client directly: %d, want 403 (header removed: no country)", got)
	}
	before := s.upstreamCount()
	plain := s.token(devtoken.Claims{Tenant: "plain", Subject: "p", Roles: []string{"admin"}})
	if got := geo("127.0.0.2", "plain.localhost", plain, "DE"); got != 200 {
		t.Fatalf("plain tenant: %d", got)
	}
	s.mu.Lock()
	last := s.upstream[len(s.upstream)-1]
	s.mu.Unlock()
	if s.upstreamCount() != before+1 || last.Get("X-Country") != "" {
		t.Errorf("the upstream got the client's X-Country %q", last.Get("X-Country"))
	}
}
