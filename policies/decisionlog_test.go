package policies

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

func logInput() ast.Value {
	return ast.MustParseTerm(`{"attributes": {"request": {"http": {"path": "/v1/x", "headers": {
		"authorization": "Bearer secret-token", "cookie": "sid=secret", "accept": "*/*"}}}},
		"parsed_body": {"password": "hunter2", "user": "bob"}}`).Value
}

func TestDecisionLogMasksAndWritesLines(t *testing.T) {
	var out syncBuf
	file := filepath.Join(t.TempDir(), "decisions.jsonl")
	l, err := NewDecisionLogger(DecisionLogOptions{Console: &out, File: file, Mask: []string{"/input/parsed_body/password"}, Labels: map[string]string{"app": "kailash"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	for i := range 3 {
		l.Log(&DecisionEvent{DecisionID: "d" + string(rune('0'+i)), Timestamp: time.Now(), Path: "envoy/authz/allow", InputValue: logInput(),
			Result: true, Outcome: "allow", Bundles: map[string]BundleInfo{"kailash": {Revision: "r1"}}, Metrics: map[string]int64{"timer_rego_query_eval_ns": 1000}})
	}
	cancel()
	<-done
	for _, text := range []string{out.String(), readFile(t, file)} {
		lines := strings.Split(strings.TrimSpace(text), "\n")
		if len(lines) != 3 {
			t.Fatalf("%d lines: %s", len(lines), text)
		}
		for _, secret := range []string{"secret-token", "sid=secret", "hunter2"} {
			if strings.Contains(text, secret) {
				t.Fatalf("decision log leaks %q: %s", secret, text)
			}
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil {
			t.Fatal(err)
		}
		if ev["decision_id"] != "d0" || ev["outcome"] != "allow" || ev["labels"].(map[string]any)["app"] != "kailash" {
			t.Fatalf("event %v", ev)
		}
		erased := ev["erased"].([]any)
		if len(erased) != 3 || !strings.Contains(lines[0], `"accept":"*/*"`) || !strings.Contains(lines[0], `"user":"bob"`) {
			t.Fatalf("erased %v in %s", erased, lines[0])
		}
	}
	if logged, dropped, failed := l.Stats(); logged != 3 || dropped != 0 || failed != 0 {
		t.Fatalf("stats %d %d %d", logged, dropped, failed)
	}
}

func TestDecisionLogNeverBlocks(t *testing.T) {
	l, err := NewDecisionLogger(DecisionLogOptions{Console: &syncBuf{}, Buffer: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Run is not started: the buffer fills and further events are dropped
	// at once.
	start := time.Now()
	for range 10 {
		l.Log(&DecisionEvent{DecisionID: "x"})
	}
	if time.Since(start) > 100*time.Millisecond {
		t.Fatal("Log blocked")
	}
	if _, dropped, _ := l.Stats(); dropped != 8 {
		t.Fatalf("dropped %d, want 8", dropped)
	}
	if _, err := NewDecisionLogger(DecisionLogOptions{}); err == nil {
		t.Fatal("no sink: want an error")
	}
	if _, err := NewDecisionLogger(DecisionLogOptions{Console: &syncBuf{}, Mask: []string{"/data/x"}}); err == nil {
		t.Fatal("mask outside input: want an error")
	}
}

func TestDecisionLogHTTPBatchesInOPAFormat(t *testing.T) {
	var mu sync.Mutex
	var batches [][]map[string]any
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.Header.Get("Content-Encoding") != "gzip" || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("upload %s %v", r.Method, r.Header)
		}
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			t.Error(err)
			return
		}
		var evs []map[string]any
		if err := json.NewDecoder(gz).Decode(&evs); err != nil {
			t.Error(err)
		}
		mu.Lock()
		batches = append(batches, evs)
		mu.Unlock()
	}))
	defer hs.Close()
	l, err := NewDecisionLogger(DecisionLogOptions{URL: hs.URL + "/logs", BatchSize: 2, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	for range 5 {
		l.Log(&DecisionEvent{DecisionID: "x", InputValue: logInput(), Outcome: "deny"})
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(batches) != 3 || len(batches[0]) != 2 || len(batches[2]) != 1 {
		t.Fatalf("batches %v", batches)
	}
	if b, _ := json.Marshal(batches); bytes.Contains(b, []byte("secret-token")) {
		t.Fatal("upload leaks the token")
	}
	if logged, _, failed := l.Stats(); logged != 5 || failed != 0 {
		t.Fatalf("logged %d failed %d", logged, failed)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return b.String()
}
