package oidc

import (
	"net/http"
	"testing"
	"time"
)

// The refresh of a known set follows the JWKS response's caching headers,
// within MinRefreshInterval..RefreshInterval.
func TestRefreshAfterHonoursCacheControl(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	lo, hi := time.Minute, 15*time.Minute
	for _, tc := range []struct {
		name   string
		header map[string]string
		want   time.Duration
	}{
		{"no headers: the ceiling", nil, hi},
		{"max-age inside the window", map[string]string{"Cache-Control": "public, max-age=300"}, 5 * time.Minute},
		{"max-age below the floor", map[string]string{"Cache-Control": "max-age=5"}, lo},
		{"max-age above the ceiling", map[string]string{"Cache-Control": "max-age=86400"}, hi},
		{"huge max-age does not overflow", map[string]string{"Cache-Control": "max-age=18446744073709551615"}, hi},
		{"no-cache", map[string]string{"Cache-Control": "no-cache"}, lo},
		{"no-store wins over max-age", map[string]string{"Cache-Control": "max-age=600, no-store"}, lo},
		{"max-age wins over Expires", map[string]string{"Cache-Control": "max-age=120", "Expires": now.Add(10 * time.Minute).Format(http.TimeFormat)}, 2 * time.Minute},
		{"Expires", map[string]string{"Expires": now.Add(10 * time.Minute).Format(http.TimeFormat)}, 10 * time.Minute},
		{"Expires in the past", map[string]string{"Expires": now.Add(-time.Hour).Format(http.TimeFormat)}, lo},
		{"invalid Expires", map[string]string{"Expires": "0"}, lo},
		{"unparsable Cache-Control falls back", map[string]string{"Cache-Control": "max-age=abc"}, hi},
	} {
		h := http.Header{}
		for k, v := range tc.header {
			h.Set(k, v)
		}
		if got := refreshAfter(h, now, lo, hi); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
