package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/kailash-gw/kailash/extauthz/explain"
	"github.com/kailash-gw/kailash/internal/config"
)

// runExplain is `kailash explain ID`: why a request was refused, from the
// decision id (x-kailash-decision-id, the access log's decision_id) or the
// request id (the x-request-id of the answer, the access log's request_id),
// as authz recorded it — GET /v1/admin/explain/{id} on authz's HTTP port.
func runExplain(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSetUsage("explain", "[-c kailash.yaml | -addr URL] [-json] DECISION_ID|REQUEST_ID",
		"Why was this request refused: the identity, policy, rate-limit and edge steps authz recorded for it.", stdout)
	cfgPath := fs.String("c", "kailash.yaml", "config file (authz.http is asked)")
	addr := fs.String("addr", "", "authz's HTTP address or URL (default: authz.http of the config)")
	asJSON := fs.Bool("json", false, "print the record as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) > 0 { // flags after the id
		if err := fs.Parse(rest[1:]); err != nil {
			return err
		}
		rest = append(rest[:1], fs.Args()...)
	}
	if len(rest) != 1 {
		return errors.New("explain: give one decision id or request id")
	}
	base := *addr
	if base == "" {
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			return err
		}
		if base = cfg.Authz.HTTP.String(); base == "" {
			return fmt.Errorf("%s: authz.http is not set; give -addr", *cfgPath)
		}
	}
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/v1/admin/explain/"+url.PathEscape(rest[0]), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Message string }
		if json.Unmarshal(body, &e) == nil && e.Message != "" {
			return fmt.Errorf("explain: %s", e.Message)
		}
		return fmt.Errorf("explain: %s answered %s", base, resp.Status)
	}
	if *asJSON {
		_, err = stdout.Write(body)
		return err
	}
	var r explain.Record
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("explain: the answer is not a record: %w", err)
	}
	printExplain(stdout, &r)
	return nil
}

func printExplain(w io.Writer, r *explain.Record) {
	fmt.Fprintf(w, "%s\n\n", r.Summary)
	kv := func(k string, v any) {
		if s := fmt.Sprint(v); s != "" && s != "0" && s != "false" {
			fmt.Fprintf(w, "  %-14s %s\n", k, s)
		}
	}
	fmt.Fprintln(w, "request")
	kv("time", r.Time.Format(time.RFC3339Nano))
	kv("decision_id", r.DecisionID)
	kv("request_id", r.RequestID)
	kv("trace_id", r.TraceID)
	kv("tenant", r.Tenant)
	kv("request", strings.TrimSpace(r.Method+" "+r.Host+r.Path))
	kv("client_ip", r.ClientIP)
	kv("status", r.Status)
	if r.Outcome != "" {
		kv("authz", r.Outcome+" ("+r.Reason+")")
	}
	if r.Edge != nil {
		fmt.Fprintln(w, "edge (Envoy)")
		kv("check", r.Edge.Check)
		kv("details", r.Edge.Details)
		kv("flags", r.Edge.ResponseFlags)
		kv("meaning", r.Edge.Meaning)
	}
	if id := r.Identity; id != nil {
		fmt.Fprintln(w, "identity")
		kv("result", id.Result)
		kv("credential", id.Credential)
		kv("issuer", id.Issuer)
		kv("subject", id.Subject)
		kv("failed check", id.Check)
		kv("detail", id.Detail)
	}
	if p := r.Policy; p != nil {
		fmt.Fprintln(w, "policy")
		kv("decision", p.Decision)
		kv("revision", p.Revision)
		kv("allowed", fmt.Sprint(p.Allowed))
		kv("dry_run", p.DryRun)
		kv("error", p.Error)
		if len(p.Rules) > 0 {
			fmt.Fprintf(w, "  rules (bundle revision %s):\n", p.ExplainedRevision)
			names := make([]string, 0, len(p.Rules))
			for n := range p.Rules {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				b, _ := json.Marshal(p.Rules[n])
				if len(b) > 200 {
					b = append(b[:200], "…"...)
				}
				fmt.Fprintf(w, "    %-20s %s\n", n, b)
			}
		}
		if len(p.Undefined) > 0 {
			fmt.Fprintf(w, "  undefined:     %s\n", strings.Join(p.Undefined, ", "))
		}
	}
	for _, q := range r.RateLimit {
		fmt.Fprintln(w, "rate limit")
		kv("quota", q.Quota)
		kv("limit", fmt.Sprintf("%d per %s", q.Limit, q.Window))
		kv("count", q.Count)
		keys := make([]string, 0, len(q.Descriptor))
		for k := range q.Descriptor {
			keys = append(keys, k+"="+q.Descriptor[k])
		}
		sort.Strings(keys)
		kv("descriptor", strings.Join(keys, ", "))
	}
}
