#!/usr/bin/env bash
# Runs one benchmark program several times and summarises one ratio of its
# BENCH lines: on a shared machine one invocation (itself a median of
# interleaved runs) can still land in a noisy minute, so the figure to
# quote is the median over invocations, with its range.
#
#   bench/repeat.sh TIMES KEY IMPL PROGRAM [options]
#   e.g. bench/repeat.sh 5 ratio_p50_us lib build/bench/bench_echo --sizes 110
#
# Prints each invocation's value, then "median M range LO-HI" per point.
# Every BENCH line also goes to PROGRAM.repeat.log;
#   bench/repeat.sh --summary KEY IMPL LOG   summarises such a log again.
#
# BENCH_IDLE_PCT=P (default 0: off) waits before each invocation, up to
# BENCH_IDLE_WAIT seconds (default 120), until the CPUs were at least P%
# idle over the last 2 s; each run line says what the wait found.
set -u
# idle_pct: how idle the CPUs were over the next 2 s (from /proc/stat)
idle_pct() {
	local a b
	a=$(awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8, $5+$6}' /proc/stat)
	sleep 2
	b=$(awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8, $5+$6}' /proc/stat)
	echo "$a $b" | awk '{ t = $3 - $1; printf "%d", (t > 0 ? 100 * ($4 - $2) / t : 0) }'
}
wait_idle() {
	local want=${BENCH_IDLE_PCT:-0} until=$((SECONDS + ${BENCH_IDLE_WAIT:-120})) got
	[ "$want" -gt 0 ] || { echo "idle wait off"; return; }
	while :; do
		got=$(idle_pct)
		if [ "$got" -ge "$want" ] || [ $SECONDS -ge $until ]; then
			echo "cpus ${got}% idle"
			return
		fi
	done
}
# summarise KEY IMPL LOG: median and range of KEY per point
summarise() {
	awk -v k="$1" -v im="$2" '
	/^BENCH / { pt = ""; inpoint = 1; delete kv;
		for (i = 2; i <= NF; i++) { split($i, a, "="); kv[a[1]] = a[2];
			if (a[1] == "curve" || a[1] == "impl") inpoint = 0;
			if (i > 2 && inpoint) pt = pt (pt == "" ? "" : " ") $i; }
		if (kv["impl"] == im && kv[k] != "") { if (!(pt in n)) order[++np] = pt; v[pt, ++n[pt]] = kv[k] } }
	END {
		for (j = 1; j <= np; j++) {
			pt = order[j]; m = n[pt];
			for (x = 1; x <= m; x++) s[x] = v[pt, x] + 0;
			for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (s[y] < s[x]) { t = s[x]; s[x] = s[y]; s[y] = t }
			med = m % 2 ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2;
			printf "  %-44s median %.3f range %.3f-%.3f (n=%d)\n", pt, med, s[1], s[m], m
		}
	}' "$3"
}
if [ "${1:-}" = --summary ]; then
	summarise "${2:?key}" "${3:?impl}" "${4:?log}"
	exit
fi
times=${1:?usage: repeat.sh TIMES KEY IMPL PROGRAM [options]}
key=${2:?key}
impl=${3:?impl}
shift 3
prog=${1:?program}
log=$prog.repeat.log
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
: >"$log"
for ((i = 1; i <= times; i++)); do
	idle=$(wait_idle)
	echo "# run $i/$times: $* (load $(cut -d' ' -f1 /proc/loadavg), $idle)" | tee -a "$log"
	timeout -k 10 900 "$@" 2>/dev/null | grep '^BENCH ' | tee -a "$log" |
		awk -v k="$key" -v im="$impl" '
		{ pt = ""; inpoint = 1; delete kv;
		  for (i = 2; i <= NF; i++) { split($i, a, "="); kv[a[1]] = a[2];
			if (a[1] == "curve" || a[1] == "impl") inpoint = 0;
			if (i > 2 && inpoint) pt = pt (pt == "" ? "" : " ") $i; }
		  if (kv["impl"] == im) printf "  %-44s %s=%s\n", pt, k, kv[k] }'
done
echo "# $key of impl=$impl over $times invocations"
summarise "$key" "$impl" "$log"
