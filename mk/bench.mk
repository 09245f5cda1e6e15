# ---- benchmarks ----------------------------------------------------------------
#   make bench         every scenario beside its plain-socket baseline, full size
#   make bench-quick   the same, smaller (about a minute)
#   make bench-base    the baselines alone (needs no library)
#   make bench-peers   ingest and echo against ZeroMQ as well (libzmq3-dev)
#   make bench-profile where the library spends its time (see bench/profile.sh)
#
# Each bench/bench_*.c is one program; bench/util.c is the shared harness.
# Results: the table on stdout, BENCH lines, and $(BUILD)/bench/results-*.txt;
# the scaling chart $(BUILD)/bench/scaling.png when gnuplot is installed.

BENCH_DIR     := $(BUILD)/bench
BENCH_HELPERS := bench/util.c
BENCH_HDRS    := bench/bench.h
BENCH_NAMES   := $(patsubst bench/bench_%.c,%,$(wildcard bench/bench_*.c))
BENCH_PROGS   := $(BENCH_NAMES:%=$(BENCH_DIR)/bench_%)
BENCH_BASE    := $(BENCH_NAMES:%=$(BENCH_DIR)/base/bench_%)
BENCH_PEERS   := $(BENCH_DIR)/peers/bench_ingest $(BENCH_DIR)/peers/bench_echo
BENCH_CFLAGS  := -Ibench
BENCH_RUN     := bash bench/run.sh
BENCH_ARGS    ?=

.PHONY: bench bench-quick bench-base bench-peers bench-progs bench-plot-deps bench-profile

$(BENCH_DIR)/bench_%: bench/bench_%.c $(BENCH_HELPERS) $(BENCH_HDRS) $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(BENCH_CFLAGS) $(LDFLAGS) -o $@ $< $(BENCH_HELPERS) $(LIB_A) $(LDLIBS) -lm

# The baselines alone, without the library.
$(BENCH_DIR)/base/bench_%: bench/bench_%.c $(BENCH_HELPERS) $(BENCH_HDRS) | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(BENCH_CFLAGS) -DBENCH_WITH_LIB=0 $(LDFLAGS) -o $@ $< $(BENCH_HELPERS) -pthread -lm

$(BENCH_DIR)/peers/bench_%: bench/bench_%.c $(BENCH_HELPERS) $(BENCH_HDRS) $(LIB_A) $(BENCH_DIR)/.zmq
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(BENCH_CFLAGS) -DBENCH_WITH_ZMQ=1 $(LDFLAGS) -o $@ $< $(BENCH_HELPERS) $(LIB_A) -lzmq $(LDLIBS) -lm

$(BENCH_DIR)/.zmq:
	@mkdir -p $(@D)
	@$(call deps-check,libzmq3-dev)
	@touch $@

# gnuplot is optional: without it (and without root to install it) the
# numbers are still printed, only the chart is left out.
bench-plot-deps:
	-@($(call deps-check,gnuplot-nox)) || echo "gnuplot not installed: no chart"

bench-progs: $(BENCH_PROGS)

bench: $(BENCH_PROGS) bench-plot-deps
	@$(BENCH_RUN) full $(BENCH_DIR) $(BENCH_ARGS)

bench-quick: $(BENCH_PROGS) bench-plot-deps
	@$(BENCH_RUN) quick $(BENCH_DIR) $(BENCH_ARGS)

bench-base: $(BENCH_BASE) bench-plot-deps
	@$(BENCH_RUN) quick $(BENCH_DIR)/base $(BENCH_ARGS)

bench-peers: $(BENCH_PEERS)
	@$(BENCH_RUN) peers $(BENCH_DIR)/peers $(BENCH_ARGS)

# Where the library's time goes in one scenario (server process only):
#   make bench-profile BENCH_SCENARIO=conns BENCH_TOOL=perf|syscalls|callgrind
BENCH_SCENARIO ?= conns
BENCH_TOOL     ?= perf
bench-profile: $(BENCH_PROGS)
	@$(if $(filter callgrind,$(BENCH_TOOL)),$(call deps-check,valgrind),true)
	@bash bench/profile.sh $(BENCH_DIR) $(BENCH_SCENARIO) $(BENCH_TOOL)
