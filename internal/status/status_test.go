package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
)

func sample() Report {
	f := false
	cfg := &config.Config{Digest: "abc123", Tenants: []config.Tenant{
		{ID: "zeta", Domains: []string{"zeta.example"}, Active: &f},
		{ID: "acme", Domains: []string{"acme.example", "www.acme.example"}, Plan: "gold", Features: []string{"sso"}},
	}}
	r := NewReloader("config")
	r.Record(errors.New(`kailash.yaml:3: tenants[0].jwt.jwks_url: "https://user:pw@idp.example/jwks?key=s3cret" unreachable`))
	return Report{
		Component: "xds", Time: time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC), Build: BuildOf(),
		ConfigHash: cfg.Digest, Tenants: TenantsOf(cfg),
		Snapshot: &Snapshot{Version: "v1", Resources: map[string]int{"listeners": 1}},
		Envoys: &Envoys{Count: 1, List: []Envoy{{NodeID: `<script>alert("x")</script>`, AckedVersion: "v1", InSync: true,
			LastNACK: &NACK{TypeURL: "t", Message: "bad <b>listener</b>"}}}},
		Reloaders: Reloads(r, nil),
	}
}

func get(t *testing.T, url, accept string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("GET", url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	w := httptest.NewRecorder()
	Handler(sample).ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, w.Code, w.Body)
	}
	return w
}

func TestHandlerJSON(t *testing.T) {
	for _, accept := range []string{"", "*/*", "application/json", "application/json, text/html"} {
		w := get(t, Path, accept)
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("Accept %q: Content-Type %q", accept, ct)
		}
		var r Report
		if err := json.Unmarshal(w.Body.Bytes(), &r); err != nil {
			t.Fatalf("Accept %q: %v", accept, err)
		}
		if r.Component != "xds" || r.ConfigHash != "abc123" || r.Tenants.Count != 2 || r.Tenants.List[0].ID != "acme" ||
			r.Tenants.List[1].Active || !r.Tenants.List[0].Active || r.Envoys.List[0].AckedVersion != "v1" {
			t.Errorf("decoded: %+v", r)
		}
	}
	// The fields operators and `kailash status` read are named as documented.
	body := get(t, Path+"?format=json", "text/html").Body.String()
	for _, k := range []string{`"config_hash"`, `"tenants"`, `"acked_version"`, `"last_nack"`, `"reloaders"`, `"last_error_at"`, `"snapshot"`} {
		if !strings.Contains(body, k) {
			t.Errorf("JSON lacks %s", k)
		}
	}
}

func TestHandlerHTML(t *testing.T) {
	for _, url := range []string{Path, Path + "?format=html"} {
		accept := "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8" // a browser's
		if strings.Contains(url, "format") {
			accept = ""
		}
		w := get(t, url, accept)
		if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Fatalf("%s: Content-Type %q", url, ct)
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("CSP %q", csp)
		}
		b := w.Body.String()
		for _, want := range []string{"acme.example, www.acme.example", `class="tenant-id">zeta<`, ">v1<",
			"&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;", "bad &lt;b&gt;listener&lt;/b&gt;", "setInterval(refresh, 5000)"} {
			if !strings.Contains(b, want) {
				t.Errorf("%s: page lacks %q", url, want)
			}
		}
		if strings.Contains(b, `<script>alert`) || strings.Contains(b, "<b>listener") {
			t.Errorf("%s: unescaped data in the page", url)
		}
		if strings.Contains(b, "src=") || strings.Contains(b, "href=") {
			t.Errorf("%s: the page loads external assets", url)
		}
	}
}

func TestNoSecretsInMessages(t *testing.T) {
	b := get(t, Path, "").Body.String()
	for _, secret := range []string{"s3cret", "user:pw", "pw@"} {
		if strings.Contains(b, secret) {
			t.Errorf("report shows %q: %s", secret, b)
		}
	}
	if !strings.Contains(b, "https://idp.example/jwks?…") {
		t.Errorf("the URL should stay recognisable: %s", b)
	}
	for in, want := range map[string]string{
		"https://u:p@bundles.example/b.tar.gz?token=x#f": "https://bundles.example/b.tar.gz",
		"/etc/kailash/policies":                          "/etc/kailash/policies",
		"embedded":                                       "embedded",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Cut(strings.Repeat("é", 2000)); len(got) > MaxMessageLen+len("…") || !strings.HasSuffix(got, "…") {
		t.Errorf("Cut: %d bytes", len(got))
	}
}

func TestReloader(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := NewReloader("bundle")
	r.now = func() time.Time { return at }
	r.Record(errors.New("policy.rego:3: rego_parse_error"))
	st := r.Status()
	if !st.Failing || st.Failures != 1 || st.LastError != "policy.rego:3: rego_parse_error" || !st.ErrorAt.Equal(at) {
		t.Fatalf("after a failure: %+v", st)
	}
	at = at.Add(time.Minute)
	r.Record(nil)
	st = r.Status()
	if st.Failing || st.Failures != 1 || !st.LastOK.Equal(at) || st.LastError == "" {
		t.Fatalf("after a success the last error stays, not failing: %+v", st)
	}
	var nilR *Reloader
	nilR.Record(nil) // a reloader that does not exist records nothing
}

func TestTenantsBounded(t *testing.T) {
	cfg := &config.Config{}
	for i := range MaxTenants + 10 {
		tn := config.Tenant{ID: fmt.Sprintf("t%04d", i)}
		for j := range MaxDomains + 3 {
			tn.Domains = append(tn.Domains, fmt.Sprintf("d%d.t%d.example", j, i))
		}
		cfg.Tenants = append(cfg.Tenants, tn)
	}
	ts := TenantsOf(cfg)
	if ts.Count != MaxTenants+10 || len(ts.List) != MaxTenants || !ts.Truncated {
		t.Fatalf("count %d, listed %d, truncated %v", ts.Count, len(ts.List), ts.Truncated)
	}
	if d := ts.List[0]; len(d.Domains) != MaxDomains || d.MoreDomains != 3 || d.ID != "t0000" {
		t.Errorf("first tenant: %d domains, %d more, %s", len(d.Domains), d.MoreDomains, d.ID)
	}
}
