# Fuzzing the frame decoders (libFuzzer, clang).
#
#   make fuzz                    every fuzz/fuzz_*.c target, FUZZ_SECONDS each
#   make fuzz-short              the same for FUZZ_SHORT_SECONDS each (run by make test)
#   make fuzz FUZZ_SECONDS=600   longer
#
# Each target is built from its source and src/framing.c alone, with
# AddressSanitizer and UBSan. Its corpus grows in $(BUILD)/fuzz/corpus/<codec>
# from seeds made out of the wire vectors in $(FUZZ_VECTORS); a crash leaves
# its input in $(BUILD)/fuzz/crash-<codec>-*.

FUZZ_CC            ?= clang
FUZZ_SECONDS       ?= 60
FUZZ_SHORT_SECONDS ?= 5
FUZZ_MAX_LEN       ?= 8192
FUZZ_VECTORS       := $(TEST_VECTORS)

FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_CODECS  := $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_BINS    := $(FUZZ_CODECS:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_SEEDS   := $(FUZZ_DIR)/seeds/.done
FUZZ_CFLAGS  := -g -O1 -std=c11 -D_GNU_SOURCE $(WARN) -Iinclude \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined

.PHONY: fuzz fuzz-short fuzz-run
TEST_EXTRA += fuzz-short

$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz.h src/framing.c include/buffstreams.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< src/framing.c

$(FUZZ_DIR)/seeds/make-seeds: fuzz/seeds.c fuzz/fuzz.h src/framing.c include/buffstreams.h
	@mkdir -p $(@D)
	$(FUZZ_CC) -O1 -std=c11 -D_GNU_SOURCE $(WARN) -Iinclude -o $@ fuzz/seeds.c src/framing.c

$(FUZZ_SEEDS): $(FUZZ_DIR)/seeds/make-seeds $(wildcard $(FUZZ_VECTORS)/*/*)
	@test -f $(FUZZ_VECTORS)/README.md || \
	  { echo "fuzz: wire vectors not found: no $(FUZZ_VECTORS)/README.md in $(CURDIR)" >&2; exit 1; }
	@rm -rf $(FUZZ_CODECS:%=$(FUZZ_DIR)/seeds/%)
	@mkdir -p $(FUZZ_CODECS:%=$(FUZZ_DIR)/seeds/%)
	@$< $(FUZZ_VECTORS) $(FUZZ_DIR)/seeds
	@touch $@

# Runs every target for FUZZ_TIME seconds, one after another, and reports
# how many inputs each executed. Fails on the first finding.
fuzz-run: $(FUZZ_BINS) $(FUZZ_SEEDS)
	@for c in $(FUZZ_CODECS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$c; \
	  log=$(FUZZ_DIR)/fuzz_$$c.log; \
	  if ! $(FUZZ_DIR)/fuzz_$$c -max_total_time=$(FUZZ_TIME) -max_len=$(FUZZ_MAX_LEN) \
	      -timeout=10 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/crash-$$c- \
	      $(FUZZ_DIR)/corpus/$$c $(FUZZ_DIR)/seeds/$$c >$$log 2>&1; then \
	    tail -n 40 $$log; echo "fuzz_$$c: FAILED (log: $$log)"; exit 1; \
	  fi; \
	  runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $$log); \
	  rate=$$(sed -n 's/^stat::average_exec_per_sec: *//p' $$log); \
	  units=$$(ls $(FUZZ_DIR)/corpus/$$c | wc -l); \
	  echo "fuzz_$$c: $$runs executions in $(FUZZ_TIME) s ($$rate/s), corpus $$units"; \
	done

# clang brings libFuzzer and its sanitizer runtimes (Debian: clang).
.PHONY: fuzz-deps
fuzz-deps:
	@if [ "$(FUZZ_CC)" = clang ]; then $(call deps-check,clang); fi

fuzz: fuzz-deps
	@$(MAKE) --no-print-directory fuzz-run FUZZ_TIME=$(FUZZ_SECONDS)

# Part of make test; skipped (loudly) where clang's libFuzzer is missing
# and cannot be installed.
fuzz-short: fuzz-deps
	@if ! printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ return (int)(d == 0 && n); }\n' | \
	    $(FUZZ_CC) -x c -fsanitize=fuzzer -o /dev/null - >/dev/null 2>&1; then \
	  echo "fuzz-short: SKIPPED, $(FUZZ_CC) cannot build libFuzzer targets"; \
	else \
	  $(MAKE) --no-print-directory fuzz-run FUZZ_TIME=$(FUZZ_SHORT_SECONDS); \
	fi
