package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRecordRedactsAndWritesFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	var logBuf strings.Builder
	reg := prometheus.NewRegistry()
	l, err := New(Options{Log: slog.New(slog.NewJSONHandler(&logBuf, nil)), File: file, Mask: []string{"/detail/user/email"}, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	detail := map[string]any{"tenant": "acme", "client_secret": "s3cret", "user": map[string]any{"email": "a@acme.test", "name": "alice", "api_token": "t0k"}}
	l.Record(context.Background(), Event{Component: "authz", Action: SessionRevoke, Actor: "alice@acme", Target: "tenant acme", Detail: detail})
	l.Record(context.Background(), Event{Component: "xds", Action: ConfigReject, Outcome: Error, Error: "tenants[0].id: required"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := detail["client_secret"]; !ok {
		t.Error("Record changed the caller's detail map")
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var evs []Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("%v: %s", err, sc.Text())
		}
		evs = append(evs, ev)
	}
	if len(evs) != 2 {
		t.Fatalf("%d events in the file", len(evs))
	}
	ev := evs[0]
	if ev.Action != SessionRevoke || ev.Actor != "alice@acme" || ev.Outcome != OK || ev.Time.IsZero() {
		t.Errorf("event %+v", ev)
	}
	user := ev.Detail["user"].(map[string]any)
	if _, ok := ev.Detail["client_secret"]; ok || user["email"] != nil || user["api_token"] != nil || user["name"] != "alice" {
		t.Errorf("detail not redacted: %v", ev.Detail)
	}
	if len(ev.Erased) != 3 {
		t.Errorf("erased %v, want the secret, the token and the masked email", ev.Erased)
	}
	if evs[1].Actor != "system" || evs[1].Outcome != Error || evs[1].Error == "" {
		t.Errorf("reject event %+v", evs[1])
	}
	for _, leak := range []string{"s3cret", "t0k", "a@acme.test"} {
		if strings.Contains(logBuf.String(), leak) {
			t.Errorf("the log holds %q:\n%s", leak, logBuf.String())
		}
	}
	if !strings.Contains(logBuf.String(), `"audit":true`) {
		t.Errorf("log line not marked audit: %s", logBuf.String())
	}
	if n := testutil.ToFloat64(l.events.WithLabelValues(ConfigReject, Error)); n != 1 {
		t.Errorf("kailash_audit_events_total{config.reject,error} = %v", n)
	}
}

func TestBadMask(t *testing.T) {
	if _, err := New(Options{Mask: []string{"/input/x"}}); err == nil || !strings.Contains(err.Error(), "/input/x") {
		t.Errorf("err = %v", err)
	}
	var nilLogger *Logger
	nilLogger.Record(context.Background(), Event{Action: ConfigReload}) // records nothing, does not panic
}
