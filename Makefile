# ovlmount: build, install, example, tests.
#
#   make example   build, make example layers, mount, show, unmount
#   make test      install what the tests need, then lint and run every test
#   make install   install ovlmount where mount(8) and mount.fuse3 find it
#   make bench     time ovlmount against fuse-overlayfs and kernel overlayfs (root)
#   make conformance-doc   regenerate docs/conformance.md (ovlmount and fuse-overlayfs vs the kernel)
#   make stress    the long stress run against the kernel (root): make stress DURATION=30m PROCS=4

PREFIX  ?= /usr/local
GO      ?= go
BIN     := bin/ovlmount
GOFILES := $(shell find . -name '*.go' -not -path './bin/*') go.mod go.sum

# Debian packages the tests and the example use: fusermount3/mount.fuse3,
# getfattr/setfattr, fuse-overlayfs (the conformance comparison),
# mkfs.ext4 (the stress suite's filesystem images).
DEBS := fuse3 attr fuse-overlayfs e2fsprogs
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck

.PHONY: build install uninstall deps example test lint clean conformance-doc bench stress

build: $(BIN)

$(BIN): $(GOFILES)
	$(GO) build -o $@ ./cmd/ovlmount

# The binary the mount tests run: race-instrumented, so -race covers the
# daemon too.
$(BIN)-race: $(GOFILES)
	$(GO) build -race -o $@ ./cmd/ovlmount

install: $(BIN)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/ovlmount

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/ovlmount

deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

example: deps $(BIN)
	./example/run.sh $(BIN)

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint: $(STATICCHECK)
	@test -z "$$(gofmt -l .)" || { echo "gofmt would change:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	$(STATICCHECK) ./...

# GORACE: race-built programs sleep a second at exit by default, and the
# crash test starts hundreds of daemons.
test: deps install lint $(BIN)-race
	GORACE=atexit_sleep_ms=0 OVLMOUNT_BIN=$(CURDIR)/$(BIN)-race $(GO) test -race -count=1 -timeout 30m ./...

# docs/conformance.md: every conformance scenario on ovlmount and on
# fuse-overlayfs, compared with kernel overlayfs (run as root).
conformance-doc: deps $(BIN)
	$(GO) run ./conformance/cmd/conform -q -impl $(BIN) -impl /usr/bin/fuse-overlayfs \
		-md docs/conformance.md -json bin/conformance.json

# The benchmark: layer fixtures are built once under BENCHDIR (on a disk
# file system, not tmpfs) and reused; the report goes to docs/benchmarks.md.
# BENCHFLAGS passes more flags, e.g. -taskset=0, -rounds=5, -only=stat.
BENCHDIR   ?= /var/tmp/ovlmount-bench
BENCHFLAGS ?=

bin/ovlbench: $(GOFILES)
	$(GO) build -o $@ ./bench

bench: deps $(BIN) bin/ovlbench
	bin/ovlbench -bin $(BIN) -fixtures $(BENCHDIR) -out docs/benchmarks.md $(BENCHFLAGS)

# The long stress run (docs/reliability.md): rounds of the random
# differential tester, kernel overlayfs against the race-instrumented
# ovlmount, PROCS worker processes at once, until DURATION has passed.
# Divergences are shrunk and saved under STRESSDIR; bin/stress.json sums
# the run up. STRESSFLAGS passes more flags, e.g. -seed=N, -ops=...
DURATION    ?= 30m
PROCS       ?= 4
STRESSDIR   ?= /var/tmp/ovlmount-stress
STRESSFLAGS ?=

bin/ovlstress: $(GOFILES)
	$(GO) build -o $@ ./stress/cmd/ovlstress

stress: deps $(BIN)-race bin/ovlstress
	mkdir -p $(STRESSDIR)
	GORACE=atexit_sleep_ms=0 bin/ovlstress -bin $(BIN)-race -duration $(DURATION) -procs $(PROCS) \
		-dir $(STRESSDIR) -json bin/stress.json $(STRESSFLAGS)

clean:
	rm -rf bin
