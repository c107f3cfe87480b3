package extauthz

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/status"
)

// The authz status report: tenants, the policy in force, and every
// reloader — the config, the bundle and each JWKS source — with its last
// error, and no credential of a URL.
func TestStatusReport(t *testing.T) {
	idp := newJWKSIdP(t, otherKey(t, "k1"))
	idp.down.Store(true)
	cfg := jwksTenantConfig(t, idp.URL+"/keys?api_key=s3cret", config.KeyRefresh{MinRefetch: 100 * time.Millisecond,
		InitialBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	cfg.Digest = "d1"
	r := startServer(t, cfg)

	var rep status.Report
	deadline := time.Now().Add(20 * time.Second)
	for {
		rep = r.srv.Status()
		if jwks := reloadNamed(rep, "jwks "); jwks != nil && jwks.Failing && jwks.LastError != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failing JWKS reloader in %+v", rep.Reloaders)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if rep.Component != "authz" || rep.ConfigHash != "d1" || rep.Build.Version == "" {
		t.Errorf("report: %+v", rep)
	}
	if rep.Tenants.Count != 2 || rep.Tenants.List[0].ID != "acme" || rep.Tenants.List[0].Plan != "enterprise" ||
		strings.Join(rep.Tenants.List[0].Features, ",") != "workflows,audit" || rep.Tenants.List[1].Domains[0] != "globex.localhost" ||
		!rep.Tenants.List[0].Active {
		t.Errorf("tenants: %+v", rep.Tenants)
	}
	if p := rep.Policy; p == nil || p.Revision != r.srv.Engine().Revision() || p.Revision == "" || p.Source != "embedded" || p.LoadedAt.IsZero() ||
		p.DecisionCache == "" || p.DecisionCache != r.srv.Engine().CachePlan() {
		t.Errorf("policy: %+v", p)
	}
	jwks := reloadNamed(rep, "jwks ")
	if !strings.Contains(jwks.Name, testIssuer) || !strings.Contains(jwks.Name, idp.URL+"/keys") || jwks.Failures < 1 || jwks.ErrorAt.IsZero() {
		t.Errorf("jwks reloader: %+v", jwks)
	}
	if c := reloadNamed(rep, "config"); c == nil || c.Failing || c.LastOK.IsZero() {
		t.Errorf("config reloader: %+v", c)
	}
	if reloadNamed(rep, "policy") == nil {
		t.Errorf("no policy reloader: %+v", rep.Reloaders)
	}

	// A config the server refuses: recorded, the tenants in force stay.
	bad := testConfig(t)
	bad.Tenants[1].JWT.JWKSFile = "/nonexistent/jwks.json"
	if err := r.srv.Update(bad); err == nil {
		t.Fatal("Update accepted a missing jwks_file")
	}
	rep = r.srv.Status()
	if c := reloadNamed(rep, "config"); !c.Failing || c.Failures != 1 || !strings.Contains(c.LastError, `tenant "globex"`) {
		t.Errorf("config reloader after a refused config: %+v", c)
	}
	if rep.ConfigHash != "d1" {
		t.Errorf("config hash changed to %q by a refused config", rep.ConfigHash)
	}

	// Over HTTP, JSON by default; never the URL's query.
	resp, err := http.Get("http://" + r.srv.HTTPAddr() + status.Path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got status.Report
	if err := json.Unmarshal(b, &got); err != nil || got.Component != "authz" || got.Tenants.Count != 2 {
		t.Fatalf("GET %s: %v %s", status.Path, err, b)
	}
	if strings.Contains(string(b), "s3cret") {
		t.Errorf("the status shows the JWKS URL's query: %s", b)
	}
}

func reloadNamed(rep status.Report, prefix string) *status.Reload {
	for i := range rep.Reloaders {
		if strings.HasPrefix(rep.Reloaders[i].Name, prefix) {
			return &rep.Reloaders[i]
		}
	}
	return nil
}
