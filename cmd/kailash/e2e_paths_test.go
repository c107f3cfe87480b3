package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/devtoken"
)

// TestPathsNormalizedAtTheEdge: Envoy normalizes a path before routing and
// authorizing it, so "/auth/../" cannot reach authz's admin endpoints
// through the login route, and dot segments or doubled slashes reach the
// runner as the path ext_authz decided on.
func TestPathsNormalizedAtTheEdge(t *testing.T) {
	s := startStack(t, "acme")
	tok := s.token(devtoken.Claims{Tenant: "acme", Subject: "alice", Roles: []string{"admin"}})
	raw := func(path string) (int, string) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", s.ports.envoy, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		// Written by hand: Go's client would clean the path itself.
		req := "POST " + path + " HTTP/1.1\r\nHost: acme.localhost\r\nAuthorization: Bearer " + tok + "\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(conn)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufioReader(b), nil)
		if err != nil {
			t.Fatalf("%s: %v: %q", path, err, b)
		}
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, p := range []string{"/auth/../v1/admin/explain/x", "/auth/..%2Fdebug/status", "/auth/%2e%2e/debug/status"} {
		code, body := raw(p)
		if strings.Contains(body, "no record of decision") || strings.Contains(body, "envoys") || strings.Contains(body, "reloaders") {
			t.Errorf("%s reached authz's admin port: %d %s", p, code, body)
		}
	}
	for _, p := range []string{"/v1/./workflows/hello/executions", "//v1//workflows/hello/executions", "/v1/x/../workflows/hello/executions"} {
		if code, body := raw(p); code != 200 || !strings.Contains(body, `"workflow":"hello"`) {
			t.Errorf("%s: %d %s, want the hello execution", p, code, body)
		}
	}
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
