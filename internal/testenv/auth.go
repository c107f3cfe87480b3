package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/kailash-gw/kailash/internal/devtoken"
)

// RepoPath is path (slash-separated, from the repository root) as an
// absolute path, whichever package's test asks.
func RepoPath(path string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", filepath.FromSlash(path))
}

// DevKey is the example development signing key (examples/keys), the
// private key `kailash token` signs with.
func DevKey(t testing.TB) jwk.Key {
	t.Helper()
	pem, err := os.ReadFile(RepoPath("examples/keys/dev-signing-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := devtoken.Key(pem)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// DevJWKSPath is the absolute path of the example JWKS (DevKey's public half).
func DevJWKSPath() string { return RepoPath("examples/keys/dev.jwks.json") }

// HeaderMap flattens a CheckResponse's header options; appended values are
// joined with ",". A header set twice without append, or set with another
// action than overwrite, is a test error.
func HeaderMap(t testing.TB, hs []*corev3.HeaderValueOption) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, h := range hs {
		k := h.GetHeader().GetKey()
		if _, dup := m[k]; dup {
			if h.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				t.Errorf("header %s set twice without append", k)
			}
			m[k] += "," + h.GetHeader().GetValue()
			continue
		}
		if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("header %s: action %v", k, h.GetAppendAction())
		}
		m[k] = h.GetHeader().GetValue()
	}
	return m
}
