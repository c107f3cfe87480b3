package tenantstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kailash-gw/kailash/internal/config"
)

// Compose is the config the servers serve: file's, with the store's
// tenants after its own, validated together. Any document that does not
// decode, and any tenant id or domain claimed twice (file and store, or
// within the store), is an error naming it; nothing is then composed.
func Compose(file *config.Config, docs []Doc) (*config.Config, error) {
	cfg, _, err := compose(file, docs, nil)
	return cfg, err
}

// decoded is a document decoded in the combination in force: the tenant
// is that config's entry idx (no copy of its own is kept).
type decoded struct {
	doc       json.RawMessage
	suspended bool
	idx       int
}

// compose is Compose reusing the decoded tenants of last (the combination
// in force) whose documents are unchanged, so one stored tenant's change
// decodes that tenant alone; the others are decoded on every core (the
// first read of a large store).
func compose(file *config.Config, docs []Doc, last *composed) (*config.Config, *config.TenantIndex, error) {
	// all is room for the file's tenants followed by the store's (extra):
	// WithTenantsPatch takes it as the combination's, without a copy.
	all := make([]config.Tenant, len(file.Tenants)+len(docs))
	extra := all[len(file.Tenants):]
	errs := make([]error, len(docs))
	var todo []int
	for i, d := range docs {
		if last != nil {
			if c, ok := last.byID[d.ID]; ok && c.suspended == d.Suspended && bytes.Equal(c.doc, d.Document) {
				extra[i] = last.cfg.Tenants[c.idx]
				continue
			}
		}
		todo = append(todo, i)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(todo)) {
		wg.Go(func() {
			for {
				k := int(next.Add(1)) - 1
				if k >= len(todo) {
					return
				}
				i := todo[k]
				extra[i], errs[i] = docs[i].Tenant()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	// A change of a few stored tenants, the file as it was: validate those
	// alone against the others (config.WithTenantsPatch); the full
	// validation walks every tenant (~0.4 s at 100,000) and gives the
	// errors when the patch finds one.
	if last != nil && last.idx != nil && last.file == file && len(todo) <= maxPatchDocs {
		var gone []string
		if len(docs)-added(docs, todo, last) != len(last.byID) { // some of last's are not in docs
			present := make(map[string]bool, len(docs))
			for _, d := range docs {
				present[d.ID] = true
			}
			for id := range last.byID {
				if !present[id] {
					gone = append(gone, id)
				}
			}
		}
		if len(todo)+len(gone) <= maxPatchDocs {
			if cfg, ok := file.WithTenantsPatch(SourceName, all, todo, gone, last.idx); ok {
				return cfg, last.idx, nil
			}
		}
	}
	cfg, err := file.WithTenants(SourceName, extra)
	if err != nil {
		return nil, nil, err
	}
	return cfg, config.NewTenantIndex(cfg), nil
}

// maxPatchDocs is the most changed stored tenants validated on their own
// (compose); more take the full validation.
const maxPatchDocs = 1000

// added is how many of the documents at todo are new (not in last).
func added(docs []Doc, todo []int, last *composed) int {
	n := 0
	for _, i := range todo {
		if _, ok := last.byID[docs[i].ID]; !ok {
			n++
		}
	}
	return n
}

// composed is a combination and where each stored tenant is in it, with
// the file it was composed from and its tenants' index (which follows the
// newest combination: config.WithTenantsPatch updates it).
type composed struct {
	cfg  *config.Config
	byID map[string]decoded
	file *config.Config
	docs []Doc // as composed (Source.claims compares it with the newest)
	idx  *config.TenantIndex
}

func newComposed(cfg *config.Config, docs []Doc, file *config.Config, idx *config.TenantIndex) *composed {
	c := &composed{cfg: cfg, byID: make(map[string]decoded, len(docs)), file: file, docs: docs, idx: idx}
	first := len(cfg.Tenants) - len(docs) // the store's tenants follow the file's, in docs' order
	for i, d := range docs {
		c.byID[d.ID] = decoded{doc: d.Document, suspended: d.Suspended, idx: first + i}
	}
	return c
}

// Source is the file and the store combined: it composes the newest of
// each and hands the result to apply (config.Apply over the process's
// servers). A combination that does not compose, or that apply refuses,
// changes nothing: the last good one keeps serving, and the conflict is
// logged, counted and kept for Err (/debug/status, readiness detail).
type Source struct {
	log *slog.Logger

	conflict prometheus.Gauge
	rejected prometheus.Counter
	tenants  prometheus.Gauge

	mu      sync.Mutex
	file    *config.Config // newest file config that loaded (even if refused in combination)
	docs    []Doc          // newest store contents
	apply   func(*config.Config) error
	inForce *config.Config // the combination being served
	last    *composed      // the newest combination that composed (its decoded tenants are reused)
	err     error          // why the newest combination is not in force; nil when it is
}

// NewSource starts from file (the config loaded at startup).
func NewSource(file *config.Config, log *slog.Logger) *Source {
	s := &Source{log: log, file: file,
		conflict: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kailash_tenant_store_conflict",
			Help: "1 while the newest kailash.yaml and tenant store do not combine (a tenant id or domain claimed twice, a bad document); the last good combination keeps serving."}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{Name: "kailash_tenant_store_rejected_total",
			Help: "Combinations of kailash.yaml and the tenant store refused; the last good one kept serving."}),
		tenants: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kailash_tenant_store_tenants",
			Help: "Tenants from the tenant store in the combination being served."}),
	}
	return s
}

