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
# -gcflags=all=-l: no inlining. It takes 0.88 MiB (10%) off the arm64 binary
# (8.63 -> 7.75 MiB) and 0.4 MiB off resident memory, for 10 ms more CPU from
# a fresh start to connected (26 -> 36 ms on the CI machine; the agent is idle
# otherwise): a gateway's flash and RAM are scarcer than its CPU here.
# Measure both with `make bench` (BenchmarkConnectedMemory; set
# DPSAGENT_E2E_BUILDFLAGS= to compare with the compiler's defaults). The
# end-to-end tests build dpsagent with the same -gcflags
# (cmd/dpsagent/e2e_helpers_test.go).
GCFLAGS_REL := -gcflags=all=-l
GOFLAGS_REL := -trimpath $(GCFLAGS_REL) -ldflags '$(LDFLAGS)'
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Test timeout: generous for a 2-core CI machine; soaks have their own target.
TEST_FLAGS  ?= -timeout 15m

# Packages (packaging/): nfpm at a pinned version, run with `go run`, so it is
# no dependency of the module. DEB_VERSION comes from git (packaging/deb-version);
# set it, and DEB_MAINTAINER, for a release.
NFPM           := $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
DEB_ARCHES     := amd64 arm64 armhf
ifndef DEB_VERSION
DEB_VERSION    := $(shell ./packaging/deb-version)
endif
DEB_REVISION   ?= 1
DEB_MAINTAINER ?= dpsagent maintainers <dpsagent@example.org>
DEBS           := $(foreach a,$(DEB_ARCHES),$(DIST)/dpsagent_$(DEB_VERSION)-$(DEB_REVISION)_$(a).deb)
PKG_GEN        := $(DIST)/pkg
# Every mtime in the packages: the commit's time, not the clock.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: all build cross size test soak test-tools lint bench demo clean
.PHONY: package package-test arm-test

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

## size: stripped binary size per architecture; fails when arm64 is over its
## goal of 8 MiB (CI runs it, so growth past the goal is a decision, not a drift)
SIZE_GOAL_ARM64 := 8388608
size: cross
	@for f in $(DIST)/dpsagent-linux-*; do stat -c '%s %n' $$f; done | awk -v goal=$(SIZE_GOAL_ARM64) '{ \
	  n = split($$2, p, "/"); mib = $$1 / 1048576; note = ""; \
	  if (p[n] ~ /arm64$$/) { note = ($$1 <= goal ? "  (goal: at most 8 MiB: met)" : "  (goal: at most 8 MiB: MISSED)"); if ($$1 > goal) missed = 1 } \
	  printf "%-28s %6.2f MiB%s\n", p[n], mib, note } END { exit missed }'

## package: the .deb packages for amd64, arm64 and armhf in dist/ (packaging/)
package: cross
	rm -rf $(PKG_GEN) $(DIST)/dpsagent_*.deb
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_REL) -o $(PKG_GEN)/dpsagent ./cmd/dpsagent
	GO=$(GO) SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) ./packaging/gen-files $(PKG_GEN)/dpsagent $(PKG_GEN) \
	  '$(DEB_VERSION)-$(DEB_REVISION)' '$(DEB_MAINTAINER)'
	@set -e; for arch in $(DEB_ARCHES); do \
	  case $$arch in armhf) bin=armv7 ;; *) bin=$$arch ;; esac; \
	  deb=$(DIST)/dpsagent_$(DEB_VERSION)-$(DEB_REVISION)_$$arch.deb; \
	  ARCH=$$arch DPSAGENT_BINARY=$(DIST)/dpsagent-linux-$$bin PKG_GEN=$(PKG_GEN) \
	  DEB_VERSION='$(DEB_VERSION)' DEB_REVISION='$(DEB_REVISION)' DEB_MAINTAINER='$(DEB_MAINTAINER)' \
	  SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
	    $(NFPM) package --config packaging/nfpm.yaml --packager deb --target $$deb >/dev/null; \
	  printf '%-52s %6d KiB\n' $$deb $$(( $$(stat -c %s $$deb) / 1024 )); \
	done

## package-test: lintian on every package, then install, upgrade, remove and
## purge the amd64 one in a debootstrapped Debian chroot (as root)
package-test: package
	@./.ci/test-tools package
	lintian --fail-on error,warning --display-level '>=warning' $(DEBS)
	./packaging/install-test $(DIST)/dpsagent_$(DEB_VERSION)-$(DEB_REVISION)_amd64.deb

## arm-test: every test binary compiles for arm64 and armv7 without cgo; the
## device-side tests and `dpsagent version` run under qemu-user, TPM tests on swtpm
arm-test: cross
	@./.ci/test-tools arm
	GO=$(GO) DIST=$(DIST) ./packaging/arm-test

## test-tools: install what the tests need (swtpm, tpm2-tools, ...) when missing
test-tools:
	@./.ci/test-tools

## test: every test, with the external tools they need
test: test-tools
	$(GO) vet ./...
	$(GO) test $(TEST_FLAGS) ./...

## soak: the crash tests at length (300+ kill -9 runs of provisioning and
## renewal, with restarts) and the fleet spread
soak: test-tools
	DPSAGENT_SOAK=1 $(GO) test -timeout 60m -run 'Crash|Fleet' -count=1 ./cmd/dpsagent/

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
