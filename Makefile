# buffstreams — plain Makefile.
#
#   make            library (static + shared), examples, tools
#   make test       the whole cmocka suite (plus short fuzz and end-to-end runs)
#   make demo       echo server + load client on loopback
#   make SANITIZE=address,undefined test   /   make SANITIZE=thread test
#   make install PREFIX=/usr/local
#   make EXTRA_CFLAGS=-Werror        warnings as errors (CI)
#
# Missing Debian packages are installed when run as root; otherwise the exact
# apt-get line is printed.

SHELL     := /bin/bash
PREFIX    ?= /usr/local
CC        ?= cc
SANITIZE  ?=
OPT       ?= -O2

comma := ,
BUILD     := build$(if $(SANITIZE),-$(subst $(comma),-,$(SANITIZE)))

WARN      := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
             -Wpointer-arith -Wformat=2 -Wno-unused-parameter
CFLAGS    ?= $(OPT) -g
CFLAGS    += -std=c11 -D_GNU_SOURCE -pthread -fPIC $(WARN) -Iinclude -Isrc $(EXTRA_CFLAGS)
LDLIBS    += -lck -pthread

ifneq ($(SANITIZE),)
CFLAGS    += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
LDFLAGS   += -fsanitize=$(SANITIZE)
ifneq ($(findstring thread,$(SANITIZE)),)
# ck's atomics are inline assembly that TSan cannot see; the compiler-builtin
# variant is at least visible for its read-modify-write operations.
CFLAGS    += -DCK_USE_CC_BUILTINS
export TSAN_OPTIONS ?= suppressions=$(CURDIR)/tests/tsan.supp halt_on_error=1 second_deadlock_stack=1
endif
ifneq ($(findstring address,$(SANITIZE)),)
export ASAN_OPTIONS ?= detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1
endif
endif

VERSION   := 0.1.0
SONAME    := libbuffstreams.so.0

