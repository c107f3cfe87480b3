package policies

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"gopkg.in/natefinch/lumberjack.v2"
)

// DefaultMasks are the input paths every decision log leaves out: the
// credentials a request carries.
var DefaultMasks = []string{
	"/input/attributes/request/http/headers/authorization",
	"/input/attributes/request/http/headers/proxy-authorization",
	"/input/attributes/request/http/headers/cookie",
}

// DecisionEvent is one decision log line. Its fields are those of OPA's
// decision log event (decision_id, timestamp, path, input, result, bundles,
// metrics, erased, labels), so OPA's log collectors accept it, plus Kailash's
// own (tenant, user, request_path, outcome, ...).
type DecisionEvent struct {
	DecisionID string `json:"decision_id"`
	// RequestID is Envoy's x-request-id; TraceID and SpanID the W3C ids of
	// the authz span ("" when not traced), as in OPA's decision log.
	RequestID string                `json:"request_id,omitempty"`
	TraceID   string                `json:"trace_id,omitempty"`
	SpanID    string                `json:"span_id,omitempty"`
	Timestamp time.Time             `json:"timestamp"`
	Path      string                `json:"path"` // the decision, e.g. envoy/authz/allow
	Input     any                   `json:"input,omitempty"`
	Result    any                   `json:"result,omitempty"`
	Error     string                `json:"error,omitempty"`
	Erased    []string              `json:"erased,omitempty"`
	Masked    []string              `json:"masked,omitempty"`
	Bundles   map[string]BundleInfo `json:"bundles,omitempty"`
	Metrics   map[string]int64      `json:"metrics,omitempty"`
	Labels    map[string]string     `json:"labels,omitempty"`

	Tenant      string `json:"tenant,omitempty"`
	User        string `json:"user,omitempty"`
	RequestPath string `json:"request_path,omitempty"`
	// Outcome is what the caller was answered: allow, deny,
	// unauthenticated, bad_request or error.
	Outcome string       `json:"outcome"`
	Reason  string       `json:"reason,omitempty"`
	DryRun  bool         `json:"dry_run,omitempty"`
	Shadow  *ShadowEvent `json:"shadow,omitempty"`
	// Cached: the result came from the decision cache (the decision id is
	// still this request's own).
	Cached bool `json:"cached,omitempty"`

	// InputValue is the input as evaluated; the logger converts and masks
	// it off the request path into Input.
	InputValue ast.Value `json:"-"`
}

// BundleInfo names a bundle version.
type BundleInfo struct {
	Revision string `json:"revision"`
}

// ShadowEvent is a candidate bundle's decision for the same input.
type ShadowEvent struct {
	Revision string `json:"revision"`
	Result   any    `json:"result,omitempty"`
	Error    string `json:"error,omitempty"`
	Allowed  bool   `json:"allowed"`
	Agrees   bool   `json:"agrees"`
}

// DecisionLogOptions choose the sinks (any combination) and the masking.
type DecisionLogOptions struct {
	// Console receives one JSON line per decision (e.g. os.Stdout).
	Console io.Writer
	// File is a log file rotated at MaxSizeMB (default 100), keeping
	// MaxBackups (default 5) old files.
	File       string
	MaxSizeMB  int
	MaxBackups int
	// URL receives batches in OPA's decision log upload format: a gzipped
	// JSON array of events, POSTed. A batch is sent at BatchSize events
	// (default 100) or every FlushInterval (default 5s).
	URL           string
	BatchSize     int
	FlushInterval time.Duration
	HTTPClient    *http.Client
	// Mask lists more input paths to remove, as "/input/a/b" (OPA's erase
	// syntax); DefaultMasks always apply.
	Mask []string
	// Buffer bounds the events waiting to be written (default 10000); when
	// it is full events are dropped and counted, never waited for.
	Buffer int
	// Labels are attached to every event (OPA's "labels").
	Labels map[string]string
	// MaskPolicy, when set, is OPA's mask_decision: evaluated on each
	// event ({input, result, path, decision_id, labels}), its value is a
	// set of JSON pointers to erase ("/input/password") or of operations
	// ({"op": "remove"|"upsert", "path": ..., "value": ...}) on /input and
	// /result. defined false: the bundle has no such rule.
	MaskPolicy func(ctx context.Context, event map[string]any) (result any, defined bool, err error)
}

