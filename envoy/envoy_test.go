package envoy_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/envoy"
	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/config"
)

func TestBootstrapValidatesWithRealEnvoy(t *testing.T) {
	bin := envoytest.Binary(t)
	cfg, err := config.Load("../examples/kailash.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := envoy.Bootstrap(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "port_value: 18000") || !strings.Contains(string(b), `id: "kailash-envoy"`) {
		t.Fatalf("bootstrap does not point at the control plane:\n%s", b)
	}
	p := filepath.Join(t.TempDir(), "b.yaml")
	writeFile(t, p, b)
	out, err := exec.Command(bin, "--mode", "validate", "-c", p, "--disable-hot-restart").CombinedOutput()
	if err != nil {
		t.Fatalf("envoy rejects the bootstrap: %v\n%s", err, out)
	}
}

func TestLauncherStopsEnvoyOnCancel(t *testing.T) {
	bin := envoytest.Binary(t)
	cfg, err := config.Load("../examples/kailash.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Envoy.Admin = config.MustHostPort("127.0.0.1:0")
	cfg.XDS.GRPC = config.MustHostPort("127.0.0.1:1") // nothing there: Envoy still starts and serves admin
	b, err := envoy.Bootstrap(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := envoy.Start(ctx, envoy.Options{Binary: bin, Bootstrap: b})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	defer acancel()
	addr, err := p.AdminAddr(actx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("admin bound %q, want 127.0.0.1", addr)
	}
	cancel()
	select {
	case <-p.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("envoy still running 15s after cancel")
	}
	if err := exec.Command("kill", "-0", itoa(p.Pid())).Run(); err == nil {
		t.Fatal("envoy process still exists")
	}
}
