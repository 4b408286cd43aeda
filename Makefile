# notifyd: one plain GNU Makefile for every program, test and install step.
#
#   make            build every program into bin/
#   make deps       install the Debian packages the build, tests and run need
#   make deps-run   only what the build and make run need
#   make fresh-check  make test in a clean Debian 12 root (debootstrap, root)
#   make run        build and run the system locally (private redis if needed)
#   make test       unit + end-to-end tests (installs deps first)
#   make check      the tests once more under ASan+UBSan
#   make bench      benchmarks (figures, not pass/fail)
#   make valgrind   end-to-end suites with every program under memcheck
#   make soak       the delivery fault tests, the randomized one for SOAK_SECONDS (600)
#   make fuzz       libFuzzer runs of the parsers (installs clang)
#   make deb        the Debian package: build/deb/notifyd_<version>_<arch>.deb
#   make cluster    supervisord + nginx + 2 notifyd-ws + notifyd-api + Redis, on loopback
#   make install    PREFIX=/usr/local DESTDIR=
#   make SANITIZER=address|undefined|address,undefined ...

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
VERSION := 0.1.0

CC      ?= cc
CFLAGS  ?= -O2 -g
PKG_CONFIG ?= pkg-config
# Debian's python3 has pytest and websockets; a python3 earlier on PATH may not.
PYTHON ?= /usr/bin/python3

# Debian 12's wslay and libev ship no .pc file: plain -l flags there.
# libcrypto (libssl-dev) parses keys and hashes: SHA-1, base64, PEM.
PKGS      := hiredis jansson libjwt libmicrohttpd
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)

NT_CFLAGS := -std=c11 -D_GNU_SOURCE -DNT_VERSION='"$(VERSION)"' \
	-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wno-unused-parameter -Ilib $(PKG_CFLAGS) -MMD -MP
NT_LDFLAGS :=
NT_LIBS   := -Wl,--as-needed $(PKG_LIBS) -lwslay -lev -lcrypto -lpthread -lm

ifneq ($(SANITIZER),)
SAN_FLAGS := -fsanitize=$(SANITIZER) -fno-sanitize-recover=all -fno-omit-frame-pointer
NT_CFLAGS += $(SAN_FLAGS)
NT_LDFLAGS += $(SAN_FLAGS)
BUILD := build/san
else
BUILD := build/plain
endif

ALL_CFLAGS  = $(CPPFLAGS) $(CFLAGS) $(NT_CFLAGS)
ALL_LDFLAGS = $(LDFLAGS) $(NT_LDFLAGS)

LIB_SRCS := $(wildcard lib/*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
LIBNT    := $(BUILD)/libnotifyd.a

PROGS := notifyd-ws notifyd-api notify-send notify-tail
# A program is built once its folder has a main.c.
BUILT_PROGS := $(foreach p,$(PROGS),$(if $(wildcard $(p)/main.c),$(p)))
BINS := $(BUILT_PROGS:%=bin/%)

# Web assets (browser client, demo page) are compiled into notifyd-ws.
WEB_ASSETS := $(wildcard clients/js/*.js clients/js/*.d.ts clients/js/*.html clients/js/*.css)
ASSETS_C   := build/web_assets.c

UNIT_SRCS  := $(wildcard tests/unit/test_*.c)
UNIT_BINS  := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

MANPAGES := $(wildcard man/*.[1-8])

.PHONY: FORCE all deps run test check unit e2e bench install uninstall clean lint-man \
	fuzz fuzz-replay

all: $(BINS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIBNT): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	$(AR) rcs $@ $^

$(ASSETS_C): $(WEB_ASSETS) tools/embed-assets.sh
	@mkdir -p $(dir $@)
	sh tools/embed-assets.sh $(WEB_ASSETS) > $@.tmp && mv $@.tmp $@

$(BUILD)/build/web_assets.o: ALL_CFLAGS += -Inotifyd-ws
$(BUILD)/build/web_assets.o: $(ASSETS_C)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# One rule per program: every .c in its folder, plus the shared library.
define PROG_template
$(1)_OBJS := $$(patsubst %.c,$$(BUILD)/%.o,$$(wildcard $(1)/*.c))
$(BUILD)/bin/$(1): $$($(1)_OBJS) $$(if $$(filter notifyd-ws,$(1)),$$(BUILD)/build/web_assets.o) $$(LIBNT)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(ALL_LDFLAGS) -o $$@ $$^ $$(NT_LIBS)
# Copied whenever bin/ holds another build (make check leaves sanitized
# programs there, newer than the plain ones); --remove-destination so a
# running daemon's file is replaced, not written into.
bin/$(1): $(BUILD)/bin/$(1) FORCE
	@mkdir -p bin
	@cmp -s $$< $$@ || cp --remove-destination $$< $$@
endef
$(foreach p,$(BUILT_PROGS),$(eval $(call PROG_template,$(p))))

$(BUILD)/tests/%: tests/unit/%.c $(LIBNT)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(LIBNT) $(NT_LIBS) -lcmocka

# test_api_keys also links notifyd-api's pure key and rate parsers.
$(BUILD)/tests/test_api_keys: tests/unit/test_api_keys.c $(BUILD)/notifyd-api/keys.o $(LIBNT)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Inotifyd-api $(ALL_LDFLAGS) -o $@ $(filter-out %.a,$^) $(LIBNT) $(NT_LIBS) -lcmocka

# Unit tests of notifyd-ws's pure modules also link the objects they test.
$(BUILD)/tests/test_ws_http: $(BUILD)/notifyd-ws/http.o
$(BUILD)/tests/test_ws_buf: $(BUILD)/notifyd-ws/buf.o
$(BUILD)/tests/test_ws_%: tests/unit/test_ws_%.c $(LIBNT)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Inotifyd-ws $(ALL_LDFLAGS) -o $@ \
		$(filter-out %.a,$^) $(LIBNT) $(NT_LIBS) -lcmocka

# deps: everything test, check and bench use; deps-run: only what
# building and `make run` need (no chromium, valgrind, wrk or Node.js).
deps:
	sh tools/deps.sh test

.PHONY: deps-run
deps-run:
	sh tools/deps.sh run

# Every libFuzzer target in tests/fuzz/ is also a plain regression test:
# built with $(CC) and tests/fuzz/replay.c (no clang needed) and run over
# its committed corpus, crash reproducers included. tools/fuzz.sh fuzzes.
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)

# fuzz_handshake links the request parser and the handshake checks beside it.
$(BUILD)/fuzz/fuzz_handshake: $(BUILD)/notifyd-ws/http.o
$(BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/replay.c $(LIBNT)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Inotifyd-ws $(ALL_LDFLAGS) -o $@ \
		$(filter-out %.a,$^) $(LIBNT) $(NT_LIBS)

fuzz-replay: $(FUZZ_BINS)
	@fail=0; pass=0; for t in $(FUZZ_BINS); do \
		if $$t tests/fuzz/corpus/$${t##*/}; then pass=$$((pass+1)); \
		else fail=$$((fail+1)); echo "FAILED: $$t"; fi; \
	done; echo "fuzz-replay: $$pass passed, $$fail failed"; test $$fail -eq 0

