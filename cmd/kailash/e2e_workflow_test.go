package main

// End-to-end: a tenant creates a workflow, watches it over WebSocket through
// Envoy and executes it; another tenant sees nothing of it.

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kailash-gw/kailash/internal/devtoken"
)

func (s *stack) request(method, host, path, token, body string) reply {
	s.t.Helper()
	req, _ := http.NewRequest(method, "http://"+s.ports.envoy+path, strings.NewReader(body))
	req.Host = host
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func (s *stack) dialEvents(ctx context.Context, host, path, token string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	return websocket.Dial(ctx, "ws://"+s.ports.envoy+path, &websocket.DialOptions{Host: host, HTTPHeader: h})
}

const pipelineJSON = `{"name": "pipeline", "nodes": [
  {"id": "shape", "type": "transform", "config": {"set": {"stage": "shaped"}}},
  {"id": "score", "type": "code", "config": {"code": "result = {'score': len(parameters.get('items', []))}"}},
  {"id": "whoami", "type": "identity"}
], "connections": [{"from": "shape", "to": "score"}, {"from": "score", "to": "whoami"}]}`

func TestWorkflowEndToEnd(t *testing.T) {
	s := startStack(t, "acme", "globex")
	dana := s.token(devtoken.Claims{Tenant: "acme", Subject: "dana", Roles: []string{"data_scientist"}})
	gina := s.token(devtoken.Claims{Tenant: "globex", Subject: "gina", Roles: []string{"admin"}})

	if r := s.request("POST", "acme.localhost", "/v1/workflows", dana, pipelineJSON); r.code != 201 && r.code != 200 {
		t.Fatalf("create: %d %s", r.code, r.body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, resp, err := s.dialEvents(ctx, "acme.localhost", "/v1/workflows/pipeline/events/ws", ""); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("WebSocket without a token: err=%v resp=%v", err, resp)
	}
	acmeWS, _, err := s.dialEvents(ctx, "acme.localhost", "/v1/workflows/pipeline/events/ws", dana)
	if err != nil {
		t.Fatalf("WebSocket with a token: %v", err)
	}
	defer acmeWS.CloseNow()
	globexWS, _, err := s.dialEvents(ctx, "globex.localhost", "/v1/events/ws", gina)
	if err != nil {
		t.Fatalf("globex WebSocket: %v", err)
	}
	defer globexWS.CloseNow()

	var mu sync.Mutex
	var globexSaw []string
	go func() {
		for {
			_, msg, err := globexWS.Read(ctx)
			if err != nil {
				return
			}
			var ev struct{ Type, Tenant string }
			_ = json.Unmarshal(msg, &ev)
			if ev.Type == "subscribed" && ev.Tenant == "globex" {
				continue // the stream's own greeting
			}
			mu.Lock()
			globexSaw = append(globexSaw, string(msg))
			mu.Unlock()
		}
	}()

	r := s.request("POST", "acme.localhost", "/v1/workflows/pipeline/executions", dana, `{"items": [1, 2, 3]}`)
	if r.code != 200 {
		t.Fatalf("execute: %d %s", r.code, r.body)
	}
	var exec struct {
		ID     string         `json:"execution_id"`
		Output map[string]any `json:"output"`
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(r.body), &exec); err != nil {
		t.Fatal(err)
	}
	if res, _ = exec.Output["result"].(map[string]any); res["score"] != 3.0 {
		t.Fatalf("execution result: %v %s", err, r.body)
	}

	seen := map[string]int{}
	for seen["execution.completed"] == 0 {
		_, msg, err := acmeWS.Read(ctx)
		if err != nil {
			t.Fatalf("reading events (saw %v): %v", seen, err)
		}
		var ev struct {
			Type, Tenant, Workflow string
			Execution              string `json:"execution_id"`
		}
		if err := json.Unmarshal(msg, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Tenant != "acme" || ev.Workflow != "pipeline" {
			t.Fatalf("foreign event: %s", msg)
		}
		if ev.Execution == exec.ID {
			seen[ev.Type]++
		}
	}
	if seen["execution.started"] != 1 || seen["node.finished"] != 3 {
		t.Fatalf("events: %v", seen)
	}

	// The other tenant: nothing of acme's workflow, its executions or events.
	if r := s.request("GET", "globex.localhost", "/v1/workflows/pipeline", gina, ""); r.code != 404 {
		t.Fatalf("globex reads acme's workflow: %d %s", r.code, r.body)
	}
	if r := s.request("GET", "globex.localhost", "/v1/workflows/pipeline/executions/"+exec.ID, gina, ""); r.code != 404 {
		t.Fatalf("globex reads acme's execution: %d %s", r.code, r.body)
	}
	time.Sleep(200 * time.Millisecond) // events are pushed as they happen; give a leak time to show
	mu.Lock()
	defer mu.Unlock()
	if len(globexSaw) != 0 {
		t.Fatalf("globex saw acme's events: %v", globexSaw)
	}
}
