# End-to-end test of tools/bscat (part of make test).
.PHONY: bscat-e2e
TEST_EXTRA += bscat-e2e

bscat-e2e: $(BUILD)/tools/bscat $(BUILD)/examples/echo_server
	timeout 180 sh tests/bscat_e2e.sh $(BUILD)/tools/bscat $(BUILD)/examples/echo_server
