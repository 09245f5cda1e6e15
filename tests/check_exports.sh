#!/bin/sh
# The shared library exports exactly the functions include/buffstreams.h
# declares: no internal symbol (whatever its prefix), and no declared
# function missing.
#
#   sh tests/check_exports.sh path/to/libbuffstreams.so include/buffstreams.h
#
# The header's list comes from mk/api-functions.sh ($CC runs its
# preprocessor). Exit 1 with both differences listed when they disagree.
set -eu

lib=${1:?usage: check_exports.sh LIBRARY.so HEADER}
header=${2:?usage: check_exports.sh LIBRARY.so HEADER}
dir=$(mktemp -d "${TMPDIR:-/tmp}/check-exports.XXXXXX")
trap 'rm -rf "$dir"' EXIT

sh "$(dirname "$0")/../mk/api-functions.sh" "$header" >"$dir/declared"
nm -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' |
	LC_ALL=C sort -u >"$dir/exported"
if [ ! -s "$dir/exported" ]; then
	echo "check_exports: $lib exports nothing" >&2
	exit 1
fi

LC_ALL=C comm -13 "$dir/declared" "$dir/exported" >"$dir/extra"
LC_ALL=C comm -23 "$dir/declared" "$dir/exported" >"$dir/missing"
if [ -s "$dir/extra" ] || [ -s "$dir/missing" ]; then
	if [ -s "$dir/extra" ]; then
		echo "check_exports: exported by $lib but not declared in $header:"
		sed 's/^/  + /' "$dir/extra"
	fi
	if [ -s "$dir/missing" ]; then
		echo "check_exports: declared in $header but not exported by $lib:"
		sed 's/^/  - /' "$dir/missing"
	fi
	exit 1
fi
echo "check_exports: $lib exports the $(wc -l <"$dir/declared") functions of $header, nothing else"
