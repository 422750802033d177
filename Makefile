# edgegate build and test entry points. CI runs `make test` (see .ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

GO       ?= go
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
FUZZTIME ?= 30s
CP_VERSION := v1.36.3

# Where hack/controlplane.sh puts kube-apiserver and etcd, and where
# internal/controlplane looks for them.
EDGEGATE_CP_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/edgegate/controlplane-$(CP_VERSION)
export EDGEGATE_CP_DIR

# Where hack/pebble.sh puts pebble and pebble-challtestsrv, and where
# internal/pebble looks for them (tlsmgr's ACME tests).
PEBBLE_VERSION := v2.10.1
EDGEGATE_PEBBLE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/edgegate/pebble-$(PEBBLE_VERSION)
export EDGEGATE_PEBBLE_DIR

.PHONY: all build controlplane pebble test test-short vet fuzz demo bench bench-propagation bench-scale bench-idleconn bench-go clean clean-controlplane

all: build

build:
	@echo "build: bin/edgegate $(VERSION)"
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/edgegate .

# Builds the real kube-apiserver and etcd for the end-to-end tests and the
# demo; cached, ~5-10 minutes on a cold cache.
controlplane:
	@bash hack/controlplane.sh

# Builds Let's Encrypt's Pebble ACME test server and its DNS helper for the
# tlsmgr ACME tests; cached, ~1 minute on a cold cache.
pebble:
	@bash hack/pebble.sh

vet:
	@echo "vet: go vet ./..."
	$(GO) vet ./...

test: controlplane pebble vet
	@echo "test: go test -race ./... (end-to-end tests use the control plane in $(EDGEGATE_CP_DIR))"
	$(GO) test -race -count=1 -timeout 20m ./...
	@echo "test: proxy and end-to-end tests again without -race: the raw-syscall socket I/O is compiled out under the race detector (~1-2 min)"
	$(GO) test -count=1 -timeout 10m ./proxy/ ./e2e/
	@echo "test: the other plain-HTTP data path with -race: proxy tests on 2 event loops, end-to-end tests on the goroutine server (~1-2 min)"
	EDGEGATE_TEST_EVENT_LOOPS=2 $(GO) test -race -count=1 -timeout 10m ./proxy/
	EDGEGATE_TEST_EVENT_LOOPS=-1 $(GO) test -race -count=1 -timeout 10m ./e2e/

# No end-to-end tests: no control plane needed.
test-short: vet
	@echo "test-short: unit tests only (EDGEGATE_SKIP_E2E=1)"
	EDGEGATE_SKIP_E2E=1 $(GO) test -race -count=1 -timeout 10m ./...

# Runs every Fuzz target for FUZZTIME (default 30s) each.
fuzz:
	@found=0; \
	for pkg in $$($(GO) list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' ./...); do \
		for target in $$($(GO) test -list '^Fuzz' "$$pkg" | grep '^Fuzz' || true); do \
			found=1; \
			echo "fuzz: $$pkg $$target for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime "$(FUZZTIME)" "$$pkg"; \
		done; \
	done; \
	if [ $$found = 0 ]; then echo "fuzz: no Fuzz targets yet"; fi

demo: controlplane build
	@echo "demo: go run ./internal/demo (control plane from $(EDGEGATE_CP_DIR))"
	$(GO) run ./internal/demo

# Time from an EndpointSlice or Ingress write to the first request routed the
# new way, p50/p99 over CHANGES changes of each kind (needs root: pods live in
# a network namespace). Writes bench/results/propagation.md. ~1 minute.
CHANGES ?= 200
bench-propagation: controlplane
	@echo "bench-propagation: $(CHANGES) EndpointSlice and $(CHANGES) Ingress changes through a real API server (~1 min)"
	$(GO) run ./bench/propagation -changes $(CHANGES)

# 10,000 Ingresses over 2,000 Services with 50,000 endpoints (and a table
# 1/100 that size for comparison) through a real API server: time to ready,
# RSS, and the cost of one endpoint change (needs root: pods live in a network
# namespace). Writes bench/results/scale.md. ~1.5 minutes.
bench-scale: controlplane
	@echo "bench-scale: 10,000 Ingresses / 2,000 Services / 50,000 endpoints plus a 1/100 table through a real API server (~1.5 min, needs root)"
	$(GO) run ./bench/scale

# Memory per idle keep-alive client connection of the real binary, plain HTTP
# and TLS, against the 8 KiB target (needs root: pods live in a network
# namespace). Writes bench/results/idleconn.md. ~2 minutes.
IDLE_CONNS ?= 10000
bench-idleconn: controlplane
	@echo "bench-idleconn: memory per idle keep-alive connection, $(IDLE_CONNS) plain + $(IDLE_CONNS) TLS connections (~2 min, needs root)"
	$(GO) run ./bench/idleconn -conns $(IDLE_CONNS)

# Hot-path Go benchmarks (match, header rewrite, pick, build) with -benchmem.
bench-go:
	@echo "bench-go: hot-path benchmarks (~1-2 min)"
	$(GO) test -run '^$$' -bench . -benchmem ./route/ ./proxy/ ./balancer/ ./discovery/ ./tlsmgr/

# Whole-system load: edgegate vs nginx vs haproxy vs direct through the same
# pods (needs root; installs wrk, nginx, haproxy). Writes
# bench/results/latest.md. ~7 minutes; QUICK=1 make bench ~1.5 minutes.
bench:
	@if [ -x bench/run.sh ]; then \
		echo "bench: bench/run.sh"; bench/run.sh; \
	else \
		echo "bench: no bench/run.sh yet"; \
	fi

clean:
	rm -rf bin/ tmp/

# Removes the cached control plane binaries (the next build takes minutes).
clean-controlplane:
	rm -rf "$(EDGEGATE_CP_DIR)"
