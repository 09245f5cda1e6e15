# NATS bridge between server nodes: examples/nats_bridge.{c,h} (nats.c,
# Debian libnats-dev) with its wire format examples/nats_envelope.{c,h}
# and examples/topic_table.{c,h}, and its test against a real nats-server (Debian
# nats-server), started and stopped by the test itself.
#
#   make nats-bridge     the bridge's objects, for the programs that link it
#   make test            runs $(BUILD)/tests/test_nats_bridge with the others
#
# As root, missing packages are installed. Otherwise the bridge is built when
# libnats-dev is there (pkg-config libnats, or the header nats/nats.h), its
# test runs when nats-server is there too, and what is missing is named with
# the exact apt-get line.
#
# A program that links the bridge:
#   $(CC) $(CFLAGS) -Iexamples $(NATS_CFLAGS) ... $(NATS_BRIDGE_OBJS) $(LIB_A) $(NATS_LIBS) $(LDLIBS)
# with $(NATS_BRIDGE_OBJS) as prerequisites; $(NATS_BUILD) is "yes" when they can be built.

NATS_PKGS       := libnats-dev nats-server
NATS_BRIDGE_OBJS := $(patsubst %,$(BUILD)/obj-examples/%.o,nats_bridge nats_envelope topic_table)
NATS_TEST       := $(BUILD)/tests/test_nats_bridge
# pubsub_server nodes bridged by a real nats-server (the generic test rule
# builds it; it runs the server built with the bridge).
NATS_CLUSTER_TEST := $(BUILD)/tests/test_pubsub_cluster

# Recursive: evaluated when used, so that they see a library installed by
# this very run.
NATS_CFLAGS = $(shell pkg-config --cflags libnats 2>/dev/null)
NATS_LIBS   = $(or $(shell pkg-config --libs libnats 2>/dev/null),-lnats)

NATS_HAVE_LIB    := $(shell { pkg-config --exists libnats 2>/dev/null || \
                      test -f /usr/include/nats/nats.h; } && echo yes)
NATS_HAVE_SERVER := $(shell { command -v nats-server || test -x /usr/sbin/nats-server; } \
                      >/dev/null 2>&1 && echo yes)

ifeq ($(shell id -u),0)
NATS_DEPS        := $(BUILD)/.nats-deps
NATS_BUILD       := yes
NATS_RUN_TEST    := yes
else
NATS_DEPS        :=
NATS_BUILD       := $(NATS_HAVE_LIB)
NATS_RUN_TEST    := $(and $(NATS_HAVE_LIB),$(NATS_HAVE_SERVER))
endif

.PHONY: nats-bridge nats-skipped

$(BUILD)/.nats-deps:
	@mkdir -p $(@D)
	@$(call deps-check,$(NATS_PKGS))
	@touch $@

ifeq ($(NATS_BUILD),yes)
all: nats-bridge
nats-bridge: $(NATS_BRIDGE_OBJS)

$(NATS_BRIDGE_OBJS): $(BUILD)/obj-examples/%.o: examples/%.c examples/nats_bridge.h \
                     examples/nats_envelope.h examples/topic_table.h include/buffstreams.h \
                     | $(DEPS_STAMP) $(NATS_DEPS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Iexamples $(NATS_CFLAGS) -c $< -o $@
endif

# make demo on a fresh machine brings the packages the bridge needs.
demo: | $(NATS_DEPS)

ifeq ($(NATS_RUN_TEST),yes)
$(NATS_TEST): tests/test_nats_bridge.c $(NATS_BRIDGE_OBJS) $(TEST_HELPERS) \
              $(wildcard tests/*.h) $(LIB_A) | $(NATS_DEPS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Itests -Iexamples $(NATS_CFLAGS) $(LDFLAGS) -o $@ $< \
	  $(NATS_BRIDGE_OBJS) $(TEST_HELPERS) $(LIB_A) $(NATS_LIBS) -lcmocka $(LDLIBS)
else
TESTS := $(filter-out $(NATS_TEST) $(NATS_CLUSTER_TEST),$(TESTS))
TEST_EXTRA += nats-skipped
endif

nats-skipped:
	@echo "test_nats_bridge, test_pubsub_cluster: SKIPPED, needs$(if $(NATS_HAVE_LIB),, libnats-dev)$(if \
	  $(NATS_HAVE_SERVER),, nats-server); run:  sudo apt-get install -y $(NATS_PKGS)"
