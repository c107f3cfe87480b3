package policies

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
	"github.com/open-policy-agent/opa/v1/topdown/cache"
)

// DefaultDecision is evaluated when EngineOptions.Decision is empty.
const DefaultDecision = "kailash/authz/result"

// Errors returned by Eval. Callers fail closed on every one of them.
var (
	// ErrUndefined means the decision has no value for this input.
	ErrUndefined = errors.New("policy decision is undefined")
	// ErrMultipleResults means the decision query produced more than one result.
	ErrMultipleResults = errors.New("policy decision has more than one result")
)

// EngineOptions selects the bundle and the decision.
type EngineOptions struct {
	// Dir is the bundle: a directory, a bundle tarball (.tar.gz, as `opa
	// build` or `kailash policy build` writes it), or "" for the bundle
	// embedded in the binary. Ignored when URL is set.
	Dir string
	// Decision is the path of the rule evaluated, e.g. "kailash/authz/result"
	// (queries data.kailash.authz.result). "" means DefaultDecision.
	Decision string

	// URL is a bundle server address polled for a bundle tarball (ETag /
	// If-None-Match). PersistDir keeps the last good download so a restart
	// during an outage still has a policy. PollInterval defaults to 30s.
	URL          string
	PersistDir   string
	PollInterval time.Duration
	// HTTPClient fetches URL (default: a client with a 30s timeout).
	HTTPClient *http.Client

	// Verify, when set, requires every bundle to carry a valid OPA bundle
	// signature.
	Verify *Verification

	// DecisionCache bounds the decision cache (entries); 0 turns it off.
	// It caches only bundles whose policy it proves it may (cache.go).
	DecisionCache int
}

// Engine evaluates one decision of one bundle. It is safe for concurrent use;
// Reload swaps the prepared query atomically.
type Engine struct {
	dir      string
	decision string
	query    ast.Body
	ref      ast.Ref
	verify   *Verification
	remote   *remote // nil unless the bundle comes from a server
	iqCache  cache.InterQueryCache
	iqvCache cache.InterQueryValueCache
	dcache   *decisionCache // nil when off
	gen      atomic.Uint64  // bumped for every version installed (the cache key's generation)

	mu  sync.Mutex // serialises Reload; readers never take it
	cur atomic.Pointer[prepared]
}

// prepared is one immutable compiled version of the bundle.
type prepared struct {
	pq         rego.PreparedEvalQuery
	compiler   *ast.Compiler // for ExplainRules and EvalAt
	store      storage.Store
	extra      sync.Map // path → *lazyQuery (EvalAt)
	revision   string
	hash       string
	loadedAt   time.Time
	plan       *cachePlan
	generation uint64
}

