package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kailash-gw/kailash/extauthz/explain"
	"github.com/kailash-gw/kailash/internal/devtoken"
	"github.com/kailash-gw/kailash/internal/testenv"
)

// TestExplain: `kailash explain` answers, by the request id the client was
// given, for a 401 (which identity check failed, the token's issuer), a 403
// (the policy's revision and rules), a 429 (the quota, its limit, window and
// count, from the rate-limit service) and an IP-refused request (Envoy's
// ip_allowlist, from its access log to authz) — and by decision id too;
// requests through a real Envoy.
func TestExplain(t *testing.T) {
	jwt := fmt.Sprintf("    jwt: {issuer: %s, audiences: [%s], jwks_file: %s}\n", issuer, audience, abs(t, "../../examples/keys/dev.jwks.json"))
	p := freePorts(t)
	body := configYAML(t, p, "acme")
	body = strings.Replace(body, "\ntenants:\n", fmt.Sprintf("\nratelimit: {grpc: %s, fail_mode: closed, timeout: 2s}\ntenants:\n", testenv.FreeAddr(t)), 1)
	body += "  - id: quota\n    domains: [quota.localhost]\n    limits: {max_api_calls_per_day: 1}\n" + jwt +
		"  - id: walled\n    domains: [walled.localhost]\n    ip_allowlist: [10.99.0.0/16]\n" + jwt
	s := startStackWith(t, stackOptions{ports: p, body: body})

	explainOf := func(t *testing.T, id string) explain.Record {
		t.Helper()
		var rec explain.Record
		testenv.Eventually(t, 30*time.Second, func() error {
			var out bytes.Buffer
			if err := run(context.Background(), []string{"explain", "-addr", p.authzHTTP, id, "-json"}, &out); err != nil {
				return err
			}
			rec = explain.Record{}
			if err := json.Unmarshal(out.Bytes(), &rec); err != nil {
				return fmt.Errorf("%v: %s", err, out.String())
			}
			if rec.Status == 0 {
				return fmt.Errorf("no edge step yet (Envoy's access log to authz): %+v", rec)
			}
			return nil
		})
		return rec
	}
	text := func(t *testing.T, id string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(context.Background(), []string{"explain", "-addr", p.authzHTTP, id}, &out); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	requestID := func(t *testing.T, r reply, want int) string {
		t.Helper()
		if r.code != want {
			t.Fatalf("status %d, want %d: %s", r.code, want, r.body)
		}
		id := r.header.Get("X-Request-Id")
		if id == "" {
			t.Fatal("no x-request-id on the answer")
		}
		return id
	}

	t.Run("401", func(t *testing.T) {
		tok := s.token(devtoken.Claims{Tenant: "acme", Subject: "alice", Roles: []string{"admin"}, Now: time.Now().Add(-3 * time.Hour), TTL: time.Hour})
		rec := explainOf(t, requestID(t, s.mustDo("acme.localhost", tok, nil), 401))
		id := rec.Identity
		if rec.Outcome != "unauthenticated" || id == nil || id.Result != "failed" || id.Check != "expired" || id.Issuer != issuer || id.Credential != "bearer" {
			t.Fatalf("record %+v identity %+v", rec, id)
		}
		if rec.Tenant != "acme" || rec.Status != 401 || rec.Edge == nil || rec.Edge.Check != "authz" || !strings.Contains(rec.Summary, "expired") {
			t.Errorf("record %+v edge %+v", rec, rec.Edge)
		}
		if out := text(t, rec.RequestID); !strings.Contains(out, "failed check") || !strings.Contains(out, "expired") {
			t.Errorf("kailash explain printed:\n%s", out)
		}
	})

	t.Run("403", func(t *testing.T) {
		tok := s.token(devtoken.Claims{Tenant: "acme", Subject: "bob", Roles: []string{"viewer"}})
		rec := explainOf(t, requestID(t, s.mustDo("acme.localhost", tok, nil), 403))
		pol := rec.Policy
		if rec.Outcome != "deny" || rec.Reason != "policy" || pol == nil || pol.Allowed || pol.Revision == "" || len(pol.Rules) == 0 {
			t.Fatalf("record %+v policy %+v", rec, pol)
		}
		if rec.Identity == nil || rec.Identity.Result != "ok" || rec.Identity.Subject != "bob" {
			t.Errorf("identity step %+v", rec.Identity)
		}
		if !strings.Contains(rec.Summary, "denied") || !strings.Contains(rec.Summary, pol.Revision) {
			t.Errorf("summary %q", rec.Summary)
		}
		// The decision id finds the same record.
		if byDecision := explainOf(t, rec.DecisionID); byDecision.RequestID != rec.RequestID {
			t.Errorf("by decision id %s: request %s, want %s", rec.DecisionID, byDecision.RequestID, rec.RequestID)
		}
		if out := text(t, rec.RequestID); !strings.Contains(out, "rules (bundle revision") {
			t.Errorf("kailash explain printed:\n%s", out)
		}
	})

	t.Run("429", func(t *testing.T) {
		tok := s.token(devtoken.Claims{Tenant: "quota", Subject: "carol", Roles: []string{"admin"}})
		var r reply
		testenv.Eventually(t, 30*time.Second, func() error {
			if r = s.mustDo("quota.localhost", tok, nil); r.code != 429 {
				return fmt.Errorf("status %d", r.code)
			}
			return nil
		})
		rec := explainOf(t, requestID(t, r, 429))
		if rec.Outcome != "allow" || rec.Edge == nil || rec.Edge.Check != "rate_limit" || len(rec.RateLimit) == 0 {
			t.Fatalf("record %+v edge %+v rate limit %+v", rec, rec.Edge, rec.RateLimit)
		}
		q := rec.RateLimit[0]
		if q.Limit != 1 || q.Window != "day" || q.Count != 1 || q.Descriptor["tenant"] != "quota" {
			t.Errorf("rate-limit step %+v", q)
		}
		if !strings.Contains(rec.Summary, "quota") {
			t.Errorf("summary %q", rec.Summary)
		}
	})

	t.Run("IP refused", func(t *testing.T) {
		tok := s.token(devtoken.Claims{Tenant: "walled", Subject: "dave", Roles: []string{"admin"}})
		rec := explainOf(t, requestID(t, s.mustDo("walled.localhost", tok, nil), 403))
		if rec.Edge == nil || rec.Edge.Check != "ip_allowlist" || rec.Tenant != "walled" || rec.ClientIP != "127.0.0.1" || rec.Outcome != "" {
			t.Fatalf("record %+v edge %+v", rec, rec.Edge)
		}
		if !strings.Contains(rec.Summary, "ip_allowlist") {
			t.Errorf("summary %q", rec.Summary)
		}
	})

	t.Run("unknown id", func(t *testing.T) {
		err := run(context.Background(), []string{"explain", "-addr", p.authzHTTP, "no-such-id"}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "no record") {
			t.Errorf("err = %v", err)
		}
	})
}

type explainRecord = explain.Record

// fetchExplain is `kailash explain -json ID` against authz's HTTP address.
func fetchExplain(authzHTTP, id string) (explain.Record, error) {
	var out bytes.Buffer
	var rec explain.Record
	if err := run(context.Background(), []string{"explain", "-addr", authzHTTP, id, "-json"}, &out); err != nil {
		return rec, err
	}
	err := json.Unmarshal(out.Bytes(), &rec)
	return rec, err
}
