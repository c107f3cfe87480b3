package main

// A config revision is applied by every component of `kailash up` or by
// none, through the real Envoy.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/kailash-gw/kailash/envoy/envoytest"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// metricValue reads one unlabelled sample from addr's /metrics.
func metricValue(addr, name string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", addr, name)
}

// newKeySet writes a fresh ES256 key's public JWKS to path and returns the
// private key to sign with.
func newKeySet(t *testing.T, path string) jwk.Key {
	t.Helper()
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	_ = key.Set(jwk.KeyIDKey, "key-set-b")
	_ = key.Set(jwk.AlgorithmKey, jwa.ES256)
	pub, err := key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	_ = pub.Set(jwk.KeyUsageKey, "sig")
	b, err := json.Marshal(map[string]any{"keys": []jwk.Key{pub}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return key
}

// TestUpConfigRevisionAllOrNothing edits the file `kailash up` watches with
// revisions one component accepts and another refuses: each leaves every
// component on the previous revision (the tenant keeps its old key set, a
// token for the new one is refused, no new domain is routed), is counted
// in every component's *_config_rejected_total, and a following valid edit
// applies everywhere.
func TestUpConfigRevisionAllOrNothing(t *testing.T) {
	envoytest.Binary(t)
	dir := t.TempDir()
	p := freePorts(t)
	keysA := filepath.Join(dir, "keys-a.json")
	b, err := os.ReadFile("../../examples/keys/dev.jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keysA, b, 0o600); err != nil {
		t.Fatal(err)
	}
	keysB := filepath.Join(dir, "keys-b.json")
	signB := newKeySet(t, keysB)
	broken := filepath.Join(dir, "keys-broken.json")
	if err := os.WriteFile(broken, []byte(`{"keys": [{"kty": "EC", "crv"`), 0o600); err != nil {
		t.Fatal(err)
	}
	// body is the config with acme trusting jwks, extra lines in acme's
	// entry and extra top-level sections.
	body := func(jwks, tenantExtra, top string) string {
		c := configYAML(t, p, "acme")
		c = strings.Replace(c, abs(t, "../../examples/keys/dev.jwks.json"), jwks, 1)
		return c + tenantExtra + top
	}
	path := filepath.Join(dir, "kailash.yaml")
	writeConfig(t, path, body(keysA, "", ""))
	k := startKailash(t, "up", "-c", path, "-log-level", "info")

	claims := devtoken.Claims{Issuer: issuer, Audience: []string{audience}, Tenant: "acme", Subject: "alice", Roles: []string{"business_user"}}
	tokA := devToken(t, "acme")
	tokB, err := devtoken.Mint(signB, claims)
	if err != nil {
		t.Fatal(err)
	}
	code := func(host, tok string) int {
		t.Helper()
		c, _, err := getVia(p.envoy, host, tok, "")
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		return c
	}
	testenv.Eventually(t, 90*time.Second, func() error {
		select {
		case <-k.done:
			t.Fatalf("kailash up exited: %v", k.err)
		default:
		}
		if c, _, err := getVia(p.envoy, "acme.localhost", tokA, ""); err != nil || c != 200 {
			return fmt.Errorf("key set A before any edit: %d %v", c, err)
		}
		return nil
	})
	if c := code("acme.localhost", tokB); c != 401 {
		t.Fatalf("key set B before it is configured: %d, want 401", c)
	}

	servers := map[string]string{"xds": p.xdsHTTP, "authz": p.authzHTTP, "runner": p.runner}
	// waitRejected waits until every server counted n rejected revisions.
	waitRejected := func(n float64) {
		t.Helper()
		testenv.Eventually(t, 15*time.Second, func() error {
			for name, addr := range servers {
				v, err := metricValue(addr, "kailash_"+name+"_config_rejected_total")
				if err != nil {
					return err
				}
				if v != n {
					return fmt.Errorf("kailash_%s_config_rejected_total = %v, want %v", name, v, n)
				}
			}
			return nil
		})
	}
	revision := func(want float64) {
		t.Helper()
		for name, addr := range servers {
			v, err := metricValue(addr, "kailash_config_revision")
			if err != nil {
				t.Fatal(err)
			}
			if v != want {
				t.Errorf("%s: kailash_config_revision = %v, want %v", name, v, want)
			}
		}
	}
	// onOldRevision checks, for a while, that acme still has key set A
	// only and no new domain.
	onOldRevision := func(step string) {
		t.Helper()
		for range 5 {
			if c := code("acme.localhost", tokA); c != 200 {
				t.Fatalf("%s: the old key set is refused: %d", step, c)
			}
			if c := code("acme.localhost", tokB); c != 401 {
				t.Fatalf("%s: a token of the refused revision's key set got %d, want 401", step, c)
			}
			if c := code("acme2.localhost", tokA); c != 404 {
				t.Fatalf("%s: the refused revision's new domain got %d, want 404", step, c)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	t.Run("authz accepts, xds refuses (certificate and key do not match)", func(t *testing.T) {
		writeConfig(t, path, body(keysB,
			fmt.Sprintf("    tls: {cert_file: %s, key_file: %s}\n", abs(t, "../../examples/keys/dev-tls-acme.pem"), abs(t, "../../examples/keys/dev-tls-globex-key.pem")),
			fmt.Sprintf("tls: {listen: %s}\n", testenv.FreeAddr(t))))
		waitRejected(1)
		onOldRevision("after an edit xds refused")
		revision(1)
	})

	t.Run("xds accepts, authz refuses (a JWKS file that does not parse)", func(t *testing.T) {
		c := body(broken, "", "")
		c = strings.Replace(c, "domains: [acme.localhost]", "domains: [acme.localhost, acme2.localhost]", 1)
		writeConfig(t, path, c)
		waitRejected(2)
		onOldRevision("after an edit authz refused")
		revision(1)
	})

	t.Run("a valid edit applies everywhere", func(t *testing.T) {
		writeConfig(t, path, body(keysB, "", ""))
		testenv.Eventually(t, 15*time.Second, func() error {
			if c, _, err := getVia(p.envoy, "acme.localhost", tokB, ""); err != nil || c != 200 {
				return fmt.Errorf("key set B after the valid edit: %d %v", c, err)
			}
			return nil
		})
		if c := code("acme.localhost", tokA); c != 401 {
			t.Fatalf("key set A after it was replaced: %d, want 401", c)
		}
		testenv.Eventually(t, 5*time.Second, func() error {
			for name, addr := range servers {
				if v, err := metricValue(addr, "kailash_config_revision"); err != nil || v != 2 {
					return fmt.Errorf("%s: kailash_config_revision = %v (%v), want 2", name, v, err)
				}
			}
			return nil
		})
		waitRejected(2)
	})

	out := k.out.String()
	for _, want := range []string{"xds: tenant", "authz: tenant"} {
		if !strings.Contains(out, want) {
			t.Errorf("no rejection naming %q in the log", want)
		}
	}
}
