// Package deploy holds the deployment files; its tests check the
// dashboards and alert rules (deploy/grafana, deploy/prometheus) offline.
// The real-Prometheus check that their metrics exist is in cmd/kailash
// (TestPrometheusScrapesEveryMonitoredMetric).
package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kailash-gw/kailash/internal/monitoring"
	"github.com/kailash-gw/kailash/internal/testenv"
)

const (
	dashboards = "grafana/dashboards"
	rulesDir   = "prometheus"
)

var wantDashboards = []string{"kailash-overview", "kailash-tenant", "kailash-authz", "kailash-ratelimit", "kailash-runner", "kailash-xds"}

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Missing(t, "promtool", "apt-get install prometheus (Debian)")
	}
	return p
}

// Every dashboard parses, is one of the six, uses the Prometheus
// datasource variable on every panel and target, and every expression
// (Grafana variables replaced) is valid PromQL as promtool parses it.
func TestDashboards(t *testing.T) {
	ds, err := monitoring.LoadDashboards(dashboards)
	if err != nil {
		t.Fatal(err)
	}
	uids := map[string]string{}
	var exprs []monitoring.Expr
	for f, d := range ds {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(raw) {
			t.Errorf("%s: not valid JSON", f)
		}
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid %q title %q; both are required", f, d.UID, d.Title)
		}
		if prev, dup := uids[d.UID]; dup {
			t.Errorf("%s and %s share uid %s", prev, f, d.UID)
		}
		uids[d.UID] = f
		if d.SchemaVersion < 39 {
			t.Errorf("%s: schemaVersion %d; want a current one (>= 39)", f, d.SchemaVersion)
		}
		vars := map[string]monitoring.Variable{}
		for _, v := range d.Templating.List {
			vars[v.Name] = v
		}
		if v, ok := vars["datasource"]; !ok || v.Type != "datasource" || monitoring.VariableQuery(v.Query) != "prometheus" {
			t.Errorf("%s: no Prometheus datasource variable named datasource", f)
		}
		var walk func([]monitoring.Panel)
		n := 0
		walk = func(ps []monitoring.Panel) {
			for _, p := range ps {
				walk(p.Panels)
				if p.Type == "row" {
					continue
				}
				n++
				if !bytes.Contains(p.Datasource, []byte(`"${datasource}"`)) {
					t.Errorf("%s: panel %q: datasource %s; want the ${datasource} variable", f, p.Title, p.Datasource)
				}
				if len(p.Targets) == 0 {
					t.Errorf("%s: panel %q has no query", f, p.Title)
				}
			}
		}
		walk(d.Panels)
		if n < 4 {
			t.Errorf("%s: %d panels; a dashboard needs more", f, n)
		}
		if d.UID == "kailash-tenant" {
			if v, ok := vars["tenant"]; !ok || v.Type != "query" {
				t.Errorf("%s: no tenant query variable", f)
			}
			for _, e := range d.Exprs(f) {
				if !strings.Contains(e.PromQL, "$tenant") && !strings.Contains(e.Where, "variable") {
					t.Errorf("%s does not filter by $tenant: %s", e.Where, e.PromQL)
				}
			}
		}
		exprs = append(exprs, d.Exprs(filepath.Base(f))...)
	}
	for _, want := range wantDashboards {
		if uids[want] == "" {
			t.Errorf("no dashboard with uid %s", want)
		}
	}
	checkPromQL(t, promtool(t), exprs)
}

