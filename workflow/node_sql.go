package workflow

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/kailash-gw/kailash/workflow/store"
)

const (
	maxSQLBytes      = 16 << 10
	defaultSQLRows   = 1000
	maxSQLRowsConfig = 10_000
)

type sqlPrep struct {
	query    string
	params   [][]string // input paths bound to $1, $2, ... in order; nil: input "params"
	readOnly bool
	maxRows  int
}

// prepareSQL checks config: query (one statement; values only through
// the placeholders $1, $2, ..., which both SQLite and PostgreSQL read), params (a
// list of input paths such as "customer.id", bound in order; without it the
// input's "params" list is bound), read_only (default true) and max_rows
// (default 1000, at most 10000).
//
// The query is fixed when the workflow is compiled: nothing of the input is
// ever spliced into it, only bound as a value.
func prepareSQL(cfg map[string]any) (any, error) {
	q, err := str(cfg, "query")
	if err != nil {
		return nil, err
	}
	q = strings.TrimSpace(q)
	if q == "" {
		return nil, errors.New("query: required")
	}
	if len(q) > maxSQLBytes {
		return nil, fmt.Errorf("query: %d bytes, more than %d", len(q), maxSQLBytes)
	}
	if err := oneStatement(q); err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	p := &sqlPrep{query: q, readOnly: true, maxRows: defaultSQLRows}
	if v, ok := cfg["params"]; ok {
		list, ok := v.([]any)
		if !ok {
			return nil, errors.New("params: want a list of input paths")
		}
		p.params = [][]string{}
		for i, e := range list {
			s, ok := e.(string)
			if !ok || s == "" {
				return nil, fmt.Errorf("params[%d]: want an input path such as \"customer.id\"", i)
			}
			p.params = append(p.params, strings.Split(s, "."))
		}
	}
	if v, ok := cfg["read_only"]; ok {
		b, ok := v.(bool)
		if !ok {
			return nil, errors.New("read_only: want true or false")
		}
		p.readOnly = b
	}
	if v, ok := cfg["max_rows"]; ok {
		f, ok := v.(float64)
		if !ok || f < 1 || f > maxSQLRowsConfig || f != math.Trunc(f) {
			return nil, fmt.Errorf("max_rows: want an integer 1..%d", maxSQLRowsConfig)
		}
		p.maxRows = int(f)
	}
	return p, nil
}

// runSQL runs the statement in the caller's tenant's own database, as that
// tenant. Output: rows (objects keyed by column), count, columns, truncated
// (more than max_rows) and first (the first row or null).
func runSQL(ctx context.Context, x *Executor, c *call) (map[string]any, error) {
	p := c.node.prep.(*sqlPrep)
	if x.store == nil {
		return nil, errors.New("the runner has no store for sql nodes")
	}
	var args []any
	if p.params == nil {
		if v, ok := c.input["params"]; ok {
			list, ok := v.([]any)
			if !ok {
				return nil, fmt.Errorf("input params: want a list, got %T", v)
			}
			for _, a := range list {
				args = append(args, sqlArg(a))
			}
		}
	} else {
		for _, path := range p.params {
			v, ok := lookupPath(c.input, path)
			if !ok {
				return nil, fmt.Errorf("params: input has no %s", strings.Join(path, "."))
			}
			args = append(args, sqlArg(v))
		}
	}
	var span trace.Span
	if x.tracer != nil {
		// The statement is the workflow's (parameters are not recorded).
		ctx, span = x.tracer.Start(ctx, "sql query", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("db.query.text", p.query), attribute.Bool("kailash.sql.read_only", p.readOnly)))
	}
	res, err := x.store.TenantQuery(ctx, c.ex.c.Tenant, store.TenantQuery{SQL: p.query, Args: args, ReadOnly: p.readOnly, MaxRows: p.maxRows})
	if span != nil {
		if err != nil {
			span.SetStatus(otelcodes.Error, err.Error())
		} else {
			span.SetAttributes(attribute.Int("db.response.returned_rows", len(res.Rows)))
		}
		span.End()
	}
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	rows := make([]any, len(res.Rows))
	for i, r := range res.Rows {
		rows[i] = r
	}
	var first any
	if len(rows) > 0 {
		first = rows[0]
	}
	return map[string]any{"rows": rows, "count": float64(len(rows)), "columns": anySlice(res.Columns),
		"truncated": res.Truncated, "first": first}, nil
}

