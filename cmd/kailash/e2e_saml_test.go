package main

// End-to-end: SAML single sign-on through Envoy. The test plays the IdP with
// a key of its own: it reads the AuthnRequest from the redirect, signs a
// response to it and posts that to the ACS, as the browser would.

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/samltest"
)

const (
	samlIdPEntity = "https://idp.example.com/metadata"
	samlIdPSSO    = "https://idp.example.com/sso"
)

// samlIdP is the test's IdP and the SP it answers (known once the ports are).
type samlIdP struct {
	*samltest.IdP
	acsURL, spEntity string
}

// samlTenantYAML is tenant acme with SAML login against idp.
func samlTenantYAML(t *testing.T, p ports, idp *samlIdP) string {
	dir := t.TempDir()
	keyFile, certFile := samltest.NewKeyPair(t, "kailash-sp").WriteFiles(t, dir, "sp")
	mdFile := idp.WriteMetadata(t, dir)
	_, port, _ := strings.Cut(p.envoy, ":")
	idp.acsURL = "http://acme.localhost:" + port + "/auth/saml/acs"
	idp.spEntity = "http://acme.localhost:" + port + "/auth/saml/metadata"
	return tenantYAML(t, "acme") + fmt.Sprintf(`    saml:
      entity_id: %s
      acs_url: %s
      key_file: %s
      cert_file: %s
      idp_metadata_file: %s
      group_roles: {Engineering: data_scientist, Admins: admin}
`, idp.spEntity, idp.acsURL, keyFile, certFile, mdFile)
}

// response is a signed SAML response of the IdP for alice, answering requestID.
func (idp *samlIdP) response(t *testing.T, requestID, assertionID string) string {
	t.Helper()
	return idp.ResponseXML(t, samltest.Response{
		AssertionID: assertionID, InResponseTo: requestID,
		NameID: "alice@example.com", Audience: idp.spEntity, Destination: idp.acsURL,
		Attributes: map[string][]string{
			"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress": {"alice@example.com"},
			"http://schemas.microsoft.com/ws/2008/06/identity/claims/groups":     {"Engineering"},
			"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/department":   {"R&D"},
		},
	})
}

// samlStart is GET /auth/saml/login through Envoy: it returns the
// AuthnRequest id (read from the redirect, as the IdP would) and the
// request cookie.
func (s *stack) samlStart(t *testing.T, returnTo string) (requestID string, cookie *http.Cookie) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+s.ports.envoy+"/auth/saml/login?return_to="+url.QueryEscape(returnTo), nil)
	req.Host = "acme.localhost"
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("saml login: %d", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Scheme+"://"+loc.Host+loc.Path != samlIdPSSO {
		t.Fatalf("redirect to %q", resp.Header.Get("Location"))
	}
	if rs := loc.Query().Get("RelayState"); rs != returnTo {
		t.Fatalf("RelayState %q", rs)
	}
	authn := samltest.AuthnRequest(t, loc)
	for _, c := range resp.Cookies() {
		if c.Name == "kailash_saml_req" {
			cookie = c
		}
	}
	if cookie == nil || cookie.Value != authn.ID || !cookie.HttpOnly || !cookie.Secure || cookie.SameSite != http.SameSiteNoneMode || cookie.Path != "/auth/saml/" {
		t.Fatalf("request cookie %+v for request %q", cookie, authn.ID)
	}
	return authn.ID, cookie
}

// samlPost posts a response to the ACS through Envoy, as the browser would.
func (s *stack) samlPost(t *testing.T, response, relayState string, cookie *http.Cookie) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+s.ports.envoy+"/auth/saml/acs", strings.NewReader(samltest.PostForm(response, relayState).Encode()))
	req.Host = "acme.localhost"
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func (s *stack) metrics(t *testing.T) string {
	t.Helper()
	resp, err := s.client.Get("http://" + s.ports.authzHTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestSAMLEndToEnd(t *testing.T) {
	idp := &samlIdP{IdP: samltest.NewIdP(t, samlIdPEntity, samlIdPSSO)}
	s := startStackConfig(t, func(p ports) string { return configYAML(t, p) + samlTenantYAML(t, p, idp) })

	t.Run("SP metadata", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+s.ports.envoy+"/auth/saml/metadata", nil)
		req.Host = "acme.localhost"
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), idp.acsURL) || !strings.Contains(string(b), idp.spEntity) {
			t.Fatalf("metadata: %d %s", resp.StatusCode, b)
		}
	})

	var response string
	var cookie *http.Cookie
	t.Run("login, ACS, session on a protected route", func(t *testing.T) {
		var id string
		id, cookie = s.samlStart(t, "/app/dashboard?tab=1")
		response = idp.response(t, id, "_a-"+id)
		resp := s.samlPost(t, response, "/app/dashboard?tab=1", cookie)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/app/dashboard?tab=1" {
			t.Fatalf("acs: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		session := cookieValue(resp.Cookies(), "kailash_session")
		if session == "" || cookieValue(resp.Cookies(), "kailash_refresh") == "" {
			t.Fatalf("no session cookies: %v", resp.Header.Values("Set-Cookie"))
		}
		got := s.mustDo("acme.localhost", "", map[string]string{"Cookie": "kailash_session=" + session, "Sec-Fetch-Site": "same-origin"})
		if got.code != 200 {
			t.Fatalf("protected route: %d %s", got.code, got.body)
		}
		if m := got.json(t); m["user"] != "alice@example.com" || m["tenant"] != "acme" {
			t.Fatalf("runner saw %s", got.body)
		}
	})

	t.Run("replayed response is refused", func(t *testing.T) {
		if resp := s.samlPost(t, response, "/", cookie); resp.StatusCode != http.StatusUnauthorized || cookieValue(resp.Cookies(), "kailash_session") != "" {
			t.Fatalf("replay: %d", resp.StatusCode)
		}
		// Nor with a fresh request cookie: that request is not the one answered.
		id, fresh := s.samlStart(t, "/")
		if resp := s.samlPost(t, response, "/", fresh); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("replay with a fresh request %s: %d", id, resp.StatusCode)
		}
	})

	t.Run("tampered response is refused", func(t *testing.T) {
		id, c := s.samlStart(t, "/")
		doc := strings.Replace(idp.response(t, id, "_a-"+id), ">Engineering<", ">Admins<", 1)
		if resp := s.samlPost(t, doc, "/", c); resp.StatusCode != http.StatusUnauthorized || cookieValue(resp.Cookies(), "kailash_session") != "" {
			t.Fatalf("tampered: %d", resp.StatusCode)
		}
		if m := s.metrics(t); !strings.Contains(m, `kailash_auth_logins_total{method="saml",reason="bad_signature",result="failure"} 1`) ||
			!strings.Contains(m, `kailash_auth_logins_total{method="saml",reason="",result="success"} 1`) {
			t.Fatalf("metrics:\n%s", grepLines(m, "kailash_auth_logins_total"))
		}
	})

	t.Run("open redirect refused", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+s.ports.envoy+"/auth/saml/login?return_to="+url.QueryEscape("//evil.example/"), nil)
		req.Host = "acme.localhost"
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("return_to=//evil.example/: %d", resp.StatusCode)
		}
		// A valid response posted with an off-site RelayState lands on "/".
		id, c := s.samlStart(t, "/")
		if resp := s.samlPost(t, idp.response(t, id, "_b-"+id), "https://evil.example/", c); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
			t.Fatalf("off-site RelayState: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
