# ovlmount: build, install, example, tests.
#
#   make example   build, make example layers, mount, show, unmount
#   make test      say what it installs and changes, install what the tests
#                  need, lint, and run every test with a line per test
#   make install   install ovlmount where mount(8) and mount.fuse3 find it, and
#                  its man page (PREFIX=/usr/local, DESTDIR for staging)
#   make uninstall remove both
#   make deb       the Debian package, bin/ovlmount_VERSION_ARCH.deb
#   make bench     time ovlmount against fuse-overlayfs and kernel overlayfs (root)
#   make conformance-doc   regenerate docs/conformance.md (ovlmount and fuse-overlayfs vs the kernel)
#   make stress    the long stress run against the kernel (root): make stress DURATION=30m PROCS=4

PREFIX  ?= /usr/local
GO      ?= go
BIN     := bin/ovlmount
GOFILES := $(shell find . -name '*.go' -not -path './bin/*') go.mod go.sum

# The release number is VERSION's; the commit is git's, marked -dirty when
# tracked files have changes. Both are linked into the binary for
# --version. The binaries are relinked on every make so that the commit is
# never stale (go build's cache keeps that cheap).
VERSION := $(shell cat VERSION)
COMMIT  := $(shell git rev-parse --short=12 HEAD 2>/dev/null)$(shell git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo -dirty)
LDFLAGS := -X main.release=$(VERSION) -X main.commit=$(COMMIT)

# Debian packages the tests and the example use: fusermount3/mount.fuse3,
# getfattr/setfattr, fuse-overlayfs (the conformance comparison), man (the
# man page test renders docs/ovlmount.8), mkfs.btrfs (a lower layer with
# damaged blocks), mkfs.ext4 (a small upper filesystem to fill, and the
# stress suite's filesystem images), newuidmap/newgidmap (a user namespace
# with a subordinate id range) and fsverity (the fs-verity digests
# internal/fsverity computes are compared with what fsverity digest prints).
DEBS := fuse3 attr fuse-overlayfs man-db btrfs-progs e2fsprogs uidmap fsverity
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck

.PHONY: build install uninstall deb deps example test lint clean conformance-doc bench stress $(BIN) $(BIN)-race

build: $(BIN)

# Built without cgo: the program then needs nothing but the kernel and
# fuse3, and starts 1.5 MiB smaller (no libc mapped).
$(BIN):
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $@ ./cmd/ovlmount

# The binary the mount tests run: race-instrumented, so -race covers the
# daemon too.
$(BIN)-race:
	$(GO) build -race -ldflags "$(LDFLAGS)" -o $@ ./cmd/ovlmount

MAN8 := share/man/man8

install: $(BIN)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/ovlmount
	install -D -m 0644 docs/ovlmount.8 $(DESTDIR)$(PREFIX)/$(MAN8)/ovlmount.8

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/ovlmount $(DESTDIR)$(PREFIX)/$(MAN8)/ovlmount.8

# The Debian package, built with dpkg-deb from this repository and the Go
# module cache (packaging/deb.sh says what it holds). Its program is built
# without cgo: it then needs nothing but the kernel and fuse3.
DEB_ARCH       := $(shell dpkg --print-architecture 2>/dev/null)
DEB            := bin/ovlmount_$(VERSION)_$(DEB_ARCH).deb
DEB_MAINTAINER ?= ovlmount maintainers <maintainers@ovlmount.invalid>

deb:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/deb/ovlmount ./cmd/ovlmount
	packaging/deb.sh "$(VERSION)" "$(DEB_ARCH)" bin/deb/ovlmount "$(DEB_MAINTAINER)" $(DEB)

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

# What make test installs and changes, said before it does any of it.
define TEST_NOTICE
make test installs and changes, outside this repository:
  - apt-get installs those of these Debian packages that are missing: $(DEBS)
  - go install puts staticcheck in $(STATICCHECK) if it is missing
  - the tests mount FUSE filesystems, tmpfs and kernel overlays in
    temporary directories and in private mount namespaces, and unmount them;
    nothing is installed in /usr/local: mount -t fuse.ovlmount finds the
    binary under test in a private mount namespace
  - TestDeb (cmd/ovlmount) builds the Debian package (make deb), installs
    it with apt-get, and removes and purges it again; it refuses to run if
    an ovlmount package is installed already
  - TestPodman (e2e) installs podman, runc and busybox-static with apt-get
    if missing; it and TestRootlessFileBacked (cmd/ovlmount) add the user
    ovlmount-e2e (useradd, with subordinate id ranges) if missing; both
    stay afterwards
In the repository it builds bin/ovlmount-race, bin/testsum and the package.
endef
export TEST_NOTICE

bin/testsum: $(GOFILES)
	$(GO) build -o $@ ./internal/testsum

# GORACE: race-built programs sleep a second at exit by default, and the
# crash test starts hundreds of daemons. testsum prints a line per test and
# per package as they end, and what failing and skipped tests said.
test:
	@echo "$$TEST_NOTICE"
	@$(MAKE) --no-print-directory deps lint $(BIN)-race bin/testsum
	GORACE=atexit_sleep_ms=0 OVLMOUNT_BIN=$(CURDIR)/$(BIN)-race bin/testsum \
		$(GO) test -json -race -count=1 -timeout 30m ./...

# docs/conformance.md: every conformance scenario on ovlmount and on
# fuse-overlayfs, compared with kernel overlayfs (run as root).
conformance-doc: deps $(BIN)
	$(GO) run ./conformance/cmd/conform -q -impl $(BIN) -impl /usr/bin/fuse-overlayfs \
		-md docs/conformance.md -json bin/conformance.json

# The benchmark: layer fixtures are built once under BENCHDIR (on a disk
# file system, not tmpfs) and reused; the report goes to docs/benchmarks.md.
# BENCHFLAGS passes more flags, e.g. -taskset=0, -rounds=7, -only=stat.
# BEFORE is the commit measured as ovlmount-before: the last one served
# through jacobsa/fuse, so that the report shows what the move of the FUSE
# edge to go-fuse changed; BEFORE= leaves it out.
BENCHDIR   ?= /var/tmp/ovlmount-bench
BENCHFLAGS ?=
BEFORE     ?= 1133de7

bin/ovlbench: $(GOFILES)
	$(GO) build -o $@ ./bench

bin/ovlmount-before:
	rm -rf bin/before-src && mkdir -p bin/before-src
	git archive $(BEFORE) | tar -x -C bin/before-src
	cd bin/before-src && CGO_ENABLED=0 $(GO) build -o ../ovlmount-before ./cmd/ovlmount
	rm -rf bin/before-src

BENCH_BEFORE = $(if $(BEFORE),-before bin/ovlmount-before -impl ovlmount$(comma)ovlmount-before$(comma)fuse-overlayfs$(comma)kernel)
comma := ,

bench: deps $(BIN) bin/ovlbench $(if $(BEFORE),bin/ovlmount-before)
	bin/ovlbench -bin $(BIN) $(BENCH_BEFORE) -fixtures $(BENCHDIR) -out docs/benchmarks.md $(BENCHFLAGS)

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
