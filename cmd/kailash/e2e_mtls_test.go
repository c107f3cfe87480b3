package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kailash-gw/kailash/internal/devcert"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// TestMTLSEndToEnd runs the whole stack with mutual TLS everywhere Envoy
// talks to us (xds, authz, ratelimit), certificates from the config: a
// request through Envoy is authorized over mTLS, and the authz and
// ratelimit ports refuse clients without a certificate of the CA.
func TestMTLSEndToEnd(t *testing.T) {
	dir := t.TempDir()
	ca, err := devcert.NewCA("e2e mTLS CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := devcert.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	issued := func(p devcert.Pair, err error) devcert.Pair {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	write := func(name string, p devcert.Pair) [2]string {
		t.Helper()
		c, k, err := p.Write(dir, name)
		if err != nil {
			t.Fatal(err)
		}
		return [2]string{c, k}
	}
	srv := write("server", issued(ca.Issue(time.Hour, "127.0.0.1", "localhost")))
	envoyCert := write("envoy", issued(ca.IssueClient(time.Hour, "e2e-envoy")))
	foreign := write("foreign", issued(other.IssueClient(time.Hour, "e2e-envoy")))

	p := freePorts(t)
	rl := testenv.FreeAddr(t)
	server := fmt.Sprintf("{cert_file: %q, key_file: %q, client_ca_file: %q}", srv[0], srv[1], caFile)
	client := fmt.Sprintf("{cert_file: %q, key_file: %q, ca_file: %q}", envoyCert[0], envoyCert[1], caFile)
	body := configYAML(t, p, "acme")
	for _, r := range [][2]string{
		{"node_id: e2e-envoy,", "node_id: e2e-envoy, xds_tls: " + client + ", authz_tls: " + client + ", ratelimit_tls: " + client + ","},
		{"xds: {grpc: " + p.xds, "xds: {tls: " + server + ", grpc: " + p.xds},
		{"authz: {grpc: " + p.authz, "authz: {tls: " + server + ", grpc: " + p.authz},
		{"\ntenants:\n", "\nratelimit: {grpc: " + rl + ", tls: " + server + "}\ntenants:\n"},
	} {
		if !strings.Contains(body, r[0]) {
			t.Fatalf("config template changed: no %q in\n%s", r[0], body)
		}
		body = strings.Replace(body, r[0], r[1], 1)
	}
	s := startStackWith(t, stackOptions{ports: p, body: body})

	alice := s.token(devtoken.Claims{Tenant: "acme", Subject: "alice", Roles: []string{"business_user"}})
	if r := s.mustDo("acme.localhost", alice, nil); r.code != 200 {
		t.Fatalf("request through Envoy with authz over mTLS: %d %s", r.code, r.body)
	}
	if r := s.mustDo("acme.localhost", "", nil); r.code != 401 {
		t.Fatalf("no token: %d, want 401 from authz", r.code)
	}
	for _, c := range []string{"kailash_authz", "kailash_xds"} {
		if n := envoyStat(t, s.admin, "cluster."+c+".ssl.handshake"); n < 1 {
			t.Errorf("cluster %s: %d TLS handshakes, want at least 1", c, n)
		}
	}

	dial := func(addr string, creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	withCert := func(pair [2]string) credentials.TransportCredentials {
		tc := &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}
		if pair[0] != "" {
			kp, err := tls.LoadX509KeyPair(pair[0], pair[1])
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{kp}
		}
		return credentials.NewTLS(tc)
	}
	for name, addr := range map[string]string{"authz": p.authz, "ratelimit": rl} {
		for what, creds := range map[string]credentials.TransportCredentials{
			"plaintext":                          insecure.NewCredentials(),
			"TLS without a client certificate":   withCert([2]string{}),
			"client certificate from another CA": withCert(foreign),
		} {
			if err := dial(addr, creds); status.Code(err) != codes.Unavailable {
				t.Errorf("%s, %s: %v, want the handshake refused (Unavailable)", name, what, err)
			}
		}
		if err := dial(addr, withCert(envoyCert)); err != nil {
			t.Errorf("%s with Envoy's certificate: %v", name, err)
		}
	}
}

// envoyStat reads one counter from Envoy's admin interface (-1 if absent).
func envoyStat(t *testing.T, admin, name string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/stats?filter=^" + strings.ReplaceAll(name, ".", `\.`) + "$")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok && k == name {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return -1
}
