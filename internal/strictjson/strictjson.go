// Package strictjson decodes JSON request bodies so that every reader of a
// body sees the same document.
//
// encoding/json matches object keys to struct fields case-insensitively and
// keeps the last of several matches, while a policy reads the body as a
// case-sensitive map (OPA's parsed_body). {"name":"a","NAME":"b"} is then
// "a" to the policy and "b" to the runner. This package refuses every body
// on which two such readers could disagree:
//
//   - two keys of one object that are equal, or equal under case folding
//     (the folding encoding/json uses), at any nesting level;
//   - when decoding into a struct, a key that is not exactly the name of
//     one of its fields (an unknown key, or a field's name in another case);
//   - anything but exactly one JSON value (trailing data, an empty body).
//
// What it accepts decodes, with encoding/json, to the value a case-sensitive
// map parse gives.
package strictjson

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// MaxDepth bounds the nesting of arrays and objects (encoding/json's own
// limit).
const MaxDepth = 10000

// Reason says why a key was refused.
type Reason int

const (
	// Duplicate: the key appears twice in one object.
	Duplicate Reason = iota + 1
	// CaseVariant: two keys of one object differ only in case.
	CaseVariant
	// CaseMismatch: the key names a struct field in another case.
	CaseMismatch
	// Unknown: the key names no field of the struct decoded into.
	Unknown
)

// KeyError is a refused key. Path locates the object holding it, in the
// form $, $.nodes[0].config.
type KeyError struct {
	Path   string
	Key    string
	Other  string // the clashing key (Duplicate, CaseVariant) or the field (CaseMismatch)
	Reason Reason
}

func (e *KeyError) Error() string {
	switch e.Reason {
	case Duplicate:
		return fmt.Sprintf("duplicate key %q at %s: each key may appear once", e.Key, e.Path)
	case CaseVariant:
		return fmt.Sprintf("key %q at %s differs only in case from key %q: keys are case-sensitive and may not be repeated in another case", e.Key, e.Path, e.Other)
	case CaseMismatch:
		return fmt.Sprintf("unknown key %q at %s: keys are case-sensitive; did you mean %q?", e.Key, e.Path, e.Other)
	}
	return fmt.Sprintf("unknown key %q at %s", e.Key, e.Path)
}

// Check reports whether b is exactly one JSON value with no duplicate or
// case-variant keys in any object.
func Check(b []byte) error {
	_, err := parse(b)
	return err
}

// Unmarshal checks b as Check does and decodes it into v with
// encoding/json. When v's target is (or holds) a struct, every key of the
// objects decoded into one must be exactly the JSON name of one of its
// fields. Types with their own UnmarshalJSON or UnmarshalText are decoded
// by them; their keys are checked only for duplicates and case variants.
func Unmarshal(b []byte, v any) error {
	doc, err := parse(b)
	if err != nil {
		return err
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("strictjson: Unmarshal needs a non-nil pointer, not %T", v)
	}
	var path pathStack
	if err := checkFields(doc, rv.Type().Elem(), &path); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	return nil
}

// SyntaxError is a body that is not one well-formed JSON value.
type SyntaxError struct {
	Offset int64 // bytes read when the error was found
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.Offset, e.Msg)
}

// parse reads b token by token into a generic document (numbers as
// json.Number), refusing duplicate and case-variant keys.
func parse(b []byte) (any, error) {
	p := &parser{dec: json.NewDecoder(bytes.NewReader(b))}
	p.dec.UseNumber()
	tok, err := p.token()
	if err == io.EOF {
		return nil, &SyntaxError{Msg: "the body is empty"}
	}
	if err != nil {
		return nil, err
	}
	doc, err := p.value(tok, 0)
	if err != nil {
		return nil, err
	}
	if _, err := p.dec.Token(); err != io.EOF {
		return nil, &SyntaxError{Offset: p.dec.InputOffset(), Msg: "data after the JSON value"}
	}
	return doc, nil
}

type parser struct {
	dec  *json.Decoder
	path pathStack
}

func (p *parser) token() (json.Token, error) {
	tok, err := p.dec.Token()
	if err != nil && err != io.EOF {
		msg := err.Error()
		var se *json.SyntaxError
		if errors.As(err, &se) {
			msg = se.Error()
		} else if errors.Is(err, io.ErrUnexpectedEOF) {
			msg = "unexpected end of the body"
		}
		return nil, &SyntaxError{Offset: p.dec.InputOffset(), Msg: msg}
	}
	return tok, err
}

func (p *parser) next() (json.Token, error) {
	tok, err := p.token()
	if err == io.EOF {
		return nil, &SyntaxError{Offset: p.dec.InputOffset(), Msg: "unexpected end of the body"}
	}
	return tok, err
}