// Register adds kailash_tenant_store_conflict, _rejected_total and
// _tenants to reg (a server's /metrics).
func (s *Source) Register(reg prometheus.Registerer) {
	for _, c := range []prometheus.Collector{s.conflict, s.rejected, s.tenants} {
		_ = reg.Register(c)
	}
}

// Start makes changes reach apply from now on; if the store changed since
// Config composed the servers' first config, the newest combination is
// applied at once.
func (s *Source) Start(apply func(*config.Config) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apply = apply
	_ = s.refreshLocked()
}

// Config composes the newest file and store contents: the servers' first
// config.
func (s *Source) Config() (*config.Config, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg, err := s.composeLocked()
	if err == nil {
		s.inForce = cfg
		s.tenants.Set(float64(len(s.docs)))
	}
	return cfg, err
}

// composeLocked composes the newest file and docs; the caller holds s.mu.
func (s *Source) composeLocked() (*config.Config, error) {
	cfg, idx, err := compose(s.file, s.docs, s.last)
	if err == nil {
		s.last = newComposed(cfg, s.docs, s.file, idx)
	}
	return cfg, err
}

// claims answers for the newest file and store contents, when they are
// the combination in force: ok is false otherwise (then the caller decodes
// the documents itself). owner(domain) is the tenant serving domain.
func (s *Source) claims() (owner func(domain string) (string, bool), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.last
	if s.err != nil || l == nil || l.idx == nil || l.file != s.file || len(l.docs) != len(s.docs) ||
		len(s.docs) > 0 && &l.docs[0] != &s.docs[0] {
		return nil, false
	}
	return func(domain string) (string, bool) {
		s.mu.Lock() // the index follows the combination (patches update it)
		defer s.mu.Unlock()
		return l.idx.DomainOwner(domain)
	}, true
}

// File is the newest file config that loaded.
func (s *Source) File() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.file
}

// Docs is the newest store contents seen.
func (s *Source) Docs() []Doc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.docs
}

// Err is why the newest combination is not being served (nil when it is).
func (s *Source) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// SetFile is a new revision of the file: it is combined with the store
// and applied. The error is the combination's or apply's; the file is
// kept as the newest either way, so a later store change that resolves a
// conflict applies it.
func (s *Source) SetFile(file *config.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.file = file
	return s.refreshLocked()
}

// SetDocs is the store's newest contents (Follow's callback).
func (s *Source) SetDocs(docs []Doc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.docs = docs
	if s.apply != nil {
		_ = s.refreshLocked()
	}
}

func (s *Source) refreshLocked() error {
	if s.apply == nil {
		return nil
	}
	cfg, err := s.composeLocked()
	if err == nil {
		err = s.apply(cfg)
	}
	if err != nil {
		if s.err == nil || s.err.Error() != err.Error() {
			s.log.Error("kailash.yaml and the tenant store do not combine; the last good tenants keep serving", "err", err)
		}
		s.err = fmt.Errorf("tenant store: %w", err)
		s.conflict.Set(1)
		s.rejected.Inc()
		return err
	}
	s.inForce, s.err = cfg, nil
	s.conflict.Set(0)
	s.tenants.Set(float64(len(s.docs)))
	return nil
}

// InForce is the combination being served.
func (s *Source) InForce() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inForce
}
