#!/bin/sh
# The public API's functions: every bs_* function declared in the header.
#
#   sh mk/api-functions.sh HEADER                    one name a line, sorted
#   sh mk/api-functions.sh --version-script HEADER   a linker version script
#                                                    exporting those alone
#
# The header is run through the C preprocessor ($CC, default cc) so that
# comments, macros and conditionals are read as the compiler reads them; a
# bs_ name followed by "(" is then a declared function. The build links the
# shared library with the version script; tests/check_exports.sh compares
# what it exports with the list.
set -eu

map=no
if [ "${1:-}" = --version-script ]; then
	map=yes
	shift
fi
header=${1:?usage: api-functions.sh [--version-script] HEADER}

names=$(${CC:-cc} -std=c11 -D_GNU_SOURCE -E -P "$header" |
	grep -oE '(^|[^A-Za-z0-9_])bs_[A-Za-z0-9_]+[[:space:]]*\(' |
	sed -E 's/^[^b]*(bs_[A-Za-z0-9_]+).*/\1/' | LC_ALL=C sort -u)
if [ -z "$names" ]; then
	echo "api-functions.sh: no bs_ function declared in $header" >&2
	exit 1
fi

if [ $map = no ]; then
	printf '%s\n' "$names"
	exit 0
fi
echo "/* Generated from $header by mk/api-functions.sh: only the public API is exported. */"
echo "{"
echo "  global:"
printf '%s\n' "$names" | sed 's/.*/    &;/'
echo "  local:"
echo "    *;"
echo "};"
