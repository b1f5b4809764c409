# dpsagent: `make demo` shows the main job on the embedded default (iotemu and
# its simulated TPM); `make test` installs the test tools it lacks and runs
# every test. See README.md.

GO          ?= go
BIN         := bin
DIST        := dist
PKG         := github.com/dpsagent/dpsagent
# Version and build date come from the commit, not the clock, so two builds
# of one commit are byte-identical.
VERSION     := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BUILD_DATE  := $(shell TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null)
LDFLAGS     := -s -w -buildid= -X main.version=$(VERSION) -X main.buildDate=$(BUILD_DATE)
GOFLAGS_REL := -trimpath -ldflags '$(LDFLAGS)'
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Test timeout: generous for a 2-core CI machine; soaks have their own target.
TEST_FLAGS  ?= -timeout 15m

.PHONY: all build cross size test test-tools lint bench demo clean

all: build

## build: dpsagent (static, no cgo) and iotemu (cgo: it embeds the TPM simulator)
build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_REL) -o $(BIN)/dpsagent ./cmd/dpsagent
	CGO_ENABLED=1 $(GO) build -trimpath -o $(BIN)/iotemu ./cmd/iotemu
	$(GO) build -trimpath -o $(BIN)/demo ./cmd/demo

## cross: dpsagent for the gateways we ship to
cross:
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build $(GOFLAGS_REL) -o $(DIST)/dpsagent-linux-amd64 ./cmd/dpsagent
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build $(GOFLAGS_REL) -o $(DIST)/dpsagent-linux-arm64 ./cmd/dpsagent
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build $(GOFLAGS_REL) -o $(DIST)/dpsagent-linux-armv7 ./cmd/dpsagent

## size: stripped binary size per architecture (goal for arm64: at most 8 MiB)
size: cross
	@for f in $(DIST)/dpsagent-linux-*; do printf '%-28s %6.2f MiB\n' $$(basename $$f) $$(echo "$$(stat -c %s $$f) / 1048576" | bc -l); done

## test-tools: install what the tests need (swtpm, tpm2-tools, ...) when missing
test-tools:
	@./.ci/test-tools

## test: every test, with the external tools they need
test: test-tools
	$(GO) vet ./...
	$(GO) test $(TEST_FLAGS) ./...

## lint: formatting, go vet and staticcheck
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## bench: benchmarks (TPM commands per operation, emulator throughput, ...)
bench: test-tools
	$(GO) test -run '^$$' -bench . -benchmem ./...

## demo: the main job on the embedded default, nothing to install but Go and gcc
demo: build
	./$(BIN)/demo --bin $(BIN)

clean:
	rm -rf $(BIN) $(DIST)
