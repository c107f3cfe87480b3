package policies

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"hash"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
)

// Decision cache: an entry is a decision of one bundle version (its
// revision and the engine's generation counter, bumped on every bundle or
// data swap) for one value of exactly the input paths the bundle's policy
// can read (cacheplan.go). Two inputs equal on those paths make the policy
// take the same steps and reach the same decision, because every other
// thing an evaluation depends on is fixed for the version: data is the
// bundle's, and a bundle whose policy can call a non-deterministic builtin
// is not cached at all — but for io.jwt.decode_verify, whose result changes
// only when the clock crosses a verified token's exp or nbf; an entry holding
// such a call is used only between its evaluation time and the next of
// those instants.

// CacheOutcome says what the decision cache did for one evaluation.
type CacheOutcome uint8

const (
	CacheOff    CacheOutcome = iota // no cache configured
	CacheHit                        // answered from the cache
	CacheMiss                       // evaluated (and stored when it could be)
	CacheBypass                     // evaluated, never cacheable (EvalInfo.Bypass says why)
)

// EvalInfo is what one evaluation reports besides its result.
type EvalInfo struct {
	Revision string
	Cache    CacheOutcome
	Bypass   string // the reason when Cache is CacheBypass (Bypass* constants)
}

// cacheEntry is one cached decision; value is never handed out (copies are).
type cacheEntry struct {
	value any
	err   error // only ErrUndefined / ErrMultipleResults: determined by the input
	// from, until: the clock interval the entry holds in (zero until: always)
	from, until time.Time
}

func (c *cacheEntry) valid(now time.Time) bool {
	return c.until.IsZero() || !now.Before(c.from) && now.Before(c.until)
}

// decisionCache is the size-bounded LRU shared by every version of an engine.
type decisionCache struct {
	lru *lru.Cache[[sha256.Size]byte, *cacheEntry]
}

func newDecisionCache(size int) *decisionCache {
	c, _ := lru.New[[sha256.Size]byte, *cacheEntry](size) // size > 0: never fails
	return &decisionCache{lru: c}
}

var hashers = sync.Pool{New: func() any { return &keyHasher{h: sha256.New()} }}

type keyHasher struct {
	h   hash.Hash
	buf []byte
}

// key is the hash of the version and the canonical encoding of each input
// path's value; a missing path and a null one encode differently.
func (p *prepared) key(input ast.Value) [sha256.Size]byte {
	k := hashers.Get().(*keyHasher)
	b := k.buf[:0]
	b = appendString(b, p.revision)
	b = binary.AppendUvarint(b, p.generation)
	for _, path := range p.plan.paths {
		v, err := input.Find(path)
		if err != nil || v == nil {
			b = append(b, 'M') // missing
			continue
		}
		b = append(b, 'P')
		b = appendValue(b, v)
	}
	k.h.Reset()
	k.h.Write(b)
	var out [sha256.Size]byte
	k.h.Sum(out[:0])
	if cap(b) <= 64<<10 {
		k.buf = b
	}
	hashers.Put(k)
	return out
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendValue is a canonical, injective encoding of a ground value: a type
// tag, lengths before contents, object keys and set members in OPA's order.
func appendValue(b []byte, v ast.Value) []byte {
	switch x := v.(type) {
	case ast.Null:
		return append(b, 'n')
	case ast.Boolean:
		if x {
			return append(b, 't')
		}
		return append(b, 'f')
	case ast.Number:
		return appendString(append(b, '#'), string(x))
	case ast.String:
		return appendString(append(b, 's'), string(x))
	case *ast.Array:
		b = binary.AppendUvarint(append(b, '['), uint64(x.Len()))
		for i := range x.Len() {
			b = appendValue(b, x.Elem(i).Value)
		}
		return b
	case ast.Object:
		keys := x.Keys() // sorted
		b = binary.AppendUvarint(append(b, '{'), uint64(len(keys)))
		for _, k := range keys {
			b = appendValue(b, k.Value)
			b = appendValue(b, x.Get(k).Value)
		}
		return b
	case ast.Set:
		elems := x.Sorted()
		b = binary.AppendUvarint(append(b, '<'), uint64(elems.Len()))
		for i := range elems.Len() {
			b = appendValue(b, elems.Elem(i).Value)
		}
		return b
	}
	// Not ground (cannot happen for an input): a tag no ground value has, then its text.
	return appendString(append(b, '?'), v.String())
}

// timeBound is the interval after evaluation time t0 in which every
// io.jwt.decode_verify call recorded in ndb gives the same result: up to the
// first exp or nbf after t0 (less a millisecond for the float rounding of
// OPA's comparison). ok is false when a recorded call's token cannot be
// read, or another non-deterministic builtin was called.
func timeBound(ndb builtins.NDBCache, t0 time.Time) (until time.Time, reason string) {
	limit := math.Inf(1)
	for name, calls := range ndb {
		if name != decodeVerify {
			return time.Time{}, BypassNondeterministic + name
		}
		bad := false
		calls.Foreach(func(args, _ *ast.Term) {
			arr, ok := args.Value.(*ast.Array)
			if !ok || arr.Len() < 2 {
				bad = true
				return
			}
			if c, ok := arr.Elem(1).Value.(ast.Object); ok && c.Get(ast.StringTerm("time")) != nil {
				return // the caller fixed the time: this call does not read the clock
			}
			tok, ok := arr.Elem(0).Value.(ast.String)
			if !ok {
				bad = true
				return
			}
			ths, ok := tokenTimes(string(tok))
			if !ok {
				bad = true
				return
			}
			for _, th := range ths {
				if th > float64(t0.UnixNano())-1e6 && th < limit { // within a millisecond of t0 counts as ahead
					limit = th
				}
			}
		})
		if bad {
			return time.Time{}, BypassUnboundedTime
		}
	}
	if math.IsInf(limit, 1) {
		return time.Time{}, "" // no threshold after t0: constant from t0 on
	}
	return time.Unix(0, int64(limit)).Add(-time.Millisecond), ""
}

// tokenTimes reads exp and nbf (in ns) from a compact JWS's payload without
// verifying it. ok is false when the payload is not a JSON object or either
// claim is present but not a number.
func tokenTimes(tok string) ([]float64, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, false
	}
	var claims map[string]json.RawMessage
	if json.Unmarshal(raw, &claims) != nil {
		return nil, false
	}
	var out []float64
	for _, name := range []string{"exp", "nbf"} {
		v, ok := claims[name]
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return nil, false
		}
		out = append(out, f*1e9)
	}
	// an "always" entry for a token with no exp and nbf; in the
	// worst case of a mis-read token the result does not depend on time
	return out, true
}

