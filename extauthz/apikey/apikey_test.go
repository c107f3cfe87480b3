package apikey

import (
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/extauthz/envoyauth"
)

func reason(err error) envoyauth.Reason {
	var ae *envoyauth.AuthError
	if errors.As(err, &ae) {
		return ae.Reason
	}
	return ""
}

func TestKeys(t *testing.T) {
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	k, secret, err := New("acme", "ci", []string{"admin"}, []string{"10.0.0.0/8"}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "kl_"+k.ID+"_") || strings.Contains(k.Hash, strings.TrimPrefix(secret, "kl_"+k.ID+"_")) {
		t.Fatalf("key %q stored %+v", secret, k)
	}
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := WriteFile(path, File{Keys: []Key{k}}); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFile(path)
	if err != nil || len(f.Keys) != 1 {
		t.Fatalf("%v %+v", err, f)
	}
	s := NewStore()
	s.Replace(f)
	in := netip.MustParseAddr("10.1.2.3")
	id, err := s.Verify(secret, "acme", in, now)
	if err != nil || id.Subject != "sa:ci" || id.Roles[0] != "admin" || id.Method != "apikey" || s.LastUsed(k.ID) != now {
		t.Fatalf("verify: %+v %v", id, err)
	}
	for _, tc := range []struct {
		key, tenant string
		from        netip.Addr
		at          time.Time
		want        envoyauth.Reason
	}{
		{"kl_" + k.ID + "_nope", "acme", in, now, ReasonUnknownKey},
		{"kl_nope_" + strings.TrimPrefix(secret, "kl_"+k.ID+"_"), "acme", in, now, ReasonUnknownKey},
		{"garbage", "acme", in, now, envoyauth.ReasonMalformed},
		{secret, "globex", in, now, envoyauth.ReasonWrongTenant},
		{secret, "acme", netip.MustParseAddr("192.0.2.1"), now, ReasonNetwork},
		{secret, "acme", in, now.Add(2 * time.Hour), envoyauth.ReasonExpired},
	} {
		if _, err := s.Verify(tc.key, tc.tenant, tc.from, tc.at); reason(err) != tc.want {
			t.Errorf("%q %s %s: %v, want %s", tc.key, tc.tenant, tc.from, err, tc.want)
		}
	}
	r, secret2, err := Rotate(k)
	if err != nil {
		t.Fatal(err)
	}
	s.Replace(File{Keys: []Key{r}})
	if _, err := s.Verify(secret, "acme", in, now); reason(err) != ReasonUnknownKey {
		t.Errorf("the rotated-out secret: %v", err)
	}
	if _, err := s.Verify(secret2, "acme", in, now); err != nil {
		t.Errorf("the new secret: %v", err)
	}
	r.Revoked = now
	s.Replace(File{Keys: []Key{r}})
	if _, err := s.Verify(secret2, "acme", in, now); reason(err) != ReasonRevokedKey {
		t.Errorf("revoked: %v", err)
	}
	if _, _, err := New("acme", "x", nil, []string{"10.0.0.1"}, 0, now); err == nil {
		t.Error("a bad CIDR was accepted")
	}
}
