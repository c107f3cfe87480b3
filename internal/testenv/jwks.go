package testenv

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// WriteJWKS answers a JWKS request of a test identity provider with the
// public halves of keys (private keys, as the test signs with them).
func WriteJWKS(t testing.TB, w http.ResponseWriter, keys []jwk.Key) {
	set := jwk.NewSet()
	for _, k := range keys {
		pub, err := k.PublicKey()
		if err != nil {
			t.Error(err)
			continue
		}
		_ = set.AddKey(pub)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(set)
}
