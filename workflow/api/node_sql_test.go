package api

import (
	"testing"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/workflow"
)

// A server runs on Postgres when runner.postgres_dsn is set.
func TestServerOnPostgres(t *testing.T) {
	pg := testenv.StartPostgres(t)
	wfs, err := workflow.LoadDir("../../examples/workflows")
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServerCfg(t, wfs, config.Runner{PostgresDSN: pg.DSN})
	c := apiClient{t, s.Handler(), map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": "alice"}}
	code, body := c.do("POST", "/v1/workflows/hello/executions", `{"order":42}`)
	if code != 200 {
		t.Fatalf("execute: %d %v", code, body)
	}
	code, body = c.do("GET", "/v1/workflows/hello/executions/"+body["execution_id"].(string), "")
	if code != 200 || body["status"] != "completed" {
		t.Fatalf("get: %d %v", code, body)
	}
}
