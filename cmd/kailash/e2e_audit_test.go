package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/audit"
	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// readAudit is every event of an audit file.
func readAudit(path string) []audit.Event {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var evs []audit.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var ev audit.Event
		if json.Unmarshal(sc.Bytes(), &ev) == nil {
			evs = append(evs, ev)
		}
	}
	return evs
}

func findAudit(evs []audit.Event, action, target string) *audit.Event {
	for i := range evs {
		if evs[i].Action == action && (target == "" || evs[i].Target == target) {
			return &evs[i]
		}
	}
	return nil
}

// TestAuditEvents: under `kailash up` (a child process, a real Envoy), a
// config edit that adds a tenant, a policy bundle change, a refused config
// and `kailash keys rotate` are audit events in audit.file: who (the file
// and its owner, the CLI user), what, when, the outcome.
func TestAuditEvents(t *testing.T) {
	envoytest.Binary(t)
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle")
	if err := os.CopyFS(bundle, os.DirFS("../../policies/bundle")); err != nil {
		t.Fatal(err)
	}
	auditFile := filepath.Join(dir, "audit.jsonl")
	p := freePorts(t)
	extra := fmt.Sprintf("policy: {bundle: %s}\naudit: {file: %s}\n", bundle, auditFile)
	body := strings.Replace(configYAML(t, p, "acme"), "\ntenants:\n", "\n"+extra+"tenants:\n", 1)
	body = strings.Replace(body, "identity_audience: kailash-runner}", fmt.Sprintf("identity_audience: kailash-runner, data_dir: %s}", filepath.Join(dir, "data")), 1)
	path := filepath.Join(dir, "kailash.yaml")
	writeConfig(t, path, body)
	k := startKailash(t, "up", "-c", path, "-log-level", "info")
	waitUp(t, k, p, "acme.localhost", devToken(t, "acme"), 200, "")

	// A tenant added by editing the file.
	writeConfig(t, path, body+tenantYAML(t, "globex"))
	var evs []audit.Event
	testenv.Eventually(t, 30*time.Second, func() error {
		evs = readAudit(auditFile)
		if findAudit(evs, audit.TenantAdd, "globex") == nil {
			return fmt.Errorf("no tenant.add globex in %v", evs)
		}
		return nil
	})
	reload := findAudit(evs, audit.ConfigReload, path)
	if reload == nil || !strings.HasPrefix(reload.Actor, "file "+path) || !strings.Contains(reload.Actor, "owner") || reload.Outcome != audit.OK {
		t.Fatalf("config.reload %+v", reload)
	}
	if added, _ := reload.Detail["tenants_added"].([]any); len(added) != 1 || added[0] != "globex" || reload.Detail["digest"] == "" {
		t.Errorf("config.reload detail %v", reload.Detail)
	}

	// A refused config.
	writeConfig(t, path, body+"  - id: acme\n    domains: [again.localhost]\n")
	testenv.Eventually(t, 30*time.Second, func() error {
		if ev := findAudit(readAudit(auditFile), audit.ConfigReject, path); ev == nil || ev.Outcome != audit.Error || ev.Error == "" {
			return fmt.Errorf("no config.reject with its error: %v", ev)
		}
		return nil
	})

	// A policy bundle change.
	rego := filepath.Join(bundle, "kailash", "authz", "audit_e2e.rego")
	if err := os.WriteFile(rego, []byte("package kailash.authz\n\naudit_e2e_marker := true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		ev := findAudit(readAudit(auditFile), audit.PolicyActivate, "")
		if ev == nil {
			return fmt.Errorf("no policy.activate")
		}
		if ev.Detail["revision"] == "" || ev.Detail["revision"] == ev.Detail["previous_revision"] {
			return fmt.Errorf("policy.activate detail %v", ev.Detail)
		}
		return nil
	})

	writeConfig(t, path, body+tenantYAML(t, "globex")) // good again

	// The CLI's key rotation (against the runner's SQLite data beside it).
	if out, err := runOut(t, "keys", "rotate", "-c", path); err != nil {
		t.Fatalf("keys rotate: %v\n%s", err, out)
	}
	ev := findAudit(readAudit(auditFile), audit.KeyRotate, "")
	if ev == nil || ev.Component != "cli" || !strings.HasPrefix(ev.Actor, "cli ") || ev.Outcome != audit.OK {
		t.Fatalf("key.rotate %+v", ev)
	}
}

func TestTenantChanges(t *testing.T) {
	mk := func(ts ...config.Tenant) *config.Config { return &config.Config{Tenants: ts} }
	a := config.Tenant{ID: "acme", Domains: []string{"acme.test"}, Line: 3}
	moved := a
	moved.Line = 9
	edited := a
	edited.Domains = []string{"acme.example"}
	added, removed, changed := tenantChanges(mk(a, config.Tenant{ID: "old"}), mk(moved, config.Tenant{ID: "new"}))
	if fmt.Sprint(added, removed, changed) != "[new] [old] []" {
		t.Errorf("added %v removed %v changed %v", added, removed, changed)
	}
	if _, _, changed = tenantChanges(mk(a), mk(edited)); fmt.Sprint(changed) != "[acme]" {
		t.Errorf("changed %v", changed)
	}
}
