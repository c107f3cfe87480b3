package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Sensitive fields. A workflow marks execution input fields
// (Definition.Sensitive) and node output fields (Node.Sensitive) whose
// values are sensitive. Those values are kept out of every message an
// execution produces — a node's error (which the runner logs, stores and
// publishes on the event streams) and the log lines nodes write — by value:
// wherever a sensitive value (or its JSON, quoted or URL-escaped form)
// appears in the text it becomes "[redacted]". A sensitive value shorter
// than minNeedle cannot be replaced without mangling the text, so a
// message that contains it is replaced whole.
//
// A node sees the values of the execution input and of the nodes upstream
// of it, so those are the values redacted from its messages.

// Redacted replaces a sensitive value in a message.
const Redacted = "[redacted]"

// redactedWhole replaces a message holding a short sensitive value.
const redactedWhole = "[redacted: the message contained a sensitive value]"

const minNeedle = 4

// sensitivity is what Compile made of a definition's marks.
type sensitivity struct {
	input []string // fields of the execution input; "*" the whole
	// nodes[i] are node i's sensitive output fields; up[i] the nodes
	// upstream of node i (transitively) that have some.
	nodes [][]string
	up    [][]int
}

// checkSensitive validates the marks: non-empty field names.
func checkSensitive(d Definition) []error {
	var errs []error
	for _, f := range d.Sensitive {
		if strings.TrimSpace(f) == "" {
			errs = append(errs, errors.New("sensitive: empty field name"))
		}
	}
	for _, n := range d.Nodes {
		for _, f := range n.Sensitive {
			if strings.TrimSpace(f) == "" {
				errs = append(errs, fmt.Errorf("node %q: sensitive: empty field name", n.ID))
			}
		}
	}
	return errs
}

// markSensitive prepares a compiled workflow's redaction: when the
// definition marks anything sensitive, each node's run is wrapped so its
// error is redacted and its context carries the values to redact from log
// lines (RedactingHandler).
func (w *Workflow) markSensitive() {
	marked := len(w.Def.Sensitive) > 0
	for _, n := range w.Def.Nodes {
		marked = marked || len(n.Sensitive) > 0
	}
	if !marked {
		return
	}
	sv := &sensitivity{input: w.Def.Sensitive, nodes: make([][]string, len(w.nodes)), up: make([][]int, len(w.nodes))}
	for i, n := range w.Def.Nodes {
		sv.nodes[i] = n.Sensitive
	}
	// Upstream sets in topological order: a node's are its inputs' and theirs.
	ups := make([]map[int]bool, len(w.nodes))
	for _, i := range w.order {
		ups[i] = map[int]bool{}
		for _, e := range w.nodes[i].in {
			ups[i][e.from] = true
			for j := range ups[e.from] {
				ups[i][j] = true
			}
		}
		for j := range ups[i] {
			if len(sv.nodes[j]) > 0 {
				sv.up[i] = append(sv.up[i], j)
			}
		}
		slices.Sort(sv.up[i])
	}
	w.sensitive = sv
	for i, n := range w.nodes {
		spec := *n.spec
		inner := n.spec.run
		up := sv.up[i]
		spec.run = func(ctx context.Context, x *Executor, c *call) (map[string]any, error) {
			nd := sv.needles(c.ex, up)
			if len(nd) == 0 {
				return inner(ctx, x, c)
			}
			out, err := inner(withNeedles(ctx, nd), x, c)
			if err != nil {
				if msg := nd.redact(err.Error()); msg != err.Error() {
					err = &redactedError{msg: msg, err: err}
				}
			}
			return out, err
		}
		n.spec = &spec
	}
}

// redactedError is an error whose text had sensitive values taken out; it
// still matches what it wraps (errors.Is), its text never shows them.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// needles are the sensitive values' text forms, longest first.
type needles []string

// needles gathers the sensitive values a node may see: the marked fields of
// the execution input and of the upstream nodes' outputs (complete before
// the node started).
func (sv *sensitivity) needles(ex *execution, up []int) needles {
	var nd needles
	pick := func(m map[string]any, fields []string) {
		for _, f := range fields {
			if f == "*" {
				nd.add(m)
				continue
			}
			if v, ok := m[f]; ok {
				nd.add(v)
			}
		}
	}
	pick(ex.input, sv.input)
	for _, j := range up {
		pick(ex.outs[j], sv.nodes[j])
	}
	if len(nd) == 0 {
		return nil
	}
	return sortNeedles(nd)
}