// DecisionLogger writes decision events without ever blocking the caller.
type DecisionLogger struct {
	ch     chan *DecisionEvent
	masks  [][]string
	lines  []io.Writer
	closer []io.Closer
	url    string
	batch  int
	flush  time.Duration
	client *http.Client
	labels map[string]string
	maskFn func(ctx context.Context, event map[string]any) (any, bool, error)

	logged, dropped, failed atomic.Int64
	runOnce                 sync.Once
}

// NewDecisionLogger opens the sinks of opts.
func NewDecisionLogger(opts DecisionLogOptions) (*DecisionLogger, error) {
	l := &DecisionLogger{url: opts.URL, batch: opts.BatchSize, flush: opts.FlushInterval, client: opts.HTTPClient, labels: opts.Labels,
		maskFn: opts.MaskPolicy}
	if opts.Buffer <= 0 {
		opts.Buffer = 10000
	}
	l.ch = make(chan *DecisionEvent, opts.Buffer)
	if l.batch <= 0 {
		l.batch = 100
	}
	if l.flush <= 0 {
		l.flush = 5 * time.Second
	}
	if l.client == nil {
		l.client = &http.Client{Timeout: 10 * time.Second}
	}
	for _, m := range append(append([]string(nil), DefaultMasks...), opts.Mask...) {
		p := strings.Split(strings.Trim(m, "/"), "/")
		if len(p) < 2 || p[0] != "input" {
			return nil, fmt.Errorf("decision log mask %q: want a path under /input, e.g. /input/parsed_body/password", m)
		}
		l.masks = append(l.masks, p[1:])
	}
	if opts.Console != nil {
		l.lines = append(l.lines, opts.Console)
	}
	if opts.File != "" {
		lj := &lumberjack.Logger{Filename: opts.File, MaxSize: opts.MaxSizeMB, MaxBackups: opts.MaxBackups}
		if lj.MaxSize <= 0 {
			lj.MaxSize = 100
		}
		if lj.MaxBackups <= 0 {
			lj.MaxBackups = 5
		}
		l.lines = append(l.lines, lj)
		l.closer = append(l.closer, lj)
	}
	if len(l.lines) == 0 && l.url == "" {
		return nil, errors.New("decision log: no sink (console, file or url)")
	}
	return l, nil
}

// Log queues ev and returns at once; false means the buffer was full and ev
// was dropped (counted).
func (l *DecisionLogger) Log(ev *DecisionEvent) bool {
	select {
	case l.ch <- ev:
		return true
	default:
		l.dropped.Add(1)
		return false
	}
}

// Stats are the events written, dropped (buffer full) and failed (a sink
// error) so far.
func (l *DecisionLogger) Stats() (logged, dropped, failed int64) {
	return l.logged.Load(), l.dropped.Load(), l.failed.Load()
}

// Run writes queued events until ctx ends, then writes what is still queued
// and sends the last batch (bounded by a short timeout).
func (l *DecisionLogger) Run(ctx context.Context) error {
	ran := false
	l.runOnce.Do(func() { ran = true })
	if !ran {
		return errors.New("decision log: Run called twice")
	}
	defer func() {
		for _, c := range l.closer {
			c.Close()
		}
	}()
	var pending []*DecisionEvent
	tick := time.NewTicker(l.flush)
	defer tick.Stop()
	send := func(ctx context.Context) {
		if len(pending) > 0 {
			l.upload(ctx, pending)
			pending = nil
		}
	}
	handle := func(ev *DecisionEvent) {
		l.prepare(ev)
		line, err := json.Marshal(ev)
		if err != nil {
			l.failed.Add(1)
			return
		}
		line = append(line, '\n')
		ok := true
		for _, w := range l.lines {
			if _, err := w.Write(line); err != nil {
				ok = false
			}
		}
		if !ok {
			l.failed.Add(1)
		} else if l.url == "" {
			l.logged.Add(1)
		}
		if l.url != "" {
			pending = append(pending, ev)
			if len(pending) >= l.batch {
				send(ctx)
			}
		}
	}
	for {
		select {
		case ev := <-l.ch:
			handle(ev)
		case <-tick.C:
			send(ctx)
		case <-ctx.Done():
			for {
				select {
				case ev := <-l.ch:
					handle(ev)
					continue
				default:
				}
				break
			}
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			send(fctx)
			cancel()
			return nil
		}
	}
}

// prepare converts and masks the input and attaches the labels.
func (l *DecisionLogger) prepare(ev *DecisionEvent) {
	if ev.InputValue != nil {
		if v, err := ast.JSON(ev.InputValue); err == nil {
			ev.Input = v
		}
		ev.InputValue = nil
	}
	ev.Erased = mask(ev.Input, l.masks)
	if len(l.labels) > 0 && ev.Labels == nil {
		ev.Labels = l.labels
	}
	if l.maskFn != nil {
		l.maskByPolicy(ev)
	}
}

