package session

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"
)

func sha256Of(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// BenchmarkVerifySessionToken is the Check-path cost of one of our session
// tokens: "cached" is every request after a token's first; "uncached" pays
// the ECDSA verification and JSON decoding each time.
func BenchmarkVerifySessionToken(b *testing.B) {
	for _, bc := range []struct {
		name  string
		cache int
		alg   string
	}{{"cached", 0, "ES256"}, {"uncached", -1, "ES256"}, {"uncached-RS256", -1, "RS256"}} {
		b.Run(bc.name, func(b *testing.B) {
			f := newFixture(b, Config{CacheSize: bc.cache, IdleTimeout: time.Hour}, KeyRingConfig{Algorithm: bc.alg})
			ctx := context.Background()
			tok, err := f.m.Issue(ctx, alice)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := f.m.Verify(ctx, tok.AccessToken); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkIssue(b *testing.B) {
	f := newFixture(b, Config{}, KeyRingConfig{})
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		id := alice
		id.Subject = string(rune('a'+i%26)) + "user"
		if _, err := f.m.Issue(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}
