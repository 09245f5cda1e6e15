# The examples that check themselves run in make test.
.PHONY: multi-worker-run
TEST_EXTRA += multi-worker-run

# Four threads over 100 connections, state in the user value, no lock.
multi-worker-run: $(BUILD)/examples/multi_worker
	timeout 120 $(BUILD)/examples/multi_worker --threads 4 --conns 100 --msgs 1000 --work-us 2
