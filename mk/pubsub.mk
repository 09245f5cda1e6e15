# Pub/sub: examples/pubsub_server, examples/pubsub_client and the benchmark
# against nats-server and redis-server.
#
#   make bench-pubsub     the same three loads against all three servers,
#                         then two of them across two nodes bridged by
#                         nats-server (PUBSUB_ROUNDS=3 PUBSUB_SECONDS=3;
#                         results in bench/results/pubsub.txt, the chart in
#                         bench/results/pubsub.png when gnuplot is there)
#
# pubsub_client's load mode and bench/pubsub_load share one load engine
# (bench/pubsub_load.c) and the protocol codecs beside it.

PS_LOAD_SRC  := bench/pubsub_load.c bench/pubsub_bs.c
PS_LOAD_HDRS := bench/pubsub_load.h
PS_PEER_SRC  := bench/pubsub_nats.c bench/pubsub_redis.c

# The server links its topic table and its cluster side; with libnats-dev
# (mk/nats.mk) the cluster side is the NATS bridge, otherwise --nats is
# refused.
PS_SERVER_SRC  := examples/pubsub_server.c examples/pubsub_topics.c examples/pubsub_cluster.c
PS_SERVER_HDRS := examples/pubsub_topics.h examples/pubsub_cluster.h examples/topic_table.h

ifeq ($(NATS_BUILD),yes)
$(BUILD)/examples/pubsub_server: $(PS_SERVER_SRC) $(PS_SERVER_HDRS) examples/nats_bridge.h \
                                 $(NATS_BRIDGE_OBJS) $(LIB_A) | $(NATS_DEPS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Iexamples $(NATS_CFLAGS) -DPUBSUB_NATS $(LDFLAGS) -o $@ $(PS_SERVER_SRC) \
	  $(NATS_BRIDGE_OBJS) $(LIB_A) $(NATS_LIBS) $(LDLIBS)
else
$(BUILD)/examples/pubsub_server: $(PS_SERVER_SRC) $(PS_SERVER_HDRS) examples/topic_table.c $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Iexamples $(LDFLAGS) -o $@ $(PS_SERVER_SRC) examples/topic_table.c \
	  $(LIB_A) $(LDLIBS)
endif

# An explicit rule: the client links the load engine as well.
$(BUILD)/examples/pubsub_client: examples/pubsub_client.c $(PS_LOAD_SRC) $(PS_LOAD_HDRS) $(LIB_A)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Ibench $(LDFLAGS) -o $@ $< $(PS_LOAD_SRC) $(LIB_A) $(LDLIBS) -lm

$(BUILD)/bench/pubsub_load: bench/pubsub_load_main.c $(PS_LOAD_SRC) $(PS_PEER_SRC) $(PS_LOAD_HDRS) | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Ibench $(LDFLAGS) -o $@ $< $(PS_LOAD_SRC) $(PS_PEER_SRC) -lm

# End-to-end run of the server and the load client (part of make test).
.PHONY: pubsub-e2e
TEST_EXTRA += pubsub-e2e

pubsub-e2e: $(BUILD)/examples/pubsub_server $(BUILD)/examples/pubsub_client
	timeout 300 sh tests/pubsub_e2e.sh $(BUILD)/examples/pubsub_server $(BUILD)/examples/pubsub_client \
	  $(if $(filter yes,$(NATS_RUN_TEST)),$(shell command -v nats-server || echo /usr/sbin/nats-server))

# The benchmark: nats-server and redis-server come from Debian (installed
# when run as root, else the apt-get line is printed).
.PHONY: bench-pubsub
PUBSUB_RESULTS ?= bench/results/pubsub.txt

bench-pubsub: $(BUILD)/examples/pubsub_server $(BUILD)/bench/pubsub_load
	@$(call deps-check,nats-server redis-server)
	@bash bench/pubsub.sh $(BUILD) $(PUBSUB_RESULTS)
