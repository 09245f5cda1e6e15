# End-to-end test of tools/bscat (part of make test). It replays the wire
# vectors in $(TEST_VECTORS) with python3.
.PHONY: bscat-e2e
TEST_EXTRA += bscat-e2e

$(BUILD)/.py3-deps:
	@mkdir -p $(@D)
	@$(call deps-check,python3)
	@touch $@

bscat-e2e: $(BUILD)/tools/bscat $(BUILD)/examples/echo_server $(BUILD)/.py3-deps
	timeout 180 sh tests/bscat_e2e.sh $(BUILD)/tools/bscat $(BUILD)/examples/echo_server \
	  $(TEST_VECTORS)
