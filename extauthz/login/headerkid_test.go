package login

import (
	"encoding/base64"
	"fmt"
	"testing"
)

// headerKID reads the kid of a JWT header segment, caches it, and never
// holds more than maxHeaderKIDs segments.
func TestHeaderKID(t *testing.T) {
	var a Service
	seg := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for name, tc := range map[string]struct{ seg, kid string }{
		"kid":         {seg(`{"alg":"ES256","kid":"k1","typ":"JWT"}`), "k1"},
		"no kid":      {seg(`{"alg":"ES256"}`), ""},
		"not base64":  {"%%%", ""},
		"not JSON":    {seg(`not json`), ""},
		"trailing":    {seg(`{"kid":"k1"}{}`), ""},
		"kid, cached": {seg(`{"alg":"ES256","kid":"k1","typ":"JWT"}`), "k1"},
	} {
		if got := a.headerKID(tc.seg); got != tc.kid {
			t.Errorf("%s: kid %q, want %q", name, got, tc.kid)
		}
	}
	for i := range 3 * maxHeaderKIDs {
		if got := a.headerKID(seg(fmt.Sprintf(`{"kid":"k%d"}`, i))); got != fmt.Sprintf("k%d", i) {
			t.Fatalf("kid %q", got)
		}
	}
	n := 0
	a.headerKIDs.Range(func(any, any) bool { n++; return true })
	if n > maxHeaderKIDs {
		t.Errorf("cache holds %d header segments, bound %d", n, maxHeaderKIDs)
	}
}
