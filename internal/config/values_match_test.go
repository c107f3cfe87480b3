package config

import (
	"math/rand/v2"
	"regexp"
	"testing"
)

// The regular expressions the hand-written matchers replace (they run for
// every tenant, domain and origin of every config: 100,000 tenants).
var (
	tenantIDRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	domainRe   = regexp.MustCompile(`^(\*\.)?[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(:[0-9*]+)?$`)
	originRe   = regexp.MustCompile(`^https?://[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?$`)
)

// TestMatchersAgreeWithRegexps: ValidTenantID, ValidDomain and validOrigin
// accept exactly what their regular expressions do, on hand-picked cases
// and on random strings over the characters that matter.
func TestMatchersAgreeWithRegexps(t *testing.T) {
	cases := []string{"", "a", "-", "a-", "-a", "a-b", "A", "t00001", "a.b", "*.a.b", "*.", "*", "**.a", "a:", "a:1", "a:*", "a:1:2",
		"*.a:80", "a..b", "a.-b", "a.", ".a", "é", "https://", "https://a", "http://a:8080", "https://*", "https://*.a", "https://a:",
		"https://a:x", "ftp://a", "https://a/", "https://a.b-c.d:443", "http://A1", "https://a:*", "a b", "a\n"}
	long := "a"
	for range 70 {
		long += "b"
		cases = append(cases, long)
	}
	r := rand.New(rand.NewPCG(1, 2))
	const chars = "aZ09-.*:/htps é"
	for range 200000 {
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = chars[r.IntN(len(chars))]
		}
		s := string(b)
		if r.IntN(3) == 0 {
			s = []string{"http://", "https://", "*."}[r.IntN(3)] + s
		}
		cases = append(cases, s)
	}
	for _, s := range cases {
		if got, want := ValidTenantID(s), tenantIDRe.MatchString(s); got != want {
			t.Errorf("ValidTenantID(%q) = %v, regexp %v", s, got, want)
		}
		if got, want := ValidDomain(s), domainRe.MatchString(s); got != want {
			t.Errorf("ValidDomain(%q) = %v, regexp %v", s, got, want)
		}
		if got, want := validOrigin(s), originRe.MatchString(s); got != want {
			t.Errorf("validOrigin(%q) = %v, regexp %v", s, got, want)
		}
		if ValidTenantID(s) && tenantName(s) != `tenant "`+s+`"` {
			t.Errorf("tenantName(%q) = %s", s, tenantName(s))
		}
	}
	if got := tenantName("A\"b"); got != `tenant "A\"b"` {
		t.Errorf("tenantName of an invalid id: %s", got)
	}
}