func lookupPath(m map[string]any, path []string) (any, bool) {
	var v any = m
	for _, k := range path {
		o, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = o[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// sqlArg is how a JSON value is bound: whole numbers as integers (so they
// compare with integer columns), objects and lists as their JSON text.
func sqlArg(v any) any {
	switch v := v.(type) {
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return int64(v)
		}
		return v
	case nil, string, bool:
		return v
	}
	return jsonText(v)
}

// oneStatement refuses a query that SQLite would run as more than one
// statement. Where the first statement ends is SQLite's own answer, not a
// scanner of ours: the shortest prefix ending at a ';' that SQLite's
// sqlite3_complete (its tokenizer: '...', "...", `...`, [...], comments,
// and CREATE TRIGGER bodies) calls a complete statement. After it there may
// only be whitespace, comments and further ';' (checked conservatively:
// anything else is refused). The query is fixed when the workflow is
// compiled and the store's dialect is not known then, so the check is
// SQLite's for both; on PostgreSQL the extended protocol the sql node uses
// (one Parse per query) refuses a second statement on its own
// (TestSQLOneStatementPostgres).
//
// It cannot prepare the statement to find the tail: preparing needs the
// tenant's schema (an unknown table fails), and modernc.org/sqlite keeps
// the tail it finds to itself (it runs a multi-statement text as a script).
func oneStatement(q string) error {
	if strings.IndexByte(q, 0) >= 0 {
		return errors.New("a NUL byte in the query")
	}
	end, err := sqliteStatementEnd(q)
	if err != nil {
		return err
	}
	if end < 0 {
		// One statement. One that swallows a ';' added after a newline ends
		// in an open quote, identifier or comment: SQLite would refuse it
		// at run time, refuse it now with a clearer message.
		if ok, err := sqliteComplete(q + "\n;"); err != nil || ok {
			return err
		}
		if ok, _ := sqliteComplete(q + "*/\n;"); ok {
			return errors.New("unterminated comment")
		}
		return errors.New("unterminated quote or identifier (or a trigger without END)")
	}
	rest := q[end+1:]
	for i := 0; i < len(rest); i++ {
		switch ch := rest[i]; {
		case ch == ';' || ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f':
		case ch == '-' && i+1 < len(rest) && rest[i+1] == '-':
			j := strings.IndexByte(rest[i:], '\n')
			if j < 0 {
				return nil
			}
			i += j
		case ch == '/' && i+1 < len(rest) && rest[i+1] == '*':
			j := strings.Index(rest[i+2:], "*/")
			if j < 0 {
				return errors.New("one statement only: an unterminated comment after ';'")
			}
			i += j + 3
		default:
			return errors.New("one statement only: there is more after ';'")
		}
	}
	return nil
}

// sqliteComplete is SQLite's sqlite3_complete: whether s ends a statement.
func sqliteComplete(s string) (bool, error) {
	tls := libc.NewTLS()
	defer tls.Close()
	p, err := libc.CString(s)
	if err != nil {
		return false, err
	}
	defer libc.Xfree(tls, p)
	return sqlite3.Xsqlite3_complete(tls, p) != 0, nil
}

// maxStatementProbes bounds the ';' tried as the end of the first
// statement (each costs a pass over the prefix).
const maxStatementProbes = 256

// sqliteStatementEnd is the index of the ';' that ends the first statement
// of q as SQLite tokenizes it, or -1 when no ';' does.
func sqliteStatementEnd(q string) (int, error) {
	if !strings.Contains(q, ";") {
		return -1, nil
	}
	tls := libc.NewTLS()
	defer tls.Close()
	probes := 0
	for i := 0; i < len(q); i++ {
		if q[i] != ';' {
			continue
		}
		if probes++; probes > maxStatementProbes {
			return 0, fmt.Errorf("more than %d ';' in the query", maxStatementProbes)
		}
		p, err := libc.CString(q[:i+1])
		if err != nil {
			return 0, err
		}
		done := sqlite3.Xsqlite3_complete(tls, p) != 0
		libc.Xfree(tls, p)
		if done {
			return i, nil
		}
	}
	return -1, nil
}
