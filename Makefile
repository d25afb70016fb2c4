# l5d-tunnel: see README.md. Every target works on a fresh machine with Go;
# control-plane binaries for the integration and e2e tests are built from the
# Go module proxy by hack/build-tools.sh and cached under ~/.cache/l5d-tunnel.

SHELL      := /usr/bin/env bash
GO         ?= go
BIN        := bin
GOTEST     ?= $(GO) test

.PHONY: all build images test unit integration fuzz e2e bench demo manifests tools vet lint clean help

all: build

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## build bin/tunnel, bin/webhook and bin/linkerd-tunnel (the Linkerd CLI extension)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/tunnel ./cmd/webhook ./cmd/linkerd-tunnel

# Images are assembled by hack/images (its own module, so that
# go-containerregistry's requirements never reach the shipped binaries): static
# binaries on an empty base, references read from dist/'s Deployments.
IMAGES_DIR ?= $(BIN)/images

images: ## OCI images (linux/amd64, linux/arm64) of tunnel, webhook and linkerd-tunnel into bin/images, no container engine needed
	cd hack/images && $(GO) run . --root $(CURDIR) --out $(abspath $(IMAGES_DIR))

tools: ## build (or reuse) kube-apiserver, kube-controller-manager, kubectl, etcd
	@hack/build-tools.sh >/dev/null

# Go modules checked by vet and lint: the root and every module under hack/
# with code worth checking. Left out: hack/lint (a go.mod pinning the
# linter, no Go code) and hack/tools (a package clause and a one-line etcd
# main; checking them would type-check all of k8s.io/kubernetes and etcd for
# nothing). A new module under hack/ (hack/helm4) is checked without a change here.
CHECK_SKIP    := hack/lint hack/tools
CHECK_MODULES := . $(filter-out $(CHECK_SKIP),$(patsubst %/go.mod,%,$(wildcard hack/*/go.mod)))

vet: ## go vet over the root module and hack/'s modules
	@rc=0; for m in $(CHECK_MODULES); do \
	  echo "go vet: $$m"; (cd $$m && $(GO) vet ./...) || rc=1; \
	done; exit $$rc

# golangci-lint is pinned by hack/lint/go.mod (its own module) and built once
# into ~/.cache/l5d-tunnel by hack/build-lint.sh; .golangci.yml says what it checks.
lint: ## golangci-lint over the root module and hack/'s modules (make test runs it)
	@lint=$$(hack/build-lint.sh); rc=0; \
	for m in $(CHECK_MODULES); do \
	  echo "golangci-lint: $$m"; (cd $$m && $$lint run --config $(CURDIR)/.golangci.yml ./...) || rc=1; \
	done; exit $$rc

unit: ## fast tests that need no control plane
	$(GOTEST) -short -count=1 ./...

integration: tools ## every test but the root-only e2e (real kube-apiservers via envtest)
	$(GOTEST) -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/e2e')

# Fuzz budgets are execution counts, not durations: a duration -fuzztime can
# fail with a spurious "context deadline exceeded" on Go 1.26 (go.dev/issue/75804).
FUZZ_HEADER_EXECS ?= 300000x
FUZZ_MUTATE_EXECS ?= 100000x

fuzz: ## run every fuzz target briefly (go test fuzzes one target per run)
	$(GOTEST) -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime $(FUZZ_HEADER_EXECS) ./pkg/smux
	$(GOTEST) -run '^$$' -fuzz '^FuzzMutate$$' -fuzztime $(FUZZ_MUTATE_EXECS) ./pkg/mutate

e2e: tools build ## two control planes in network namespaces (needs root)
	@mkdir -p .cache
	$(GOTEST) -count=1 -timeout 30m -v ./e2e/... 2>&1 | tee .cache/e2e.log | grep -E '^(=== RUN|\s*--- |PASS|FAIL|ok)|: e2e_'; test $${PIPESTATUS[0]} -eq 0

test: tools vet lint ## everything CI runs: lint, unit, integration, fuzz, e2e, images
	$(GOTEST) -count=1 -timeout 40m ./...
	cd hack/images && $(GOTEST) -count=1 -timeout 30m ./...
	cd hack/helm4 && $(GOTEST) -count=1 -timeout 10m ./...
	$(MAKE) fuzz

bench: build ## benchmarks against direct TCP, printed as ratios
	TUNNEL_BIN=$(CURDIR)/$(BIN)/tunnel $(GOTEST) -run '^$$' -bench . -benchmem -count=1 -timeout 30m ./pkg/... ./internal/...

demo: tools build ## the whole link through the tunnel on one machine (needs root)
	$(GO) run ./e2e/cmd/demo $(DEMO_ARGS)

# The charts in manifests/charts are the one source; dist/ is their rendering
# with the example values of manifests/internal/render/values (Helm 4 renders
# the same bytes: hack/helm4).
manifests: ## render dist/*.yaml from the Helm charts in manifests/charts
	$(GO) run ./manifests/internal/render --out dist

clean:
	rm -rf $(BIN) .cache/e2e.log
