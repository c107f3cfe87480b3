package telemetry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	mux := http.NewServeMux()
	if r, ok := h.(*Readiness); ok {
		r.Handle(mux)
		h = mux
	}
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

// A passing readiness answers 200 "ready", verbose lists every check in
// order, as kube-apiserver does.
func TestReadinessPass(t *testing.T) {
	r := NewReadiness("test", CheckFunc("policy", func() error { return nil }), CheckFunc("redis", func() error { return nil }))
	if code, body := get(t, r, "/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	want := "[+]shutdown ok\n[+]policy ok\n[+]redis ok\nreadyz check passed\n"
	if code, body := get(t, r, "/readyz?verbose"); code != 200 || body != want {
		t.Errorf("/readyz?verbose: %d %q, want %q", code, body, want)
	}
}

// One failing check: 503 with every check listed and the reason on the
// failed one's line (kept on one line), verbose or not; /readyz/<name>
// runs one check; exclude leaves one out; the metric says which failed.
func TestReadinessFail(t *testing.T) {
	var redisDown atomic.Bool
	redisDown.Store(true)
	r := NewReadiness("ratelimit",
		CheckFunc("policy", func() error { return nil }),
		CheckFunc("redis", func() error {
			if redisDown.Load() {
				return errors.New("dial tcp 127.0.0.1:1:\nconnection refused")
			}
			return nil
		}))
	want := "[+]shutdown ok\n[+]policy ok\n[-]redis failed: dial tcp 127.0.0.1:1: connection refused\nreadyz check failed\n"
	for _, path := range []string{"/readyz", "/readyz?verbose"} {
		if code, body := get(t, r, path); code != 503 || body != want {
			t.Errorf("%s: %d %q, want 503 %q", path, code, body, want)
		}
	}
	if code, body := get(t, r, "/readyz/policy"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz/policy: %d %q", code, body)
	}
	if code, body := get(t, r, "/readyz/redis"); code != 503 || !strings.Contains(body, "[-]redis failed: dial tcp") || strings.Contains(body, "policy") {
		t.Errorf("/readyz/redis: %d %q", code, body)
	}
	if code, _ := get(t, r, "/readyz/nope"); code != 404 {
		t.Errorf("/readyz/nope: %d, want 404", code)
	}
	if code, body := get(t, r, "/readyz?exclude=redis&verbose"); code != 200 || strings.Contains(body, "redis") {
		t.Errorf("/readyz?exclude=redis: %d %q", code, body)
	}
	if err := r.Err(context.Background()); err == nil || !strings.Contains(err.Error(), "redis: dial tcp") {
		t.Errorf("Err: %v", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(r)
	const head = "# HELP kailash_ready_check 1 while the readiness check passes, 0 while it fails (the reason is on /readyz?verbose); evaluated at each scrape.\n# TYPE kailash_ready_check gauge\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(head+
		`kailash_ready_check{check="policy",component="ratelimit"} 1
kailash_ready_check{check="redis",component="ratelimit"} 0
kailash_ready_check{check="shutdown",component="ratelimit"} 1
`), "kailash_ready_check"); err != nil {
		t.Error(err)
	}
	redisDown.Store(false)
	if code, _ := get(t, r, "/readyz"); code != 200 {
		t.Errorf("/readyz after recovery: %d", code)
	}
	if v := readyGauge(t, reg, "redis"); v != 1 {
		t.Errorf("kailash_ready_check{check=redis} after recovery: %v", v)
	}
}

// readyGauge is kailash_ready_check{check} as reg reports it now.
func readyGauge(t *testing.T, reg *prometheus.Registry, check string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if mf.GetName() == "kailash_ready_check" && l.GetName() == "check" && l.GetValue() == check {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no kailash_ready_check{check=%q}", check)
	return 0
}

// Draining fails the shutdown check of every readiness.
func TestReadinessDraining(t *testing.T) {
	r := NewReadiness("x")
	SetDraining(true)
	defer SetDraining(false)
	code, body := get(t, r, "/readyz")
	if code != 503 || !strings.Contains(body, "[-]shutdown failed: "+ErrDraining.Error()) {
		t.Errorf("draining: %d %q", code, body)
	}
}

// A check that ignores its context still ends the answer at the timeout,
// as a failure naming the timeout.
func TestReadinessTimeout(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	r := NewReadiness("x", CheckFunc("slow", func() error { <-block; return nil }))
	r.timeout = 50 * time.Millisecond
	done := make(chan struct{})
	var code int
	var body string
	go func() { code, body = get(t, r, "/readyz"); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("/readyz did not answer")
	}
	if code != 503 || !strings.Contains(body, "[-]slow failed: check timed out") {
		t.Errorf("slow check: %d %q", code, body)
	}
}

// Mux keeps its one-function form: the function's error is the reason.
func TestMuxReadyFunc(t *testing.T) {
	mux := Mux(prometheus.NewRegistry(), func() error { return errors.New("no snapshot yet") })
	code, body := get(t, mux, "/readyz")
	if code != 503 || !strings.Contains(body, "[-]ready failed: no snapshot yet") {
		t.Errorf("/readyz: %d %q", code, body)
	}
	if code, body := get(t, mux, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
}

// Bad check definitions are programming errors.
func TestReadinessAddPanics(t *testing.T) {
	for _, c := range []Check{{Name: "", Run: func(context.Context) error { return nil }}, {Name: "a b", Run: func(context.Context) error { return nil }}, {Name: "x"}, CheckFunc(ShutdownCheck, func() error { return nil })} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Add(%q) did not panic", c.Name)
				}
			}()
			NewReadiness("x", c)
		}()
	}
}