// sortNeedles orders needles longest first (a value containing another is
// replaced whole) and drops duplicates.
func sortNeedles(nd needles) needles {
	slices.SortFunc(nd, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	return slices.Compact(nd)
}

// add adds the text forms of v (every leaf of an object or list).
func (nd *needles) add(v any) {
	switch v := v.(type) {
	case map[string]any:
		for _, e := range v {
			nd.add(e)
		}
	case []any:
		for _, e := range v {
			nd.add(e)
		}
	case string:
		if v == "" {
			return
		}
		forms := []string{v, url.QueryEscape(v), url.PathEscape(v)}
		if b, err := json.Marshal(v); err == nil {
			forms = append(forms, string(b[1:len(b)-1]))
		}
		q := strconv.Quote(v)
		forms = append(forms, q[1:len(q)-1])
		*nd = append(*nd, forms...)
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1e15 {
			*nd = append(*nd, strconv.FormatInt(int64(v), 10))
		}
		*nd = append(*nd, strconv.FormatFloat(v, 'g', -1, 64))
	case json.Number:
		*nd = append(*nd, v.String())
	case int:
		*nd = append(*nd, strconv.Itoa(v))
	case int64:
		*nd = append(*nd, strconv.FormatInt(v, 10))
	}
	// bool and null are not secrets worth mangling every message for.
}

// redact takes the sensitive values out of s.
func (nd needles) redact(s string) string {
	for _, n := range nd {
		if len(n) >= minNeedle {
			s = strings.ReplaceAll(s, n, Redacted)
		}
	}
	for _, n := range nd {
		if len(n) < minNeedle && strings.Contains(strings.ReplaceAll(s, Redacted, ""), n) {
			return redactedWhole
		}
	}
	return s
}

type needlesKey struct{}

func withNeedles(ctx context.Context, nd needles) context.Context {
	if prev, _ := ctx.Value(needlesKey{}).(needles); len(prev) > 0 {
		nd = sortNeedles(append(slices.Clone(nd), prev...))
	}
	return context.WithValue(ctx, needlesKey{}, nd)
}

// Redact takes the sensitive values of the execution ctx belongs to (a
// node's context) out of s; without any, s is returned as it is.
func Redact(ctx context.Context, s string) string {
	nd, _ := ctx.Value(needlesKey{}).(needles)
	if len(nd) == 0 {
		return s
	}
	return nd.redact(s)
}

// RedactingHandler wraps a log handler so a record logged with a node's
// context (x.log.InfoContext(ctx, ...)) has the execution's sensitive
// values taken out of its message and attributes. Records without them
// pass unchanged. The executor's logger should be built on it:
//
//	logger = slog.New(workflow.RedactingHandler(logger.Handler()))
func RedactingHandler(h slog.Handler) slog.Handler { return redactingHandler{h} }

type redactingHandler struct{ h slog.Handler }

func (r redactingHandler) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r redactingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return redactingHandler{r.h.WithAttrs(as)}
}

func (r redactingHandler) WithGroup(name string) slog.Handler {
	return redactingHandler{r.h.WithGroup(name)}
}

func (r redactingHandler) Handle(ctx context.Context, rec slog.Record) error {
	nd, _ := ctx.Value(needlesKey{}).(needles)
	if len(nd) == 0 {
		return r.h.Handle(ctx, rec)
	}
	out := slog.NewRecord(rec.Time, rec.Level, nd.redact(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(nd, a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func redactAttr(nd needles, a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		as := v.Group()
		out := make([]any, len(as))
		for i, g := range as {
			out[i] = redactAttr(nd, g)
		}
		return slog.Group(a.Key, out...)
	case slog.KindString:
		return slog.String(a.Key, nd.redact(v.String()))
	case slog.KindBool, slog.KindDuration, slog.KindTime:
		return a
	}
	s := v.String()
	if r := nd.redact(s); r != s {
		return slog.String(a.Key, r)
	}
	return a
}
