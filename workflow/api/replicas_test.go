package api

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// gate is an upstream whose requests wait until open is closed.
func gate(t *testing.T) (host string, arrived <-chan struct{}, open chan struct{}) {
	arr := make(chan struct{}, 16)
	open = make(chan struct{})
	host = upstream(t, func(w http.ResponseWriter, r *http.Request) {
		arr <- struct{}{}
		select {
		case <-open:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"answer":42}`))
		case <-r.Context().Done():
		}
	})
	return host, arr, open
}

const gatedWorkflow = `{"name":"gated","nodes":[{"id":"first","type":"identity"},{"id":"wait","type":"http","config":{"url":"http://%s/wait"}}],"connections":[{"from":"first","to":"wait"}]}`

func client(t *testing.T, s *Server) apiClient {
	return apiClient{t, s.Handler(), map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": "alice"}}
}

// Two runners on one PostgreSQL: the second starting mid-execution leaves
// the first one's execution running, and the first one's result is stored
// (before leases it was marked interrupted and the result dropped).
func TestTwoRunnersOnOnePostgres(t *testing.T) {
	pg := testenv.StartPostgres(t)
	host, arrived, open := gate(t)
	r := config.Runner{PostgresDSN: pg.DSN, HTTPAllow: []string{host}}
	a := client(t, newTestServerCfg(t, nil, r))
	if code, body := a.do("POST", "/v1/workflows", fmt.Sprintf(gatedWorkflow, host)); code != 201 {
		t.Fatalf("create: %d %v", code, body)
	}
	code, body := a.do("POST", "/v1/workflows/gated/executions?async=true", `{}`)
	if code != 202 {
		t.Fatalf("start: %d %v", code, body)
	}
	id := body["execution_id"].(string)
	select {
	case <-arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("the execution never reached its slow node")
	}

	b := client(t, newTestServerCfg(t, nil, r)) // the second replica starts now
	if _, body := b.do("GET", "/v1/workflows/gated/executions/"+id, ""); body["status"] != "running" {
		t.Fatalf("the second runner's start touched the first one's execution: %v", body)
	}
	close(open)
	testenv.Eventually(t, 20*time.Second, func() error {
		_, body := b.do("GET", "/v1/workflows/gated/executions/"+id, "")
		out, _ := body["output"].(map[string]any)
		if body["status"] != "completed" || out == nil || !strings.Contains(fmt.Sprint(out), "42") {
			return fmt.Errorf("the first runner's result is not stored: %v", body)
		}
		return nil
	})
}

// max_concurrent_executions holds across runners: with one slot taken on
// the first runner, the second refuses with 429.
func TestConcurrencyLimitAcrossRunners(t *testing.T) {
	pg := testenv.StartPostgres(t)
	host, arrived, open := gate(t)
	defer close(open)
	r := config.Runner{PostgresDSN: pg.DSN, HTTPAllow: []string{host}, Limits: config.RunnerLimits{MaxConcurrentExecutions: 1}}
	a, b := client(t, newTestServerCfg(t, nil, r)), client(t, newTestServerCfg(t, nil, r))
	if code, body := a.do("POST", "/v1/workflows", fmt.Sprintf(gatedWorkflow, host)); code != 201 {
		t.Fatalf("create: %d %v", code, body)
	}
	if code, body := a.do("POST", "/v1/workflows/gated/executions?async=true", `{}`); code != 202 {
		t.Fatalf("start: %d %v", code, body)
	}
	<-arrived
	code, body := b.do("POST", "/v1/workflows/gated/executions?async=true", `{}`)
	if code != http.StatusTooManyRequests || body["limit"] != "max_concurrent_executions" {
		t.Fatalf("a second execution on the other runner: %d %v", code, body)
	}
}

// A second runner on the same SQLite data directory is refused at start.
func TestSecondSQLiteRunnerRefused(t *testing.T) {
	dir := t.TempDir()
	newTestServerCfg(t, nil, config.Runner{DataDir: dir})
	_, err := New(&config.Config{Runner: config.Runner{HTTP: "127.0.0.1:0", DataDir: dir}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "another runner holds") {
		t.Fatalf("second runner on %s: %v", dir, err)
	}
}
