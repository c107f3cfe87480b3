package api

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/workflow"
)

func TestEventStreamIsTenantScoped(t *testing.T) {
	wfs, err := workflow.LoadDir("../../examples/workflows")
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, wfs)
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
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("subscribe: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
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
	exec := func(tenant string) {
		r := httptest.NewRequest("POST", "/v1/workflows/hello/executions", strings.NewReader(`{}`))
		r.Header.Set("x-kailash-tenant", tenant)
		r.Header.Set("x-kailash-user", "u")
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, r)
		if rec.Code != 200 {
			t.Fatalf("execute: %d", rec.Code)
		}
	}
	exec("globex") // must not be seen
	exec("acme")
	var types []string
	deadline := time.After(10 * time.Second)
	for len(types) < 4 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("stream ended")
			}
			if strings.HasPrefix(l, "data: ") {
				if strings.Contains(l, "globex") {
					t.Fatalf("acme saw a globex event: %s", l)
				}
			}
			if e, ok := strings.CutPrefix(l, "event: "); ok {
				types = append(types, e)
			}
		case <-deadline:
			t.Fatalf("events so far %v", types)
		}
	}
	want := []string{"execution.started", "node.finished", "node.finished", "execution.completed"}
	if strings.Join(types, ",") != strings.Join(want, ",") {
		t.Fatalf("events %v, want %v", types, want)
	}
}

func TestEventFilterRules(t *testing.T) {
	sub := &subscriber{tenant: "acme", roles: []string{"workflow:read", "clearance:confidential"}}
	cases := []struct {
		e    Event
		want bool
	}{
		{Event{Tenant: "acme"}, true},
		{Event{Tenant: "globex"}, false},
		{Event{Tenant: "acme", Policy: workflow.EventPolicy{RequiredPermission: "workflow:read"}}, true},
		{Event{Tenant: "acme", Policy: workflow.EventPolicy{RequiredPermission: "audit:view"}}, false},
		{Event{Tenant: "acme", Policy: workflow.EventPolicy{Classification: "confidential"}}, true},
		{Event{Tenant: "acme", Policy: workflow.EventPolicy{Classification: "secret"}}, false},
		{Event{Tenant: "acme", Policy: workflow.EventPolicy{Classification: "unheard-of"}}, false},
	}
	for i, c := range cases {
		if got := sub.visible(c.e); got != c.want {
			t.Errorf("case %d: visible = %v, want %v", i, got, c.want)
		}
	}
}

func TestEventFilterUsesClearanceAttribute(t *testing.T) {
	secret := Event{Tenant: "acme", Policy: workflow.EventPolicy{Classification: "secret"}}
	internal := Event{Tenant: "acme", Policy: workflow.EventPolicy{Classification: "internal"}}
	for _, c := range []struct {
		clearance      string
		secret, intern bool
	}{{"secret", true, true}, {"internal", false, true}, {"", false, false}, {"bogus", false, false}} {
		sub := &subscriber{tenant: "acme", clearance: c.clearance}
		if sub.visible(secret) != c.secret || sub.visible(internal) != c.intern {
			t.Errorf("clearance %q: secret=%v internal=%v", c.clearance, sub.visible(secret), sub.visible(internal))
		}
	}
}
