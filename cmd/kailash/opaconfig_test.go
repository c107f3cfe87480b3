package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/kailash-gw/kailash/internal/testenv"
)

// opa-envoy-plugin's documented config (its README's plugins block, plus
// decision_logs console and a bundle from a service).
const opaEnvoyConfig = `
plugins:
  envoy_ext_authz_grpc:
    addr: :9191
    path: envoy/authz/allow
    dry-run: false
    enable-reflection: true
    skip-request-body-parse: true
decision_logs:
  console: true
services:
  - name: controller
    url: https://bundles.example.com/v1/
bundles:
  authz:
    service: controller
    resource: bundles/authz.tar.gz
    persist: true
    polling:
      min_delay_seconds: 10
      max_delay_seconds: 20
persistence_directory: /var/opa
labels:
  app: shop
`

func writeTemp(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOPAConfigFileMapping(t *testing.T) {
	var d dropInFlags
	if err := d.applyOPAConfig(writeTemp(t, "opa.yaml", opaEnvoyConfig)); err != nil {
		t.Fatal(err)
	}
	if allInterfaces(d.grpcAddr) != "0.0.0.0:9191" || d.decision != "envoy/authz/allow" || !d.reflection || !d.skipBodyParse || d.dryRun ||
		d.decisionLog != "console" || d.bundleURL != "https://bundles.example.com/v1/bundles/authz.tar.gz" ||
		d.poll != 10*time.Second || d.persistDir != "/var/opa" {
		t.Fatalf("mapped %+v", d)
	}
	// query form, services as a map, default resource.
	d = dropInFlags{}
	err := d.applyOPAConfig(writeTemp(t, "opa.yaml", `
plugins: {envoy_ext_authz_grpc: {query: data.envoy.authz.allow}}
services: {s1: {url: "http://b"}}
bundles: {main: {service: s1}}
`))
	if err != nil || d.decision != "envoy/authz/allow" || d.bundleURL != "http://b/bundles/main" {
		t.Fatalf("%v %+v", err, d)
	}
}

// Keys that would change what is trusted are refused by name, never
// ignored.
func TestOPAConfigFileRefusesWhatItCannotHonour(t *testing.T) {
	for body, want := range map[string]string{
		"services: [{name: s, url: 'http://b', credentials: {s3_signing: {}}}]\nbundles: {a: {service: s}}": "s3_signing",
		"services: [{name: s, url: 'http://b', credentials: {bearer: {}}}]\nbundles: {a: {service: s}}":     "credentials.bearer: give token or token_path",
		"services: [{name: s, url: 'http://b', allow_insecure_tls: true}]\nbundles: {a: {service: s}}":      "allow_insecure_tls: refused",
		"services: [{name: s, url: 'http://b'}]\nbundles: {a: {service: s, signing: {keyid: k}}}":           `signing.keyid: "k" is not in keys`,
		"status: {console: true, trigger: manual}":                                                          "status.trigger",
		"status: {service: nope}":                                   `status.service: "nope"`,
		"decision_logs: {service: s}":                               `decision_logs.service: "s" is not a service`,
		"plugins: {other: {}}":                                      "plugins.other",
		"plugins: {envoy_ext_authz_grpc: {proto-descriptor: a.pb}}": "proto-descriptor",
		"bundles: {a: {service: nope}}":                             `bundles.a.service: "nope"`,
		"bundles: {a: {}, b: {}}":                                   "only one bundle",
		"surprise: 1":                                               "surprise: unknown key",
	} {
		var d dropInFlags
		err := d.applyOPAConfig(writeTemp(t, "opa.yaml", body))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "opa.yaml") {
			t.Errorf("%q: %v, want an error naming the file and %q", body, err, want)
		}
	}
}

// `opa run --server --config-file opa.yaml policy.rego --addr …` as an OPA
// user types it, flags after the path included: Checks answered on the
// plugin's addr with the plugin's path, reflection on, OPA's /health.
func TestAuthzWithOPAConfigFileAndRunServerArgs(t *testing.T) {
	grpcAddr, httpAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	cfg := writeTemp(t, "opa.yaml", "plugins:\n  envoy_ext_authz_grpc:\n    addr: "+grpcAddr+"\n    path: demo/allow\n    enable-reflection: true\n")
	pol := writeTemp(t, "policy.rego", "package demo\n\ndefault allow := false\n\nallow if input.attributes.request.http.method == \"GET\"\n")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"authz", "--server", "--config-file", cfg, pol, "--addr", httpAddr, "-log-level", "warn"}, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("authz: %v", err)
		}
	})
	conn, check := dropInChecker(t, ctx, grpcAddr)
	if c, err := check("GET"); err != nil || c != 0 {
		t.Fatalf("GET: %d %v", c, err)
	}
	if c, err := check("DELETE"); err != nil || c != 7 {
		t.Fatalf("DELETE: %d %v", c, err)
	}
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	found := false
	for _, s := range r.GetListServicesResponse().GetService() {
		found = found || s.GetName() == "envoy.service.auth.v3.Authorization"
	}
	if !found {
		t.Fatalf("reflection lists %v", r.GetListServicesResponse().GetService())
	}
	for _, q := range []string{"", "?bundles", "?plugins", "?bundles&plugins"} {
		resp, err := http.Get("http://" + httpAddr + "/health" + q)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "{}" {
			t.Fatalf("/health%s: %d %s", q, resp.StatusCode, b)
		}
	}
}

// The `opa run --server` command line of docs/policies.md's "before",
// unchanged but for the program name.
func TestOPARunServerCommandLine(t *testing.T) {
	pol := writeTemp(t, "policy.rego", "package envoy.authz\n\ndefault allow := false\n")
	args := []string{"--server", "--addr=:8181", "--set=plugins.envoy_ext_authz_grpc.addr=:9191",
		"--set=plugins.envoy_ext_authz_grpc.path=envoy/authz/allow", pol, "--set", "decision_logs.console=true"}
	var d dropInFlags
	_, cfg, _, err := loadAuthzFlags(args, &d, &listenFlags{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Authz.GRPC.String() != "0.0.0.0:9191" || cfg.Authz.HTTP.String() != "0.0.0.0:8181" || cfg.Policy.Decision != "envoy/authz/allow" ||
		!cfg.Policy.DecisionLogs.Console || !strings.HasSuffix(cfg.Policy.Bundle, "policy.rego") {
		t.Fatalf("config %+v", cfg)
	}
	for _, bad := range [][]string{
		{"--set", "plugins.envoy_ext_authz_grpc.proto-descriptor=x.pb", pol},
		{"--set", "services.s.url=http://x", pol},
		{pol, "other.rego"},
	} {
		var d dropInFlags
		if _, _, _, err := loadAuthzFlags(bad, &d, &listenFlags{}); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// dropInChecker dials a drop-in authz at addr and waits until it answers;
// check sends a Check of method on /x and returns its gRPC status code.
func dropInChecker(t *testing.T, ctx context.Context, addr string) (conn *grpc.ClientConn, check func(method string) (int32, error)) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := authv3.NewAuthorizationClient(conn)
	check = func(method string) (int32, error) {
		resp, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source:  &authv3.AttributeContext_Peer{Address: &corev3.Address{}},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: "/x"}}}})
		return resp.GetStatus().GetCode(), err
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		_, err := check("GET")
		return err
	})
	return conn, check
}