// NewEngine loads, compiles and prepares the bundle. With a URL it downloads
// the bundle, and falls back to the copy persisted by an earlier run when the
// server cannot be reached.
func NewEngine(ctx context.Context, opts EngineOptions) (*Engine, error) {
	ref, err := DecisionRef(opts.Decision)
	if err != nil {
		return nil, err
	}
	decision := opts.Decision
	if decision == "" {
		decision = DefaultDecision
	}
	e := &Engine{
		dir:      opts.Dir,
		decision: decision,
		ref:      ref,
		query:    ast.NewBody(ast.NewExpr(ast.NewTerm(ref))),
		verify:   opts.Verify,
	}
	if opts.DecisionCache > 0 {
		e.dcache = newDecisionCache(opts.DecisionCache)
	}
	e.iqCache, e.iqvCache = interQueryCaches(ctx)
	if opts.URL != "" {
		e.remote = newRemote(opts)
		e.dir = ""
		if err := e.initRemote(ctx); err != nil {
			return nil, err
		}
		return e, nil
	}
	if err := e.Reload(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// Bounds of the inter-query caches.
const (
	// interQueryCacheBytes bounds http.send's response cache.
	interQueryCacheBytes = 16 << 20
	// valueCacheEntries bounds the value cache shared by the built-ins that
	// use it (compiled regex and glob patterns).
	valueCacheEntries = 10000
	// TokenCacheEntries bounds io_jwt, the cache of verified JWT signatures.
	TokenCacheEntries = 4096
)

// interQueryCaches are the caches that outlive one evaluation, shared by
// every bundle version of an engine: http.send responses, compiled
// patterns, parsed JWKS / certificates (io_jwt_keys, as OPA's default) and
// verified tokens (io_jwt, which OPA leaves off by default). io_jwt holds
// whether a token's signature is valid for a key set, keyed by the token and
// the keys, which is all a signature depends on; the io.jwt.decode_verify
// claims (exp, nbf, iss, aud) are checked again on every call. So a cached
// entry gives the answer a fresh verification would, and an ES256 token
// (~100 µs to verify) costs a lookup after its first request.
func interQueryCaches(ctx context.Context) (cache.InterQueryCache, cache.InterQueryValueCache) {
	cc, _ := cache.ParseCachingConfig(nil) // OPA's defaults; never fails on nil
	limit, values, tokens := int64(interQueryCacheBytes), valueCacheEntries, TokenCacheEntries
	cc.InterQueryBuiltinCache.MaxSizeBytes = &limit
	cc.InterQueryBuiltinValueCache.MaxNumEntries = &values
	cc.InterQueryBuiltinValueCache.NamedCacheConfigs = map[string]*cache.NamedValueCacheConfig{
		"io_jwt": {MaxNumEntries: &tokens, Disabled: new(false)},
	}
	return cache.NewInterQueryCacheWithContext(ctx, cc), cache.NewInterQueryValueCache(ctx, cc)
}

// DecisionRef turns "kailash/authz/result" into the reference
// data.kailash.authz.result.
func DecisionRef(decision string) (ast.Ref, error) {
	if decision == "" {
		decision = DefaultDecision
	}
	if strings.HasPrefix(decision, "/") || strings.HasPrefix(decision, "data.") {
		return nil, fmt.Errorf("policy decision %q: give the path without a leading / or data. prefix", decision)
	}
	ref := ast.Ref{ast.DefaultRootDocument}
	for _, seg := range strings.Split(decision, "/") {
		if seg == "" {
			return nil, fmt.Errorf("policy decision %q: empty path segment", decision)
		}
		ref = append(ref, ast.StringTerm(seg))
	}
	return ref, nil
}

// Dir is the bundle directory or file ("" for the embedded bundle or a
// bundle server).
func (e *Engine) Dir() string { return e.dir }

// Source describes where the bundle comes from, for logs.
func (e *Engine) Source() string {
	switch {
	case e.remote != nil:
		return e.remote.url
	case e.dir == "":
		return "embedded"
	}
	return e.dir
}

// Decision is the decision path evaluated, e.g. "kailash/authz/result".
func (e *Engine) Decision() string { return e.decision }

// Revision identifies the loaded bundle version: the manifest's revision,
// else a hash of its files.
func (e *Engine) Revision() string { return e.cur.Load().revision }

// LoadedAt is when the loaded bundle version was compiled and put in force.
func (e *Engine) LoadedAt() time.Time { return e.cur.Load().loadedAt }

// Loaded reports whether a bundle version is active, and since when it
// is (when it was compiled and swapped in).
func (e *Engine) Loaded() (revision string, at time.Time, ok bool) {
	p := e.cur.Load()
	if p == nil {
		return "", time.Time{}, false
	}
	return p.revision, p.loadedAt, true
}

// Reload re-reads the bundle, compiles it and swaps it in. On any error the
// previous version keeps serving and the error names file:row:col. For a
// bundle server, Reload polls it once.
func (e *Engine) Reload(ctx context.Context) error {
	if e.remote != nil {
		return e.poll(ctx)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	f, err := loadFiles(e.dir, e.verify)
	if err != nil {
		return err
	}
	return e.install(ctx, f)
}

// install compiles f and swaps it in; the caller holds e.mu.
func (e *Engine) install(ctx context.Context, f *files) error {
	if cur := e.cur.Load(); cur != nil && cur.hash == f.hash && cur.revision == f.revision {
		return nil
	}
	p, err := e.prepare(ctx, f)
	if err != nil {
		return err
	}
	e.cur.Store(p)
	if e.dcache != nil {
		e.dcache.lru.Purge() // entries of older versions are never looked up again
	}
	return nil
}

// compile compiles the non-test modules of f.
func compile(f *files) (*ast.Compiler, error) {
	compiler := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1)
	if compiler.Compile(f.modules); compiler.Failed() {
		return nil, locate(compiler.Errors, "")
	}
	return compiler, nil
}

func (e *Engine) prepare(ctx context.Context, f *files) (*prepared, error) {
	compiler, err := compile(f)
	if err != nil {
		return nil, err
	}
	if len(compiler.GetRules(e.ref)) == 0 && !hasData(f.data, e.ref) {
		return nil, fmt.Errorf("policy decision %s: no rule or data defines it", e.ref)
	}
	store := inmem.NewFromObjectWithOpts(f.data, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	pq, err := rego.New(
		rego.ParsedQuery(e.query),
		rego.Compiler(compiler),
		rego.Store(store),
		rego.StoreReadAST(true),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, locate(err, "")
	}
	p := &prepared{pq: pq, compiler: compiler, store: store, revision: f.revision, hash: f.hash, loadedAt: time.Now(),
		generation: e.gen.Add(1)}
	p.plan = planCache(compiler, e.ref) // the cache's key, and the input's parts for InputNeed
	return p, nil
}

func hasData(data map[string]any, ref ast.Ref) bool {
	var node any = data
	for _, t := range ref[1:] {
		m, ok := node.(map[string]any)
		if !ok {
			return false
		}
		s, _ := t.Value.(ast.String)
		if node, ok = m[string(s)]; !ok {
			return false
		}
	}
	return true
}

// Eval evaluates the decision with input (built as an AST value by the
// caller, which is about twice as cheap as converting a Go map) and returns
// its single value as plain Go data (bool, string, json.Number, []any,
// map[string]any). An undefined decision is ErrUndefined; more than one
// result is ErrMultipleResults; evaluation errors, and ctx's error when it
// ended during evaluation, are returned as they are.
func (e *Engine) Eval(ctx context.Context, input ast.Value) (any, error) {
	v, _, err := e.EvalRevision(ctx, input)
	return v, err
}

// EvalRevision is Eval that also returns the revision of the bundle version
// that decided (one immutable version per call, even during a reload).
func (e *Engine) EvalRevision(ctx context.Context, input ast.Value) (any, string, error) {
	v, info, err := e.EvalInfo(ctx, input)
	return v, info.Revision, err
}

// EvalInfo is Eval that also reports the revision that decided and what
// the decision cache did. A cached answer is a copy the caller may change.
func (e *Engine) EvalInfo(ctx context.Context, input ast.Value) (any, EvalInfo, error) {
	return e.evalInfo(ctx, e.cur.Load(), input)
}

func (e *Engine) evalInfo(ctx context.Context, p *prepared, input ast.Value) (any, EvalInfo, error) {
	info := EvalInfo{Revision: p.revision}
	if e.dcache == nil {
		v, err := e.evalPrepared(ctx, p, input, time.Time{}, nil)
		return v, info, err
	}
	if p.plan.bypass != "" {
		info.Cache, info.Bypass = CacheBypass, p.plan.bypass
		v, err := e.evalPrepared(ctx, p, input, time.Time{}, nil)
		return v, info, err
	}
	key := p.key(input)
	now := time.Now()
	if ent, ok := e.dcache.lru.Get(key); ok && ent.valid(now) {
		if err := ctx.Err(); err != nil {
			return nil, info, err
		}
		info.Cache = CacheHit
		return copyResult(ent.value), info, ent.err
	}
	info.Cache = CacheMiss
	var ndb builtins.NDBCache
	if p.plan.boundedTime {
		ndb = builtins.NDBCache{} // records each decode_verify call: what bounds the entry
	}
	v, err := e.evalPrepared(ctx, p, input, now, ndb)
	if err != nil && !errors.Is(err, ErrUndefined) && !errors.Is(err, ErrMultipleResults) {
		return v, info, err // evaluation errors and deadlines are not cached
	}
	ent := &cacheEntry{value: copyResult(v), err: err}
	if len(ndb) > 0 {
		until, reason := timeBound(ndb, now)
		if reason != "" {
			info.Cache, info.Bypass = CacheBypass, reason
			return v, info, err
		}
		ent.from, ent.until = now, until
	}
	e.dcache.lru.Add(key, ent)
	return v, info, err
}

// CachePlan describes the decision cache for the bundle in force: "off",
// "bypassed: <reason>", or the input paths its key is made of.
func (e *Engine) CachePlan() string {
	p := e.cur.Load()
	if e.dcache == nil || p == nil || p.plan == nil {
		return "off"
	}
	return p.plan.describe()
}

// evalPrepared evaluates p on input, at now unless it is zero, recording
// non-deterministic builtin calls in ndb when it is not nil.
func (e *Engine) evalPrepared(ctx context.Context, p *prepared, input ast.Value, now time.Time, ndb builtins.NDBCache) (any, error) {
	// Without an external canceller OPA starts a goroutine per evaluation
	// to watch ctx; context.AfterFunc costs nothing until ctx ends. OPA's
	// per-evaluation metrics (timers in a map) are not read, so they are
	// switched off.
	c := topdown.NewCancel()
	stop := context.AfterFunc(ctx, c.Cancel)
	// The inter-query caches are passed on every evaluation: a prepared
	// query does not keep the ones given to rego.New.
	opts := []rego.EvalOption{rego.EvalParsedInput(input), rego.EvalExternalCancel(c), rego.EvalMetrics(metrics.NoOp()),
		rego.EvalInterQueryBuiltinCache(e.iqCache), rego.EvalInterQueryBuiltinValueCache(e.iqvCache)}
	if !now.IsZero() {
		opts = append(opts, rego.EvalTime(now))
	}
	if ndb != nil {
		opts = append(opts, rego.EvalNDBuiltinCache(ndb))
	}
	rs, err := p.pq.Eval(ctx, opts...)
	stop()
	if err != nil {
		return nil, err
	}
	// OPA checks for cancellation only now and then; a decision reached
	// after the deadline must not be used.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch {
	case len(rs) == 0:
		return nil, ErrUndefined
	case len(rs) > 1:
		return nil, ErrMultipleResults
	case len(rs[0].Expressions) != 1:
		return nil, fmt.Errorf("policy decision: %d expressions in the result", len(rs[0].Expressions))
	}
	return rs[0].Expressions[0].Value, nil
}

// Allowed reads the allow bit of an opa-envoy-plugin style decision: a
// boolean, or an object whose "allowed" is a boolean. Anything else is an
// error.
func Allowed(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case map[string]any:
		if b, ok := x["allowed"].(bool); ok {
			return b, nil
		}
		return false, errors.New(`decision object has no boolean "allowed"`)
	}
	return false, fmt.Errorf("decision is %T, want a boolean or an object", v)
}

// EvalAt evaluates the rule at path (e.g. "system/log/mask") of the bundle
// in force on input; defined is false when the bundle defines no rule
// there (checked once per bundle version, so asking costs nothing then).
// The query is prepared once per bundle version and path.
func (e *Engine) EvalAt(ctx context.Context, path string, input ast.Value) (result any, defined bool, err error) {
	p := e.cur.Load()
	if p.compiler == nil {
		return nil, false, nil
	}
	v, _ := p.extra.LoadOrStore(path, &lazyQuery{})
	lq := v.(*lazyQuery)
	lq.once.Do(func() {
		ref, rerr := DecisionRef(path)
		if rerr != nil {
			lq.err = rerr
			return
		}
		if len(p.compiler.GetRules(ref)) == 0 {
			return // undefined: lq.pq stays nil
		}
		pq, perr := rego.New(rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))), rego.Compiler(p.compiler),
			rego.Store(p.store), rego.StoreReadAST(true)).PrepareForEval(ctx)
		lq.pq, lq.err = &pq, perr
	})
	if lq.err != nil || lq.pq == nil {
		return nil, false, lq.err
	}
	rs, err := lq.pq.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil {
		return nil, true, err
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, true, nil
	}
	return rs[0].Expressions[0].Value, true, nil
}

// lazyQuery is a query prepared on first use for one bundle version.
type lazyQuery struct {
	once sync.Once
	pq   *rego.PreparedEvalQuery
	err  error
}
