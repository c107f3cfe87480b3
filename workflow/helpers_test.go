package workflow

import (
	"testing"

	"github.com/kailash-gw/kailash/internal/config"
)

func newTestServer(t *testing.T, wfs map[string]*Workflow) *Server {
	t.Helper()
	s, err := New(&config.Config{Runner: config.Runner{HTTP: "127.0.0.1:0"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ln.Close() })
	s.workflows.Store(&wfs)
	return s
}
