package ratelimit

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
)

func readyz(t *testing.T, s *Server) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + s.HTTPAddr() + "/readyz?verbose")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// With Redis the service is ready while Redis answers; with Redis down,
// 503 naming Redis and the fail mode that applies; back once Redis is.
// The memory backend has nothing to wait for.
func TestReadinessRedis(t *testing.T) {
	rs := testenv.StartRedis(t)
	cfg := redisConfig(rs.Addr, config.FailOpen)
	cfg.RateLimit.HTTP = config.MustHostPort("127.0.0.1:0")
	s, _ := startServer(t, cfg, Options{})
	if code, body := readyz(t, s); code != 200 || body != "[+]shutdown ok\n[+]redis ok\nreadyz check passed\n" {
		t.Fatalf("redis up: %d %q", code, body)
	}
	rs.Stop()
	code, body := readyz(t, s)
	if code != 503 || !strings.Contains(body, "[-]redis failed: ratelimit.redis: ") || !strings.Contains(body, "(fail mode open applies)") {
		t.Fatalf("redis down: %d %q", code, body)
	}
	rs.Start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := readyz(t, s)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis back, still %d %q", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}

	mcfg := testConfig("127.0.0.1:0")
	mcfg.RateLimit.HTTP = config.MustHostPort("127.0.0.1:0")
	m, _ := startServer(t, mcfg, Options{})
	if code, body := readyz(t, m); code != 200 || body != "[+]shutdown ok\nreadyz check passed\n" {
		t.Fatalf("memory backend: %d %q", code, body)
	}
}