// maskByPolicy applies the mask policy's operations to ev. A policy that
// fails leaves the whole input and result out: masking fails closed.
func (l *DecisionLogger) maskByPolicy(ev *DecisionEvent) {
	doc := map[string]any{"input": ev.Input, "result": ev.Result, "path": ev.Path, "decision_id": ev.DecisionID}
	if ev.Labels != nil {
		labels := map[string]any{}
		for k, v := range ev.Labels {
			labels[k] = v
		}
		doc["labels"] = labels
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res, defined, err := l.maskFn(ctx, doc)
	if !defined && err == nil {
		return
	}
	ops, ok := res.([]any)
	if err != nil || (res != nil && !ok) {
		ev.Input, ev.Result = nil, nil
		ev.Erased = append(ev.Erased, "/input", "/result")
		ev.Error = strings.TrimSpace(ev.Error + " (mask policy failed: the input and result are left out)")
		return
	}
	root := map[string]any{"input": ev.Input, "result": ev.Result}
	for _, op := range ops {
		kind, path, value := "remove", "", any(nil)
		switch o := op.(type) {
		case string:
			path = o
		case map[string]any:
			kind, _ = o["op"].(string)
			path, _ = o["path"].(string)
			value = o["value"]
		}
		segs := strings.Split(strings.Trim(path, "/"), "/")
		if segs[0] != "input" && segs[0] != "result" {
			continue
		}
		switch kind {
		case "remove":
			if removeAt(root, segs) {
				ev.Erased = append(ev.Erased, path)
			}
		case "upsert":
			if upsertAt(root, segs, value) {
				ev.Masked = append(ev.Masked, path)
			}
		}
	}
	ev.Input, ev.Result = root["input"], root["result"]
}

func removeAt(root map[string]any, segs []string) bool {
	node := root
	for _, s := range segs[:len(segs)-1] {
		next, ok := node[s].(map[string]any)
		if !ok {
			return false
		}
		node = next
	}
	last := segs[len(segs)-1]
	if _, ok := node[last]; !ok {
		return false
	}
	delete(node, last)
	return true
}

func upsertAt(root map[string]any, segs []string, value any) bool {
	node := root
	for _, s := range segs[:len(segs)-1] {
		next, ok := node[s].(map[string]any)
		if !ok {
			if node[s] != nil {
				return false // not an object: cannot go through it
			}
			next = map[string]any{}
			node[s] = next
		}
		node = next
	}
	node[segs[len(segs)-1]] = value
	return true
}

// MaskCredentials removes DefaultMasks (the request's credentials) from
// input (a JSON document, as ast.JSON gives it), as the decision log does,
// for anything else that keeps inputs (explain's shared records).
func MaskCredentials(input any) {
	mask(input, defaultMaskPaths)
}

var defaultMaskPaths = func() [][]string {
	var out [][]string
	for _, m := range DefaultMasks {
		out = append(out, strings.Split(strings.Trim(m, "/"), "/")[1:])
	}
	return out
}()

// mask removes each path from input (a JSON document) and returns the
// removed ones in OPA's form ("/input/a/b").
func mask(input any, masks [][]string) []string {
	var erased []string
	for _, p := range masks {
		node, ok := input.(map[string]any)
		for i := 0; ok && i < len(p)-1; i++ {
			node, ok = node[p[i]].(map[string]any)
		}
		if !ok {
			continue
		}
		if _, ok := node[p[len(p)-1]]; ok {
			delete(node, p[len(p)-1])
			erased = append(erased, "/input/"+strings.Join(p, "/"))
		}
	}
	return erased
}

// upload POSTs a batch in OPA's format; a failed batch is counted, not
// retried (logging must never hold memory without bound).
func (l *DecisionLogger) upload(ctx context.Context, evs []*DecisionEvent) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	err := json.NewEncoder(gz).Encode(evs)
	if err == nil {
		err = gz.Close()
	}
	if err == nil {
		var req *http.Request
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, l.url, &buf)
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Content-Encoding", "gzip")
			var resp *http.Response
			if resp, err = l.client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					err = fmt.Errorf("decision log upload: %s", resp.Status)
				}
			}
		}
	}
	if err != nil {
		l.failed.Add(int64(len(evs)))
		return
	}
	l.logged.Add(int64(len(evs)))
}
