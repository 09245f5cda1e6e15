# Protobuf example: examples/protobuf/ (protobuf-c, delimited stream format).
#
#   make protobuf        generate the code and build both programs
#   make protobuf-run    run the client against the server over a unix socket
#                        (part of make test)

PB_DIR     := $(BUILD)/protobuf
PB_PROTO   := examples/protobuf/telemetry.proto
PB_GEN_C   := $(PB_DIR)/telemetry.pb-c.c
PB_GEN_H   := $(PB_DIR)/telemetry.pb-c.h
PB_PROGS   := $(PB_DIR)/telemetry_server $(PB_DIR)/telemetry_client
PB_STAMP   := $(PB_DIR)/.deps

.PHONY: protobuf protobuf-run
TEST_EXTRA += protobuf-run

$(PB_STAMP):
	@mkdir -p $(@D)
	@$(call deps-check,protobuf-c-compiler libprotobuf-c-dev)
	@touch $@

$(PB_GEN_C) $(PB_GEN_H) &: $(PB_PROTO) | $(PB_STAMP)
	protoc-c --proto_path=$(dir $(PB_PROTO)) --c_out=$(PB_DIR) $(PB_PROTO)

$(PB_PROGS): $(PB_DIR)/%: examples/protobuf/%.c $(PB_GEN_C) $(PB_GEN_H) $(LIB_A)
	$(CC) $(CFLAGS) -I$(PB_DIR) $(LDFLAGS) -o $@ $< $(PB_GEN_C) $(LIB_A) \
	  -lprotobuf-c $(LDLIBS)

protobuf: $(PB_PROGS)

# Bounded at both ends: the server exits after its two connections closed,
# the client after its own deadline, and timeout(1) guards both.
protobuf-run: $(PB_PROGS)
	@dir=$$(mktemp -d); sock=unix:$$dir/telemetry.sock; \
	timeout 60 $(PB_DIR)/telemetry_server $$sock --conns 2 > $$dir/server.log 2>&1 & srv=$$!; \
	for i in $$(seq 100); do [ -S $$dir/telemetry.sock ] && break; sleep 0.1; done; \
	timeout 60 $(PB_DIR)/telemetry_client $$sock --conns 2 --count 20000 --seconds 30; rc=$$?; \
	wait $$srv; src=$$?; cat $$dir/server.log; rm -rf $$dir; \
	if [ $$rc -ne 0 ] || [ $$src -ne 0 ]; then \
	  echo "FAILED: protobuf example (client $$rc, server $$src)"; exit 1; fi

# Live interop with the protobuf library itself (Debian's python3-protobuf,
# run by Debian's python3): delimited streams in both directions.
.PHONY: protobuf-interop
TEST_EXTRA += protobuf-interop

$(PB_DIR)/.py-deps:
	@mkdir -p $(@D)
	@$(call deps-check,python3-protobuf)
	@touch $@

protobuf-interop: $(BUILD)/tools/bscat $(PB_DIR)/.py-deps
	timeout 120 /usr/bin/python3 tests/protobuf_interop.py $(BUILD)/tools/bscat
