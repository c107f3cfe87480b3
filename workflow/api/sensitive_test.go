package api

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/internal/config"
	"github.com/kailash-gw/kailash/internal/testenv"
	"github.com/kailash-gw/kailash/workflow"
)

const sensitiveWorkflow = `
name: payroll
sensitive: [ssn]
nodes:
  - id: lookup
    type: code
    sensitive: [result]
    config:
      code: |
        result = {"token": "tok-" + parameters["ssn"][::-1], "ssn": parameters["ssn"]}
  - id: check
    type: code
    config:
      code: |
        fail("bad ssn " + parameters["r"]["ssn"] + " token " + parameters["r"]["token"])
connections:
  - from: lookup/result
    to: check/r
`

// An execution whose node fails with a sensitive value in its message: the
// runner's log, the event stream, the stored error and the API answer
// carry "[redacted]", never the value (nor the sensitive output of an
// upstream node).
func TestSensitiveValuesNeverInLogsOrEvents(t *testing.T) {
	d, err := workflow.ParseDefinition([]byte(sensitiveWorkflow))
	if err != nil {
		t.Fatal(err)
	}
	wf, err := workflow.Compile(d)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.LogBuffer{}
	s, err := New(&config.Config{Runner: config.Runner{HTTP: "127.0.0.1:0", DataDir: t.TempDir()}},
		Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ln.Close(); s.shutdown() })
	wfs := map[string]*workflow.Workflow{"payroll": wf}
	s.workflows.Store(&wfs)

	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/v1/events", nil)
	req.Header.Set("x-kailash-tenant", "acme")
	req.Header.Set("x-kailash-user", "alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	if l := <-lines; !strings.HasPrefix(l, ": subscribed") {
		t.Fatalf("first line %q", l)
	}

	secret := "SSN" + rand.Text()
	tokenValue := "tok-" + reverse(secret)
	c := apiClient{t, s.Handler(), map[string]string{"x-kailash-tenant": "acme", "x-kailash-user": "alice"}}
	code, body := c.do("POST", "/v1/workflows/payroll/executions", `{"ssn":"`+secret+`"}`)
	if code == 200 {
		t.Fatalf("the failing workflow succeeded: %v", body)
	}
	var events []string
	deadline := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("stream ended")
			}
			if strings.HasPrefix(l, "data: ") {
				events = append(events, l)
				done = strings.Contains(l, `"execution.failed"`)
			}
		case <-deadline:
			t.Fatalf("events so far %v", events)
		}
	}
	stored, err := s.store.GetExecution(t.Context(), "acme", body["execution_id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	for what, text := range map[string]string{
		"log": logs.String(), "events": strings.Join(events, "\n"), "stored error": stored.Error + stored.Nodes[len(stored.Nodes)-1].Error,
		"answer": fmt.Sprint(body),
	} {
		if strings.Contains(text, secret) || strings.Contains(text, tokenValue) {
			t.Errorf("%s carries a sensitive value:\n%s", what, text)
		}
		if !strings.Contains(text, workflow.Redacted) {
			t.Errorf("%s: no %s where the value was:\n%s", what, workflow.Redacted, text)
		}
	}
	// The stored input is the execution's, whole: only messages are redacted.
	if stored.Input["ssn"] != secret {
		t.Fatalf("stored input %v", stored.Input)
	}
}

func reverse(s string) string {
	r := []rune(s)
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	return string(r)
}
