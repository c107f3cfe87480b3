package api

import (
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// readyz is the runner's /readyz?verbose.
func readyz(t *testing.T, s *Server) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz?verbose", nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

// SQLite: ready while the data directory is there; removed, 503 naming it.
func TestReadinessDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s := newTestServerCfg(t, nil, config.Runner{DataDir: dir})
	if code, body := readyz(t, s); code != 200 || body != "[+]shutdown ok\n[+]data_dir ok\nreadyz check passed\n" {
		t.Fatalf("ready: %d %q", code, body)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if code, body := readyz(t, s); code != 503 || !strings.Contains(body, "[-]data_dir failed: runner.data_dir: stat "+dir) {
		t.Fatalf("data dir removed: %d %q", code, body)
	}
}

// PostgreSQL: ready while the server answers, 503 with the driver's
// reason once it is stopped.
func TestReadinessPostgres(t *testing.T) {
	pg := testenv.StartPostgres(t)
	s := newTestServerCfg(t, nil, config.Runner{PostgresDSN: pg.DSN})
	if code, body := readyz(t, s); code != 200 || !strings.Contains(body, "[+]postgres ok") {
		t.Fatalf("ready: %d %q", code, body)
	}
	pg.Stop()
	code, body := readyz(t, s)
	if code != 503 || !strings.Contains(body, "[-]postgres failed: postgresql: ") || !strings.HasSuffix(body, "readyz check failed\n") {
		t.Fatalf("postgres stopped: %d %q", code, body)
	}
	if strings.Contains(body, "password") {
		t.Errorf("reason mentions a password: %q", body)
	}
}

// runner.identity_jwks at a URL nobody serves: not ready (every request
// would get 401), the reason names the field.
func TestReadinessIdentityJWKS(t *testing.T) {
	s := newTestServerCfg(t, nil, config.Runner{IdentityJWKS: "http://" + testenv.FreeAddr(t) + "/auth/.well-known/jwks.json"})
	code, body := readyz(t, s)
	if code != 503 || !strings.Contains(body, "[+]data_dir ok") || !strings.Contains(body, "[-]identity_jwks failed: runner.identity_jwks: ") {
		t.Fatalf("jwks unreachable: %d %q", code, body)
	}
}