func (p *parser) value(tok json.Token, depth int) (any, error) {
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil // string, json.Number, bool or nil
	}
	if depth >= MaxDepth {
		return nil, &SyntaxError{Offset: p.dec.InputOffset(), Msg: fmt.Sprintf("nested deeper than %d", MaxDepth)}
	}
	switch d {
	case '[':
		arr := []any{}
		for i := 0; ; i++ {
			tok, err := p.next()
			if err != nil {
				return nil, err
			}
			if tok == json.Delim(']') {
				return arr, nil
			}
			p.path.push(seg{index: i, isIndex: true})
			v, err := p.value(tok, depth+1)
			p.path.pop()
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
	case '{':
		obj := map[string]any{}
		folded := map[string]string{} // folded key -> key as sent
		for {
			tok, err := p.next()
			if err != nil {
				return nil, err
			}
			if tok == json.Delim('}') {
				return obj, nil
			}
			key, ok := tok.(string)
			if !ok { // Token reports this itself; kept as a guard
				return nil, &SyntaxError{Offset: p.dec.InputOffset(), Msg: "an object key must be a string"}
			}
			f := Fold(key)
			if prev, seen := folded[f]; seen {
				r := CaseVariant
				if prev == key {
					r = Duplicate
				}
				return nil, &KeyError{Path: p.path.String(), Key: key, Other: prev, Reason: r}
			}
			folded[f] = key
			tok, err = p.next()
			if err != nil {
				return nil, err
			}
			p.path.push(seg{key: key})
			v, err := p.value(tok, depth+1)
			p.path.pop()
			if err != nil {
				return nil, err
			}
			obj[key] = v
		}
	}
	return nil, &SyntaxError{Offset: p.dec.InputOffset(), Msg: fmt.Sprintf("unexpected %q", rune(d))}
}

// Fold maps a key to a form equal for exactly the keys encoding/json
// treats as the same field name (bytes.EqualFold): ASCII letters upper
// cased, every other rune the smallest rune of its Unicode fold orbit.
func Fold(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if r < utf8.RuneSelf {
			if 'a' <= r && r <= 'z' {
				r -= 'a' - 'A'
			}
			b.WriteRune(r)
			continue
		}
		b.WriteRune(foldRune(r))
	}
	return b.String()
}

// foldRune is the smallest rune of r's fold orbit (as encoding/json).
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// checkFields walks doc alongside the type it is decoded into and refuses a
// key that is not exactly a field's JSON name.
func checkFields(doc any, t reflect.Type, path *pathStack) error {
	if t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType) ||
		t.Implements(textUnmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkFields(doc, t.Elem(), path)
	case reflect.Struct:
		obj, ok := doc.(map[string]any)
		if !ok {
			return nil // a type mismatch: encoding/json reports it
		}
		fs := fieldsOf(t)
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			ft, ok := fs.exact[k]
			if !ok {
				if name, ok := fs.folded[Fold(k)]; ok {
					return &KeyError{Path: path.String(), Key: k, Other: name, Reason: CaseMismatch}
				}
				return &KeyError{Path: path.String(), Key: k, Reason: Unknown}
			}
			path.push(seg{key: k})
			err := checkFields(obj[k], ft, path)
			path.pop()
			if err != nil {
				return err
			}
		}
	case reflect.Map:
		obj, ok := doc.(map[string]any)
		if !ok {
			return nil
		}
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			path.push(seg{key: k})
			err := checkFields(obj[k], t.Elem(), path)
			path.pop()
			if err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		arr, ok := doc.([]any)
		if !ok {
			return nil
		}
		for i, x := range arr {
			path.push(seg{index: i, isIndex: true})
			err := checkFields(x, t.Elem(), path)
			path.pop()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

type fieldSet struct {
	exact  map[string]reflect.Type // JSON name -> field type
	folded map[string]string       // Fold(name) -> name
}

var fieldCache sync.Map // reflect.Type -> *fieldSet

// fieldsOf lists the JSON names encoding/json decodes into t: exported
// fields by tag name or field name, "-" skipped, untagged embedded structs
// promoted (a shallower field wins). A name this finds that encoding/json
// would drop as ambiguous is still refused by DisallowUnknownFields.
func fieldsOf(t reflect.Type) *fieldSet {
	if v, ok := fieldCache.Load(t); ok {
		return v.(*fieldSet)
	}
	fs := &fieldSet{exact: map[string]reflect.Type{}, folded: map[string]string{}}
	level := []reflect.Type{t}
	visited := map[reflect.Type]bool{}
	for len(level) > 0 {
		var next []reflect.Type
		found := map[string]reflect.Type{}
		for _, st := range level {
			if visited[st] {
				continue
			}
			visited[st] = true
			for i := range st.NumField() {
				f := st.Field(i)
				tag := f.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, _, _ := strings.Cut(tag, ",")
				ft := f.Type
				if f.Anonymous {
					et := ft
					if et.Kind() == reflect.Pointer {
						et = et.Elem()
					}
					if !f.IsExported() && et.Kind() != reflect.Struct {
						continue
					}
					if name == "" && et.Kind() == reflect.Struct {
						next = append(next, et)
						continue
					}
				} else if !f.IsExported() {
					continue
				}
				if name == "" {
					name = f.Name
				}
				if _, ok := fs.exact[name]; !ok {
					found[name] = ft
				}
			}
		}
		for name, ft := range found {
			fs.exact[name] = ft
			fs.folded[Fold(name)] = name
		}
		level = next
	}
	fieldCache.Store(t, fs)
	return fs
}

// seg is one step of a path: an object key or an array index.
type seg struct {
	key     string
	index   int
	isIndex bool
}

type pathStack []seg

func (p *pathStack) push(s seg) { *p = append(*p, s) }
func (p *pathStack) pop()       { *p = (*p)[:len(*p)-1] }

func plainKey(k string) bool {
	if k == "" {
		return false
	}
	for i, r := range k {
		if !(r == '_' || unicode.IsLetter(r) || (i > 0 && unicode.IsDigit(r))) {
			return false
		}
	}
	return true
}

func (p pathStack) String() string {
	var b strings.Builder
	b.WriteByte('$')
	for _, s := range p {
		switch {
		case s.isIndex:
			b.WriteString("[" + strconv.Itoa(s.index) + "]")
		case plainKey(s.key):
			b.WriteString("." + s.key)
		default:
			b.WriteString("[" + strconv.Quote(s.key) + "]")
		}
	}
	return b.String()
}
