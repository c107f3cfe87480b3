package workflow

import (
	"testing"

	"github.com/kailash-gw/kailash/internal/config"
)

func newTestServer(t *testing.T, wfs map[string]*Workflow) *Server {
	t.Helper()
	return newTestServerCfg(t, wfs, config.Runner{HTTP: config.MustHostPort("127.0.0.1:0")})
}

func newTestServerCfg(t *testing.T, wfs map[string]*Workflow, r config.Runner) *Server {
	t.Helper()
	if r.HTTP.IsZero() {
		r.HTTP = config.MustHostPort("127.0.0.1:0")
	}
	s, err := New(&config.Config{Runner: r}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ln.Close(); s.shutdown() })
	if wfs != nil {
		s.workflows.Store(&wfs)
	}
	return s
}
