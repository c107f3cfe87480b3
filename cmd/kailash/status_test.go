package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/status"
)

func TestStatusURLs(t *testing.T) {
	got, err := statusURLs([]string{"127.0.0.1:9000", "http://h:1/", "https://h:2/custom/status"}, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"http://127.0.0.1:9000/debug/status", "http://h:1/debug/status", "https://h:2/custom/status"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %v, want %v", got, want)
	}
	// From a config: xds.http and authz.http, an unspecified address dialled on loopback.
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kailash.yaml")
	p := ports{"127.0.0.1:18080", "127.0.0.1:18081", "127.0.0.1:18000", "0.0.0.0:19000", "127.0.0.1:18001", "'[::]:19001'", "127.0.0.1:18082"}
	if err := os.WriteFile(cfg, []byte(configYAML(t, p, "acme")), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = statusURLs(nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "http://127.0.0.1:19000/debug/status http://[::1]:19001/debug/status" {
		t.Errorf("from the config: %v", got)
	}
}

func TestPrintStatus(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	printStatus(&b, status.Report{Component: "xds", Time: at, ConfigHash: "abc",
		Tenants:  status.Tenants{Count: 1, List: []status.Tenant{{ID: "acme", Domains: []string{"a.example"}, Active: false}}},
		Snapshot: &status.Snapshot{Version: "v2", Resources: map[string]int{"type.googleapis.com/envoy.config.listener.v3.Listener": 1}},
		Envoys: &status.Envoys{Count: 1, List: []status.Envoy{{NodeID: "edge-1", AckedVersion: "v1", NACKs: 1,
			LastNACK: &status.NACK{TypeURL: "type.googleapis.com/envoy.config.listener.v3.Listener", Version: "v2", Message: "bad port", At: at}}}},
		Reloaders: []status.Reload{{Name: "config", Failing: true, LastError: "kailash.yaml:3: bad", ErrorAt: at, Failures: 2}},
	})
	out := b.String()
	for _, want := range []string{"xds ", "sha256 abc", "v2 published never (Listener 1)", "acme", "INACTIVE", "edge-1", "acked v1", "NOT in sync",
		"last NACK", "Listener refused v2: bad port", "FAILING", "(2 failures): kailash.yaml:3: bad"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