// copyResult is a deep copy of a decision value (what rego returns: bool,
// string, json.Number, nil, []any, map[string]any), so that a caller may
// change what it gets (the decision log's mask policy does) without
// changing the cache.
func copyResult(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = copyResult(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = copyResult(e)
		}
		return s
	}
	return v
}

// InputNeed says which parts of the input the bundle version's policy can
// read (the decision cache's plan): an input builder may leave the rest
// out, and the decision is the same, because the policy never reads it.
// The zero InputNeed (a policy that reads the input as a whole or by a
// computed key) needs everything. It does not depend on the cache being
// on: a non-deterministic builtin bypasses the cache, not InputNeed.
type InputNeed struct {
	paths []ast.Ref
	known bool
}

// Needs reports whether the value at the input path (object keys from the
// root) or anything under it can be read.
func (n InputNeed) Needs(path ...string) bool {
	if !n.known {
		return true
	}
	for _, p := range n.paths {
		if prefixMatch(p, path) {
			return true
		}
	}
	return false
}

// All reports whether the whole input is needed.
func (n InputNeed) All() bool { return !n.known }

// prefixMatch reports whether one of ref and path is a prefix of the other
// (a term of ref that is not a string might match any key).
func prefixMatch(ref ast.Ref, path []string) bool {
	for i := range min(len(ref), len(path)) {
		if s, ok := ref[i].Value.(ast.String); ok && string(s) != path[i] {
			return false
		}
	}
	return true
}

// EvalBuilt is EvalInfo on the input build makes for the bundle version
// that will decide: build is called with what that version's policy can
// read, and the version cannot change between the two (a reload in
// between would otherwise evaluate a new policy on an input built for the
// old one). It returns the input build made.
func (e *Engine) EvalBuilt(ctx context.Context, build func(InputNeed) (ast.Value, error)) (any, EvalInfo, ast.Value, error) {
	p := e.cur.Load()
	var need InputNeed
	if p.plan != nil && p.plan.pathsKnown {
		need = InputNeed{paths: p.plan.paths, known: true}
	}
	input, err := build(need)
	if err != nil {
		return nil, EvalInfo{Revision: p.revision}, nil, err
	}
	v, info, err := e.evalInfo(ctx, p, input)
	return v, info, input, err
}