LIB_SRC   := $(wildcard src/*.c)
LIB_OBJ   := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
LIB_A     := $(BUILD)/libbuffstreams.a
LIB_SO    := $(BUILD)/libbuffstreams.so
LIB_MAP   := $(BUILD)/libbuffstreams.map

# An examples/X.c beside an examples/X.h is a module that example programs
# link (their fragment in mk/ says how), not a program of its own.
EXAMPLE_MODULES := $(patsubst %.h,%.c,$(wildcard examples/*.h))
EXAMPLE_SRC := $(filter-out $(EXAMPLE_MODULES),$(wildcard examples/*.c))
EXAMPLES  := $(EXAMPLE_SRC:examples/%.c=$(BUILD)/examples/%)
TOOL_SRC  := $(wildcard tools/*.c)
TOOLS     := $(TOOL_SRC:tools/%.c=$(BUILD)/tools/%)
TEST_SRC  := $(wildcard tests/test_*.c)
TESTS     := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_HELPERS := $(filter-out tests/test_%.c,$(wildcard tests/*.c))
# The wire vectors the codec, fuzz and end-to-end tests read, relative to the
# repository root (where make runs them).
TEST_VECTORS := tests/vectors
# Extra link flags of one test program: TEST_LDFLAGS_<name>.
TEST_LDFLAGS_test_api_codes := -Wl,--wrap=calloc -Wl,--wrap=epoll_ctl

# Debian packages every build needs, and the header that proves each is there.
DEPS_PKGS := libck-dev libcmocka-dev
DEPS_STAMP := $(BUILD)/.deps

.PHONY: all lib examples tools tests test demo install uninstall clean deps
all: lib examples tools

# ---- dependencies ----------------------------------------------------------
# deps-check PACKAGES HEADERS: install missing Debian packages when root,
# otherwise print the exact command and stop.
define deps-check
missing=""; for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | \
  grep -q "ok installed" || missing="$$missing $$p"; done; \
if [ -n "$$missing" ]; then \
  if [ "$$(id -u)" = 0 ]; then \
    echo "installing:$$missing"; \
    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
  else \
    echo "missing packages; run:  sudo apt-get install -y$$missing" >&2; exit 1; \
  fi; \
fi
endef

$(DEPS_STAMP):
	@mkdir -p $(@D)
	@$(call deps-check,$(DEPS_PKGS))
	@touch $@
deps: $(DEPS_STAMP)

# ---- library -----------------------------------------------------------------
lib: $(LIB_A) $(LIB_SO)

$(BUILD)/obj/%.o: src/%.c $(wildcard src/*.h) include/buffstreams.h | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB_A): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The shared library exports the functions of include/buffstreams.h and
# nothing else: a version script made from the header hides every other
# symbol, internal bs_ names included (make test checks the result).
$(LIB_MAP): include/buffstreams.h mk/api-functions.sh | $(DEPS_STAMP)
	@mkdir -p $(@D)
	CC='$(CC)' sh mk/api-functions.sh --version-script include/buffstreams.h > $@.tmp
	@mv $@.tmp $@

$(LIB_SO): $(LIB_OBJ) $(LIB_MAP)
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=$(LIB_MAP) $(LDFLAGS) \
	  -o $@ $(LIB_OBJ) $(LDLIBS)

# Programs link the static library so they run from the tree without paths.
$(BUILD)/examples/%: examples/%.c $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_A) $(LDLIBS) -lm

$(BUILD)/tools/%: tools/%.c $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_A) $(LDLIBS)

examples: $(EXAMPLES)
tools: $(TOOLS)

# ---- tests -------------------------------------------------------------------
$(BUILD)/tests/%: tests/%.c $(TEST_HELPERS) $(wildcard tests/*.h) $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Itests -DBS_TEST_VECTORS='"$(TEST_VECTORS)"' $(LDFLAGS) \
	  $(TEST_LDFLAGS_$*) -o $@ $< $(TEST_HELPERS) $(LIB_A) -lcmocka $(LDLIBS)

# Each fragment in mk/ may add phony targets to TEST_EXTRA (run by make test)
# and take out of TESTS a program whose dependencies are missing.
TEST_EXTRA :=
include $(wildcard mk/*.mk)

tests: $(TESTS)

# Runs every test program (each with a time limit), then the fragments'
# extra runs; ends with one summary line of cmocka's results.
test: $(TESTS) $(TOOLS) $(EXAMPLES)
	@ulimit -n 20000 2>/dev/null || true; failed=0; \
	for t in $(TESTS); do \
	  echo "== $$t"; \
	  if ! timeout 300 $$t 2>&1 | tee $$t.log; then :; fi; \
	  if [ $${PIPESTATUS[0]} -ne 0 ]; then echo "FAILED: $$t"; failed=$$((failed+1)); fi; \
	done; \
	awk '/\[  PASSED  \] [0-9]+ test/ { p += $$4 } /\[  FAILED  \] [0-9]+ test/ { f += $$4 } \
	  END { printf "cmocka: %d passed, %d failed\n", p, f }' $(TESTS:=.log); \
	if [ $$failed -ne 0 ]; then echo "$$failed test program(s) failed"; exit 1; fi
	@$(if $(TEST_EXTRA),$(MAKE) --no-print-directory $(TEST_EXTRA))
	@awk '/\[  PASSED  \] [0-9]+ test/ { p += $$4 } /\[  FAILED  \] [0-9]+ test/ { f += $$4 } \
	  END { printf "tests: %d passed, %d failed\n", p, f }' $(TESTS:=.log)

# ---- demo --------------------------------------------------------------------
DEMO_ADDR ?= 127.0.0.1:5031
demo: $(EXAMPLES)
	@$(BUILD)/examples/echo_server $(DEMO_ADDR) --threads 2 & srv=$$!; \
	sleep 0.5; \
	$(BUILD)/examples/echo_client $(DEMO_ADDR) --conns 50 --count 6000000 --size 110 --window 64 --seconds 50; rc=$$?; \
	kill -INT $$srv; wait $$srv; exit $$rc

# ---- install -----------------------------------------------------------------
install: lib tools
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin
	install -m 644 include/buffstreams.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(LIB_A) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(LIB_SO) $(DESTDIR)$(PREFIX)/lib/libbuffstreams.so.$(VERSION)
	ln -sf libbuffstreams.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libbuffstreams.so
	$(if $(TOOLS),install -m 755 $(TOOLS) $(DESTDIR)$(PREFIX)/bin/)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' buffstreams.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/buffstreams.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/include/buffstreams.h $(DESTDIR)$(PREFIX)/lib/libbuffstreams.* \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig/buffstreams.pc $(TOOLS:$(BUILD)/tools/%=$(DESTDIR)$(PREFIX)/bin/%)

clean:
	rm -rf build build-*
