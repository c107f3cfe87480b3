package workflow

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
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
	res, err := x.store.TenantQuery(ctx, c.ex.c.Tenant, TenantQuery{SQL: p.query, Args: args, ReadOnly: p.readOnly, MaxRows: p.maxRows})
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

// oneStatement refuses a query with anything but a comment after a ';'
// outside quotes and comments. (PostgreSQL's extended protocol refuses a
// second statement too; SQLite would run them all.) A ';' inside a
// PostgreSQL dollar-quoted body is refused as well: a false alarm, not a
// hole.
func oneStatement(q string) error {
	end := -1
	for i := 0; i < len(q); i++ {
		ch := q[i]
		switch {
		case ch == '\'' || ch == '"' || ch == '`':
			j := strings.IndexByte(q[i+1:], ch)
			if j < 0 {
				return errors.New("unterminated quote")
			}
			i += j + 1
			continue
		case ch == '-' && i+1 < len(q) && q[i+1] == '-':
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				i = len(q)
				continue
			}
			i += j
			continue
		case ch == '/' && i+1 < len(q) && q[i+1] == '*':
			j := strings.Index(q[i+2:], "*/")
			if j < 0 {
				return errors.New("unterminated comment")
			}
			i += j + 3
			continue
		case ch == ';':
			if end < 0 {
				end = i
			}
			continue
		case ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r':
			continue
		}
		if end >= 0 {
			return errors.New("one statement only: there is more after ';'")
		}
	}
	return nil
}
