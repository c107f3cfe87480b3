package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kailash-gw/kailash/internal/testenv"
)

// `kailash policy diff` replays a decision log that `kailash authz` wrote
// (drop-in mode, a real gRPC Check per request) against the active bundle
// and a candidate, and reports what the candidate changes per path; with
// --fail-on-change it exits 2.
func TestPolicyDiffReplaysARealDecisionLog(t *testing.T) {
	active, candidate, same := t.TempDir(), t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(active, "p.rego"), "package envoy.authz\n\ndefault allow := false\n\nallow if input.attributes.request.http.method == \"GET\"\n")
	// The candidate also lets HEAD through, and no longer GET /admin.
	writeFile(t, filepath.Join(candidate, "p.rego"), `package envoy.authz

import input.attributes.request.http as r

default allow := false

allow if {
	r.method in {"GET", "HEAD"}
	not startswith(r.path, "/admin")
}
`)
	writeFile(t, filepath.Join(same, "p.rego"), "package envoy.authz\n\ndefault allow := false\n\nallow if \"GET\" == input.attributes.request.http.method\n")
	logPath := filepath.Join(t.TempDir(), "decisions.jsonl")
	addr := testenv.FreeAddr(t)
	k := startKailash(t, "authz", "--policy", active, "--grpc-addr", addr, "--decision-log", logPath)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	reqs := []struct{ method, path string }{
		{"GET", "/a"}, {"GET", "/a?x=1"}, {"HEAD", "/a"}, {"HEAD", "/a"}, {"POST", "/a"}, {"GET", "/admin/users"}, {"HEAD", "/b"},
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		_, err := client.Check(t.Context(), checkRequest("GET", "/warmup"))
		return err
	})
	for _, r := range reqs {
		if _, err := client.Check(t.Context(), checkRequest(r.method, r.path)); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		b, _ := os.ReadFile(logPath)
		if n := strings.Count(string(b), "\n"); n < len(reqs)+1 {
			return fmt.Errorf("%d decision log lines, want %d\n%s", n, len(reqs)+1, k.out)
		}
		return nil
	})

	out, err := runOut(t, "policy", "diff", "--active", active, "--candidate", candidate, "--log", logPath)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{
		"8 decisions replayed, 4 would change",
		"tenant -  /a: 2 changed (2 now allowed, 0 now denied or failing)",
		"tenant -  /admin/users: 1 changed (0 now allowed, 1 now denied or failing)",
		"tenant -  /b: 1 changed (1 now allowed",
		": deny -> allow", ": allow -> deny",
		"decision envoy/authz/allow",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("diff output lacks %q:\n%s", want, out)
		}
	}
	if _, errOut, code := runKailash(t, "policy", "diff", "--active", active, "--candidate", candidate, "--log", logPath, "--fail-on-change"); code != 2 || !strings.Contains(errOut, "4 of 8 decisions would change") {
		t.Fatalf("--fail-on-change: exit %d, want 2; stderr %q", code, errOut)
	}
	// A candidate that decides the same: exit 0 even with --fail-on-change.
	if out, _, code := runKailash(t, "policy", "diff", "--active", active, "--candidate", same, "--log", logPath, "--fail-on-change"); code != 0 || !strings.Contains(out, "8 decisions replayed, 0 would change") {
		t.Fatalf("same decisions: exit %d\n%s", code, out)
	}
	if _, err := runOut(t, "policy", "diff", "--active", active, "--log", logPath); err == nil {
		t.Fatal("no --candidate: want an error")
	}
}

func checkRequest(method, path string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:  &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 1234}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Id: "r", Method: method, Path: path, Host: "example.com", Scheme: "http", Protocol: "HTTP/1.1", Headers: map[string]string{":path": path, ":method": method}}},
	}}
}
