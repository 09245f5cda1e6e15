# The shared library's exported symbols against the header (part of make
# test): see tests/check_exports.sh.
.PHONY: check-exports
TEST_EXTRA += check-exports

check-exports: $(LIB_SO) include/buffstreams.h
	CC='$(CC)' sh tests/check_exports.sh $(LIB_SO) include/buffstreams.h