fuzz: all
	sh tools/fuzz.sh

unit: $(UNIT_BINS)
	@fail=0; pass=0; for t in $(UNIT_BINS); do \
		if $$t; then pass=$$((pass+1)); else fail=$$((fail+1)); echo "FAILED: $$t"; fi; \
	done; echo "unit: $$pass passed, $$fail failed"; test $$fail -eq 0

e2e: all
	NOTIFYD_BIN=$(CURDIR)/bin $(PYTHON) -m pytest -q tests/e2e $(PYTEST_ARGS)

# The one command CI and newcomers run.
test: deps
	$(MAKE) all
	$(MAKE) lint-man
	$(MAKE) unit fuzz-replay
	$(MAKE) e2e

# Sanitizer builds go to build/san and bin/ is rebuilt from them.
check: deps
	$(MAKE) clean-bin
	$(MAKE) SANITIZER=address,undefined all unit fuzz-replay
	$(MAKE) SANITIZER=address,undefined e2e
	$(MAKE) clean-bin

# The end-to-end suites that suit memcheck's pace, with every program
# under valgrind (tools/valgrind-wrap.sh); any report fails the test.
VALGRIND_TESTS ?= tests/e2e/test_send.py tests/e2e/test_tail.py \
	tests/e2e/test_api.py tests/e2e/test_ws_delivery.py tests/e2e/test_ws_protocol.py \
	tests/e2e/test_ws_review.py tests/e2e/test_ws_private.py tests/e2e/test_strict_send.py
valgrind: all
	sh tools/valgrind-wrap.sh
	NOTIFYD_BIN=$(CURDIR)/build/valgrind/bin $(PYTHON) -m pytest -q $(VALGRIND_TESTS) $(PYTEST_ARGS)

# The delivery fault tests, test_randomized_faults for SOAK_SECONDS
# instead of 20 s (its seed is printed; NOTIFYD_FAULT_SEED=S replays it),
# and the connection churn through nginx and supervisord as long.
SOAK_SECONDS ?= 600
.PHONY: soak
soak: all
	NOTIFYD_BIN=$(CURDIR)/bin NOTIFYD_SOAK_SECONDS=$(SOAK_SECONDS) $(PYTHON) -m pytest -q -s \
		tests/e2e/test_delivery_faults.py tests/e2e/test_deploy.py::test_soak_churn \
		$(PYTEST_ARGS)

.PHONY: clean-bin valgrind
clean-bin:
	rm -f $(BINS)

lint-man:
	@for m in $(MANPAGES); do mandoc -Tlint -W warning $$m || exit 1; done; echo "man pages lint clean"

# make run WS_PORT=9080 API_PORT=9081: command-line variables reach
# bin/notifyd-run through the environment.
run: deps-run all
	sh bin/notifyd-run

# The committed tree, in a clean Debian 12 root with only build-essential,
# git, curl and ca-certificates: what a newcomer's first `make test` sees.
.PHONY: fresh-check
fresh-check:
	sh tools/fresh-check.sh

# The Debian package (debhelper, from a copy of the tree; lintian-clean
# or it fails): tools/mkdeb.sh, debian/.
.PHONY: deb
deb: deps
	sh tools/mkdeb.sh

# The production arrangement on loopback: contrib/supervisord.conf and
# contrib/nginx.conf with a private Redis (tools/cluster.sh); make cluster
# NGINX_PORT=9000 WS_PORT=9080 API_PORT=9081. Ctrl-C stops everything.
.PHONY: cluster
cluster: deps all
	sh tools/cluster.sh

bench: deps all
	sh tools/bench.sh

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(MANDIR)/man8
	install -m 755 $(BINS) $(DESTDIR)$(BINDIR)
	for m in $(MANPAGES); do s=$${m##*.}; install -m 644 $$m $(DESTDIR)$(MANDIR)/man$$s; done

uninstall:
	for b in $(BUILT_PROGS); do rm -f $(DESTDIR)$(BINDIR)/$$b; done
	for m in $(MANPAGES); do s=$${m##*.}; rm -f $(DESTDIR)$(MANDIR)/man$$s/$${m#man/}; done

clean:
	rm -rf build $(BINS)

-include $(shell find build -name '*.d' 2>/dev/null)
