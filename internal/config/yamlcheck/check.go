// Package yamlcheck checks a parsed YAML document against the Go type it
// will be decoded into, before decoding, so that every problem is reported
// at its own line and column with the full field path ("tenants[1].jwt.
// jwks_file") and in words, never Go type names. It follows aliases and
// merge keys ("<<") as the decoder does, reporting at the alias's use, and
// refuses a document whose aliases expand beyond a node budget (an alias
// bomb) before the decoder expands it.
package yamlcheck

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agnivade/levenshtein"
	"gopkg.in/yaml.v3"
)

// MaxNodes is the default budget of nodes visited, aliases expanded: far
// beyond any real config, far below what would exhaust memory.
const MaxNodes = 1_000_000

// Error is one problem at one place.
type Error struct {
	Line, Column int
	Path         string
	Msg          string
}

func (e *Error) Error() string {
	p := e.Path
	if p == "" {
		p = "(document)"
	}
	return fmt.Sprintf("%d:%d: %s: %s", e.Line, e.Column, p, e.Msg)
}

type checker struct {
	errs   []*Error
	budget int
	over   bool
	pos    map[string]Pos // the first place each path is written
}

// Pos is where a field path is written in the document: its key.
type Pos struct{ Line, Column int }

// Positions maps each field path of doc ("tenants[1].jwt.issuer", list
// items as "tenants[1]") to where it is written, for errors found after
// decoding: a value reached through an alias is at the alias's use.
func Positions(doc *yaml.Node, t reflect.Type) map[string]Pos {
	c := &checker{budget: MaxNodes, pos: map[string]Pos{}}
	n := doc
	if n != nil && n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return c.pos
		}
		n = n.Content[0]
	}
	if n != nil {
		c.walk(n, n, t, "")
	}
	return c.pos
}

func (c *checker) mark(at *yaml.Node, path string) {
	if c.pos == nil || path == "" {
		return
	}
	if _, ok := c.pos[path]; !ok {
		c.pos[path] = Pos{at.Line, at.Column}
	}
}

// Check walks doc (a document node or its content) against t and returns
// the problems found, in document order. maxNodes <= 0 means MaxNodes.
func Check(doc *yaml.Node, t reflect.Type, maxNodes int) []*Error {
	if maxNodes <= 0 {
		maxNodes = MaxNodes
	}
	c := &checker{budget: maxNodes}
	n := doc
	if n != nil && n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	if n != nil {
		c.walk(n, n, t, "")
	}
	return c.errs
}

func (c *checker) add(at *yaml.Node, path, format string, args ...any) {
	c.errs = append(c.errs, &Error{Line: at.Line, Column: at.Column, Path: path, Msg: fmt.Sprintf(format, args...)})
}

var lineRe = regexp.MustCompile(`^(yaml: )?line \d+: `)

var unmarshaler = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// isLeaf reports whether t decodes from a scalar by a method of its own (a
// struct implementing yaml.Unmarshaler with no yaml keys, like
// value.HostPort) or is a duration.
func isLeaf(t reflect.Type) bool {
	if t == reflect.TypeOf(time.Duration(0)) {
		return true
	}
	return reflect.PointerTo(t).Implements(unmarshaler) && (t.Kind() != reflect.Struct || len(fieldsOf(t)) == 0)
}

