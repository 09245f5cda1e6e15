# Pub/sub: examples/pubsub_server, examples/pubsub_client and the benchmark
# against nats-server and redis-server.
#
#   make bench-pubsub     the same three loads against all three servers
#                         (PUBSUB_ROUNDS=3 PUBSUB_SECONDS=3; results in
#                         bench/results/pubsub.txt)
#
# pubsub_client's load mode and bench/pubsub_load share one load engine
# (bench/pubsub_load.c) and the protocol codecs beside it.

PS_LOAD_SRC  := bench/pubsub_load.c bench/pubsub_bs.c
PS_LOAD_HDRS := bench/pubsub_load.h
PS_PEER_SRC  := bench/pubsub_nats.c bench/pubsub_redis.c

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
	timeout 240 sh tests/pubsub_e2e.sh $(BUILD)/examples/pubsub_server $(BUILD)/examples/pubsub_client

# The benchmark: nats-server and redis-server come from Debian (installed
# when run as root, else the apt-get line is printed).
.PHONY: bench-pubsub
PUBSUB_RESULTS ?= bench/results/pubsub.txt

bench-pubsub: $(BUILD)/examples/pubsub_server $(BUILD)/bench/pubsub_load
	@$(call deps-check,nats-server redis-server)
	@bash bench/pubsub.sh $(BUILD) $(PUBSUB_RESULTS)
