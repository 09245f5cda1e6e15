# Long runs of the behaviour suites, bounded in time:
#
#   make stress                      STRESS_SCALE x the load, until STRESS_SECONDS pass
#   make stress SANITIZE=thread      the same under a sanitizer
#
# Each round runs every suite but the codec tests (fuzzing covers those
# longer) with BS_TEST_SCALE=$(STRESS_SCALE); the first failure stops it.

STRESS_SECONDS ?= 600
STRESS_SCALE   ?= 10
STRESS_TESTS   := $(filter-out %/test_framing,$(TESTS))

.PHONY: stress
stress: $(STRESS_TESTS)
	@ulimit -n 20000 2>/dev/null || true; \
	end=$$(( $$(date +%s) + $(STRESS_SECONDS) )); round=0; \
	while [ $$(date +%s) -lt $$end ]; do \
	  round=$$((round+1)); echo "== stress round $$round (scale $(STRESS_SCALE))"; \
	  for t in $(STRESS_TESTS); do \
	    BS_TEST_SCALE=$(STRESS_SCALE) timeout 900 $$t > $$t.stress.log 2>&1 || \
	      { tail -n 40 $$t.stress.log; echo "stress: $$t failed in round $$round"; exit 1; }; \
	    tail -n 1 $$t.stress.log; \
	  done; \
	done; \
	echo "stress: $$round rounds passed"
