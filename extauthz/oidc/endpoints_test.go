package oidc_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/kailash-gw/kailash/extauthz/oidc"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// The endpoints of the last good discovery document are kept: a document
// naming unusable endpoints, or a failed discovery, does not replace them.
func TestEndpointsFromDiscovery(t *testing.T) {
	key := testenv.DevKey(t)
	var doc atomic.Value
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		d := doc.Load().(map[string]any)
		if d == nil {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		d["issuer"], d["jwks_uri"] = srv.URL, srv.URL+"/keys"
		_ = json.NewEncoder(w).Encode(d)
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, _ *http.Request) { testenv.WriteJWKS(t, w, []jwk.Key{key}) })
	srv = httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	k, err := oidc.New(oidc.Config{Issuer: srv.URL, MinRefetch: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k.Endpoints(); ok {
		t.Fatal("endpoints before any fetch")
	}
	doc.Store(map[string]any{"authorization_endpoint": "javascript:x", "token_endpoint": srv.URL + "/token"})
	if _, err := k.Keys(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.Endpoints(); ok {
		t.Fatal("an authorization endpoint that is no http(s) URL was accepted")
	}
	doc.Store(map[string]any{"authorization_endpoint": srv.URL + "/auth", "token_endpoint": srv.URL + "/token",
		"end_session_endpoint": srv.URL + "/end", "token_endpoint_auth_methods_supported": []string{"client_secret_post"}})
	k.RefreshForKID(t.Context(), "unknown")
	e, ok := k.Endpoints()
	if !ok || e.Authorization != srv.URL+"/auth" || e.Token != srv.URL+"/token" || e.EndSession != srv.URL+"/end" ||
		len(e.TokenAuthMethods) != 1 || e.TokenAuthMethods[0] != "client_secret_post" {
		t.Fatalf("endpoints %+v %v", e, ok)
	}
	doc.Store(map[string]any(nil))
	k.RefreshForKID(t.Context(), "unknown-2")
	if e2, ok := k.Endpoints(); !ok || e2.Authorization != e.Authorization {
		t.Fatalf("a failed discovery dropped the endpoints: %+v %v", e2, ok)
	}
}
