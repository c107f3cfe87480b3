package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Check is one readiness check of a component: an input it cannot serve
// without (a loaded policy, a reachable database, an acknowledged
// snapshot). Run returns nil when the input is usable, else the reason.
type Check struct {
	// Name is the check's name in /readyz?verbose, /readyz/<name> and the
	// check label of kailash_ready_check: short, lowercase, [a-z0-9_].
	Name string
	Run  func(ctx context.Context) error
}

// CheckFunc is a Check from a function that needs no context.
func CheckFunc(name string, f func() error) Check {
	return Check{Name: name, Run: func(context.Context) error { return f() }}
}

// ShutdownCheck is the name of the check every Readiness has first: it
// fails once the process drains (SetDraining).
const ShutdownCheck = "shutdown"

// DefaultCheckTimeout bounds each check of one readiness evaluation.
const DefaultCheckTimeout = 2 * time.Second

// Readiness is a component's readiness: its checks, run on every /readyz
// (and every scrape of kailash_ready_check), as Kubernetes components do:
//
//	GET /readyz          200 "ready" when every check passes, else 503 with the verbose list
//	GET /readyz?verbose  one line per check, "[+]name ok" or "[-]name failed: reason",
//	                     then "readyz check passed" or "readyz check failed"
//	GET /readyz?exclude=name  leaves a check out (repeatable)
//	GET /readyz/name     that check alone
//
// Checks are added before the component serves (Add is not safe to call
// concurrently with the handlers). The draining check (ShutdownCheck)
// comes first and is always present.
type Readiness struct {
	component string
	timeout   time.Duration
	checks    []Check

	gauge *prometheus.Desc
}

// NewReadiness returns the readiness of component (its label in
// kailash_ready_check) with the shutdown check and checks.
func NewReadiness(component string, checks ...Check) *Readiness {
	r := &Readiness{
		component: component,
		timeout:   DefaultCheckTimeout,
		gauge: prometheus.NewDesc("kailash_ready_check",
			"1 while the readiness check passes, 0 while it fails (the reason is on /readyz?verbose); evaluated at each scrape.",
			[]string{"component", "check"}, nil),
	}
	r.Add(Check{Name: ShutdownCheck, Run: func(context.Context) error {
		if draining.Load() {
			return ErrDraining
		}
		return nil
	}})
	for _, c := range checks {
		r.Add(c)
	}
	return r
}

// Add appends checks (before serving). A check without a name or function,
// or with a name already taken, panics: that is a programming error.
func (r *Readiness) Add(checks ...Check) {
	for _, c := range checks {
		if c.Name == "" || c.Run == nil || strings.ContainsAny(c.Name, " /?\n") {
			panic(fmt.Sprintf("telemetry: bad readiness check %q", c.Name))
		}
		for _, have := range r.checks {
			if have.Name == c.Name {
				panic(fmt.Sprintf("telemetry: readiness check %q added twice", c.Name))
			}
		}
		r.checks = append(r.checks, c)
	}
}

// Names are the checks' names in order.
func (r *Readiness) Names() []string {
	out := make([]string, len(r.checks))
	for i, c := range r.checks {
		out[i] = c.Name
	}
	return out
}

// CheckResult is one check's outcome.
type CheckResult struct {
	Name string
	Err  error // nil: passed
}

// Run runs every check not in exclude, concurrently, each bounded by the
// check timeout, and returns the results in the checks' order.
func (r *Readiness) Run(ctx context.Context, exclude ...string) []CheckResult {
	var run []Check
	for _, c := range r.checks {
		skip := false
		for _, x := range exclude {
			skip = skip || x == c.Name
		}
		if !skip {
			run = append(run, c)
		}
	}
	out := make([]CheckResult, len(run))
	var wg sync.WaitGroup
	for i, c := range run {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, r.timeout)
			defer cancel()
			out[i] = CheckResult{Name: c.Name, Err: runCheck(cctx, c)}
		})
	}
	wg.Wait()
	return out
}

// runCheck runs c; a check that outlives its context fails with the
// context's error even if it ignores ctx.
func runCheck(ctx context.Context, c Check) error {
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("check timed out: %w", ctx.Err())
	}
}

// Err runs every check and returns nil when all pass, else an error
// naming each failed check and its reason.
func (r *Readiness) Err(ctx context.Context) error {
	var errs []error
	for _, res := range r.Run(ctx) {
		if res.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", res.Name, res.Err))
		}
	}
	return errors.Join(errs...)
}

// ServeHTTP answers /readyz (see Readiness).
func (r *Readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	name := req.PathValue("check")
	q := req.URL.Query()
	var results []CheckResult
	if name != "" {
		found := false
		for _, c := range r.checks {
			if c.Name == name {
				found = true
			}
		}
		if !found {
			http.Error(w, "no readiness check "+name, http.StatusNotFound)
			return
		}
		var others []string
		for _, c := range r.checks {
			if c.Name != name {
				others = append(others, c.Name)
			}
		}
		results = r.Run(req.Context(), others...)
	} else {
		results = r.Run(req.Context(), q["exclude"]...)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	failed := false
	var b strings.Builder
	for _, res := range results {
		if res.Err == nil {
			fmt.Fprintf(&b, "[+]%s ok\n", res.Name)
			continue
		}
		failed = true
		fmt.Fprintf(&b, "[-]%s failed: %s\n", res.Name, oneLine(res.Err.Error()))
	}
	_, verbose := q["verbose"]
	switch {
	case failed:
		// As kube-apiserver: a failure lists every check, verbose or not.
		w.WriteHeader(http.StatusServiceUnavailable)
		b.WriteString("readyz check failed\n")
	case verbose:
		b.WriteString("readyz check passed\n")
	default:
		b.Reset()
		b.WriteString("ready\n")
	}
	_, _ = w.Write([]byte(b.String()))
}

// oneLine keeps a reason on its line of the verbose answer.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Describe implements prometheus.Collector.
func (r *Readiness) Describe(ch chan<- *prometheus.Desc) { ch <- r.gauge }

// Collect implements prometheus.Collector: kailash_ready_check per check,
// evaluated now.
func (r *Readiness) Collect(ch chan<- prometheus.Metric) {
	for _, res := range r.Run(context.Background()) {
		v := 1.0
		if res.Err != nil {
			v = 0
		}
		ch <- prometheus.MustNewConstMetric(r.gauge, prometheus.GaugeValue, v, r.component, res.Name)
	}
}

// Handle adds GET /readyz and GET /readyz/{check} for r to mux.
func (r *Readiness) Handle(mux *http.ServeMux) {
	mux.Handle("GET /readyz", r)
	mux.Handle("GET /readyz/{check}", r)
}