// checkPromQL has promtool parse every expression: each becomes a
// recording rule of a scratch rule file (promtool check rules parses
// them), and an error names the panel.
func checkPromQL(t *testing.T, promtool string, exprs []monitoring.Expr) {
	t.Helper()
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, e := range exprs {
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard_expr_%d", i), Expr: monitoring.Substitute(e.PromQL)})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "dashboards.rules.yaml")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "rules", f).CombinedOutput()
	if err != nil {
		// Name the panels of the rules promtool refused.
		for _, m := range regexp.MustCompile(`"dashboard_expr_(\d+)"`).FindAllStringSubmatch(string(out), -1) {
			if i, err := strconv.Atoi(m[1]); err == nil && i < len(exprs) {
				t.Errorf("%s: %s", exprs[i].Where, exprs[i].PromQL)
			}
		}
		t.Fatalf("promtool check rules on the dashboards' %d expressions: %v\n%s", len(exprs), err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("%d rules found", len(exprs))) {
		t.Fatalf("promtool did not check all %d expressions:\n%s", len(exprs), out)
	}
}

// Every alert has a severity and a runbook, and its unit tests in the
// .test.yaml beside it check it both firing and not firing.
func TestEveryAlertHasFiringAndQuietTests(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(rulesDir, "*-alerts.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no rule files (%v)", err)
	}
	for _, f := range files {
		rf, err := monitoring.LoadRules(f)
		if err != nil {
			t.Fatal(err)
		}
		tf := strings.TrimSuffix(f, ".yaml") + ".test.yaml"
		b, err := os.ReadFile(tf)
		if err != nil {
			t.Fatalf("%s has no unit tests: %v", f, err)
		}
		var tests struct {
			RuleFiles []string `yaml:"rule_files"`
			Tests     []struct {
				AlertRuleTest []struct {
					Alertname string `yaml:"alertname"`
					ExpAlerts []any  `yaml:"exp_alerts"`
				} `yaml:"alert_rule_test"`
			} `yaml:"tests"`
		}
		if err := yaml.Unmarshal(b, &tests); err != nil {
			t.Fatalf("%s: %v", tf, err)
		}
		if len(tests.RuleFiles) != 1 || tests.RuleFiles[0] != filepath.Base(f) {
			t.Errorf("%s tests %v; want %s", tf, tests.RuleFiles, filepath.Base(f))
		}
		firing, quiet := map[string]bool{}, map[string]bool{}
		for _, tc := range tests.Tests {
			for _, a := range tc.AlertRuleTest {
				if len(a.ExpAlerts) > 0 {
					firing[a.Alertname] = true
				} else {
					quiet[a.Alertname] = true
				}
			}
		}
		n := 0
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				n++
				if !firing[r.Alert] || !quiet[r.Alert] {
					t.Errorf("%s: alert %s tested firing %v, not firing %v; want both", tf, r.Alert, firing[r.Alert], quiet[r.Alert])
				}
				switch r.Labels["severity"] {
				case "critical", "warning", "info":
				default:
					t.Errorf("%s: alert %s severity %q; want critical, warning or info", f, r.Alert, r.Labels["severity"])
				}
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" || r.Annotations["runbook_url"] == "" {
					t.Errorf("%s: alert %s needs summary, description and runbook_url annotations", f, r.Alert)
				}
				anchor := strings.ToLower(r.Alert)
				if !strings.HasSuffix(r.Annotations["runbook_url"], "#"+anchor) {
					t.Errorf("%s: alert %s runbook_url %q; want …runbook.md#%s", f, r.Alert, r.Annotations["runbook_url"], anchor)
				}
				if rb, err := os.ReadFile(filepath.Join(rulesDir, "runbook.md")); err != nil || !bytes.Contains(rb, []byte("## "+r.Alert+"\n")) {
					t.Errorf("runbook.md has no section ## %s (%v)", r.Alert, err)
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no alert", f)
		}
	}
}

// promtool checks and unit-tests the rule files, and amtool checks the
// Alertmanager example (make test-monitoring runs the same from the shell).
func TestPromtoolAndAmtool(t *testing.T) {
	pt := promtool(t)
	files, _ := filepath.Glob(filepath.Join(rulesDir, "*-alerts.yaml"))
	if out, err := exec.Command(pt, append([]string{"check", "rules"}, files...)...).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	tests, _ := filepath.Glob(filepath.Join(rulesDir, "*-alerts.test.yaml"))
	cmd := exec.Command(pt, append([]string{"test", "rules"}, baseNames(tests)...)...)
	cmd.Dir = rulesDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	if out, err := exec.Command(pt, "check", "config", "--syntax-only", filepath.Join(rulesDir, "prometheus.yml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	am, err := exec.LookPath("amtool")
	if err != nil {
		testenv.Missing(t, "amtool", "apt-get install prometheus-alertmanager (Debian)")
	}
	if out, err := exec.Command(am, "check-config", "alertmanager/alertmanager.yml").CombinedOutput(); err != nil {
		t.Fatalf("amtool check-config: %v\n%s", err, out)
	}
	// Routing by severity.
	for sev, want := range map[string]string{"critical": "pagerduty,slack", "warning": "slack", "info": "email", "": "email"} {
		args := []string{"config", "routes", "test", "--config.file=alertmanager/alertmanager.yml", "alertname=KailashTest"}
		if sev != "" {
			args = append(args, "severity="+sev)
		}
		out, err := exec.Command(am, args...).Output()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("severity %q routes to %q (%v); want %s", sev, strings.TrimSpace(string(out)), err, want)
		}
	}
}

func baseNames(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = filepath.Base(p)
	}
	return out
}
