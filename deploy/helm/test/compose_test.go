package charttest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"sigs.k8s.io/yaml"
)

// deploy/compose.yaml loads with compose-go (the library docker compose is
// built on: the compose-spec JSON schema, interpolation, merge of the
// x-kailash anchor, depends_on and volume references resolved), and holds
// the chart's topology with the same hardening. It cannot be run here (no
// registry for redis:7 / postgres:16).
func TestCompose(t *testing.T) {
	t.Setenv("KAILASH_REDIS_PASSWORD", "test-redis-password")
	t.Setenv("KAILASH_POSTGRES_PASSWORD", "test-postgres-password")
	t.Setenv("KAILASH_IMAGE", "")
	opts, err := cli.NewProjectOptions([]string{"../../compose.yaml"}, cli.WithOsEnv, cli.WithResolvedPaths(true))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose.yaml does not load: %v", err)
	}
	want := append(append([]string(nil), components...), "redis", "postgres")
	got := p.ServiceNames()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("services %v, want %v", got, want)
	}
	for _, c := range components {
		s := p.Services[c]
		if s.Image != "localhost/kailash:dev" {
			t.Errorf("%s: image %q", c, s.Image)
		}
		cmd := []string(s.Command)
		if len(cmd) < 3 || cmd[0] != c || cmd[1] != "-c" || cmd[2] != "/etc/kailash/"+c+".yaml" {
			t.Errorf("%s: command %v, want [%s -c /etc/kailash/%s.yaml ...]", c, cmd, c, c)
		}
		if s.User != "65532:65532" || !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) || !slices.Contains(s.Tmpfs, "/tmp") ||
			!slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("%s: not user 65532, read-only, cap_drop ALL, tmpfs /tmp, no-new-privileges: user %q ro %v caps %v tmpfs %v", c, s.User, s.ReadOnly, s.CapDrop, s.Tmpfs)
		}
		var cfgFile string
		for _, v := range s.Volumes {
			if v.Target == "/etc/kailash/"+c+".yaml" {
				cfgFile = v.Source
			}
			if !v.ReadOnly {
				t.Errorf("%s: volume %s is writable", c, v.Target)
			}
		}
		if cfgFile == "" {
			t.Fatalf("%s: no /etc/kailash/%s.yaml mounted", c, c)
		}
		if v := s.Environment["KAILASH_REDIS_PASSWORD"]; v == nil || *v != "test-redis-password" {
			t.Errorf("%s: KAILASH_REDIS_PASSWORD not from the environment", c)
		}
		validateComposeConfig(t, c, cfgFile)
	}
	if v := p.Services["runner"].Environment["PGPASSWORD"]; v == nil || *v != "test-postgres-password" {
		t.Errorf("runner: PGPASSWORD not from the environment")
	}
	for _, d := range []struct{ svc, on string }{{"runner", "postgres"}, {"authz", "redis"}, {"ratelimit", "redis"}, {"envoy", "xds"}} {
		dep, ok := p.Services[d.svc].DependsOn[d.on]
		if !ok {
			t.Errorf("%s does not depend on %s", d.svc, d.on)
		}
		if (d.on == "redis" || d.on == "postgres") && dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s waits for %s %q, want service_healthy", d.svc, d.on, dep.Condition)
		}
	}
	for _, db := range []string{"redis", "postgres"} {
		if p.Services[db].HealthCheck == nil {
			t.Errorf("%s: no healthcheck", db)
		}
	}
	// Passwords only by interpolation: the file itself holds none.
	raw, err := os.ReadFile("../../compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "test-") {
		t.Fatal("test values leaked into compose.yaml")
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.Contains(l, "PASSWORD:") && !strings.Contains(l, "${") {
			t.Errorf("a password not taken from the environment: %s", strings.TrimSpace(l))
		}
	}
	// Without the passwords, compose refuses to start (not an empty password).
	os.Unsetenv("KAILASH_REDIS_PASSWORD")
	opts2, _ := cli.NewProjectOptions([]string{"../../compose.yaml"}, cli.WithOsEnv)
	if _, err := opts2.LoadProject(context.Background()); err == nil || !strings.Contains(err.Error(), "KAILASH_REDIS_PASSWORD") {
		t.Errorf("compose.yaml loads without KAILASH_REDIS_PASSWORD: %v", err)
	}
}

// validateComposeConfig: kailash validate accepts the process's file (keys
// and workflows beside it, as mounted), and it listens on 0.0.0.0 only at
// its own addresses, reaching the others by compose service name.
func validateComposeConfig(t *testing.T, c, file string) {
	t.Helper()
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(text, &m); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for _, sec := range []string{"xds", "authz", "ratelimit", "runner"} {
		secm, _ := m[sec].(map[string]any)
		for _, f := range []string{"grpc", "http"} {
			v, ok := secm[f].(string)
			if !ok {
				continue
			}
			want := sec + ":"
			if sec == c {
				want = "0.0.0.0:"
			}
			if !strings.HasPrefix(v, want) {
				t.Errorf("%s: %s.%s = %q, want %s...", file, sec, f, v, want)
			}
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kailash.yaml"), text, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"keys", "workflows"} {
		abs, _ := filepath.Abs("../../../examples/" + l)
		if err := os.Symlink(abs, filepath.Join(dir, l)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(kailashBin(t), "validate", "-c", filepath.Join(dir, "kailash.yaml")).CombinedOutput(); err != nil {
		t.Errorf("kailash validate %s: %v\n%s", file, err, out)
	}
}