// walk checks n against t; at is where to report (the alias's use when n
// was reached through one).
func (c *checker) walk(n, at *yaml.Node, t reflect.Type, path string) {
	if c.over {
		return
	}
	c.budget--
	if c.budget < 0 {
		c.over = true
		c.add(at, path, "aliases expand the document beyond %d nodes; refusing it (an alias bomb?)", MaxNodes)
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			c.add(n, path, "alias *%s names no anchor", n.Value)
			return
		}
		c.walk(n.Alias, n, t, path)
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value leaves the field at its zero value
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if isLeaf(t) {
		c.leaf(n, at, t, path)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			c.add(at, path, "%s, want a mapping of keys (%s)", describe(n), strings.Join(Keys(t), ", "))
			return
		}
		c.mapping(n, t, path)
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			c.add(at, path, "%s, want a list", describe(n))
			return
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			c.mark(item, p)
			c.walk(item, item, t.Elem(), p)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.add(at, path, "%s, want a mapping", describe(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" && k.Tag == "!!merge" {
				c.merged(v, func(m *yaml.Node) { c.walk(m, m, t, path) })
				continue
			}
			c.mark(k, join(path, k.Value))
			c.walk(v, v, t.Elem(), join(path, k.Value))
		}
	case reflect.Interface:
	default:
		c.leaf(n, at, t, path)
	}
}

// merged calls f with each mapping a merge key's value names.
func (c *checker) merged(v *yaml.Node, f func(*yaml.Node)) {
	if v.Kind == yaml.SequenceNode {
		for _, m := range v.Content {
			f(m)
		}
		return
	}
	f(v)
}

func (c *checker) mapping(n *yaml.Node, t reflect.Type, path string) {
	fields := fieldsOf(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.Tag == "!!merge" {
			c.merged(v, func(m *yaml.Node) { c.walk(m, m, t, path) })
			continue
		}
		ft, ok := fields[k.Value]
		if !ok {
			c.add(k, join(path, k.Value), "unknown key%s", hint(k.Value, t))
			continue
		}
		c.mark(k, join(path, k.Value))
		c.walk(v, v, ft, join(path, k.Value))
	}
}

// leaf decodes a scalar into a fresh value of t and words the failure.
func (c *checker) leaf(n, at *yaml.Node, t reflect.Type, path string) {
	v := reflect.New(t)
	err := n.Decode(v.Interface())
	if err == nil {
		return
	}
	if reflect.PointerTo(t).Implements(unmarshaler) {
		if te, isType := err.(*yaml.TypeError); !isType || len(te.Errors) == 1 {
			msg := err.Error()
			if isType {
				msg = te.Errors[0]
			}
			c.add(at, path, "%s", lineRe.ReplaceAllString(msg, ""))
			return
		}
	}
	c.add(at, path, "%s is not %s", describe(n), want(t))
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "a value"
}

func want(t reflect.Type) string {
	if t == reflect.TypeOf(time.Duration(0)) {
		return "a duration (like 500ms, 30s or 1h30m)"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "a valid value"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type

// fieldsOf maps t's yaml keys (inline structs flattened) to their types.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := map[string]reflect.Type{}
	defer fieldCache.Store(t, m)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		inline := strings.Contains(","+opts+",", ",inline,")
		if name == "-" || (!f.IsExported() && !inline) {
			continue
		}
		if inline {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range fieldsOf(ft) {
					m[k] = v
				}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

// Keys are t's yaml keys, sorted.
func Keys(t reflect.Type) []string {
	var ks []string
	for k := range fieldsOf(t) {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// hint suggests the key meant: a near spelling at this level, else the
// same key one level down (a mis-indented key), else the valid keys.
func hint(key string, t reflect.Type) string {
	best, bestD := "", 0
	for _, k := range Keys(t) {
		d := levenshtein.ComputeDistance(key, k)
		if strings.HasSuffix(k, "_"+key) || strings.HasPrefix(k, key+"_") {
			d = 1 // ca_file for client_ca_file
		}
		if d <= max(2, len(key)/3) && (best == "" || d < bestD) {
			best, bestD = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	var under []string
	for name, ft := range fieldsOf(t) {
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && !isLeaf(ft) {
			if _, ok := fieldsOf(ft)[key]; ok {
				under = append(under, name)
			}
		}
	}
	if len(under) > 0 {
		sort.Strings(under)
		return fmt.Sprintf(" (it belongs under %s: check its indentation)", strings.Join(under, " or "))
	}
	return fmt.Sprintf(" (valid keys here: %s)", strings.Join(Keys(t), ", "))
}
