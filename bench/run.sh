#!/usr/bin/env bash
# Runs the benchmark programs and collects their results.
#
#   bench/run.sh quick|full|peers DIR [extra options for every program]
#
# DIR holds the bench_* programs; results-MODE.txt (tables and BENCH lines),
# progress-MODE.log and, with gnuplot, scaling.png are written there.
# Every program bounds its own runs; `timeout` bounds each program as well.
set -u
mode=${1:?usage: run.sh quick|full|peers DIR [options]}
dir=${2:?usage: run.sh quick|full|peers DIR [options]}
shift 2
extra=("$@")
here=$(cd "$(dirname "$0")" && pwd)
out=$dir/results-$mode.txt
log=$dir/progress-$mode.log

# Each side of a connection holds one descriptor in its own process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

case $mode in
quick)
	limit=120
	steps=(
		"ingest --quick --sizes 110,1024,16384 --curve size"
		"ingest --quick --sizes 110 --conns 4 --threads 1,2,4 --curve threads"
		"echo --quick --sizes 110"
		"conns --quick --conns 1,100,1000 --curve conns"
		"drainers --quick"
		"fanout --quick"
		"idle --quick"
	) ;;
full)
	limit=900
	steps=(
		"ingest --sizes 16,64,110,256,1024,4096,16384,65536 --curve size"
		"ingest --sizes 110 --conns 4 --threads 1,2,4,8 --msgs 12000000 --curve threads"
		"echo --sizes 110,1024"
		"echo --sizes 110 --pin"
		"conns --conns 1,10,100,1000,10000 --curve conns"
		"drainers --batch 1,16,64"
		"fanout"
		"idle"
	) ;;
peers)
	limit=600
	steps=(
		"ingest --sizes 110,1024,16384 --msgs 10000000 --mbytes 1024 --impls lib,base,zmq"
		"echo --sizes 110 --impls lib,base,zmq"
	) ;;
*)
	echo "unknown mode $mode" >&2
	exit 2 ;;
esac

{
	echo "buffstreams benchmarks ($mode) $(date -u '+%Y-%m-%d %H:%M:%SZ')"
	echo "host: $(uname -sr), $(nproc) CPUs, RLIMIT_NOFILE $(ulimit -n), load $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "medians of interleaved runs; ratio = impl / base (throughput: > 1 is faster;"
	echo "latency, bytes, cpu per op: > 1 costs more); spread = (max - min) / median"
	echo "of the first column; cpu_s = user+sys of the server process."
} | tee "$out"
: >"$log"

failed=0
start=$(date +%s)
for step in "${steps[@]}"; do
	read -r name args <<<"$step"
	prog=$dir/bench_$name
	if [ ! -x "$prog" ]; then
		echo "missing $prog" | tee -a "$out"
		failed=1
		continue
	fi
	echo ">> bench_$name $args ${extra[*]}" >&2
	t0=$(date +%s)
	# shellcheck disable=SC2086
	timeout -k 10 "$limit" "$prog" $args "${extra[@]}" 2>>"$log" | tee -a "$out"
	rc=${PIPESTATUS[0]}
	echo "   (bench_$name: $(($(date +%s) - t0)) s)" >&2
	if [ "$rc" -ne 0 ]; then
		echo "bench_$name exited with $rc" | tee -a "$out"
		failed=1
	fi
done

# Summary: one row per point and implementation other than the baseline.
{
	echo
	echo "== summary (ratio impl/base of the headline figures)"
	awk '
	/^BENCH / {
		delete kv; pt = ""; inpoint = 1;
		for (i = 2; i <= NF; i++) {
			split($i, a, "="); kv[a[1]] = a[2];
			# the point is the words between scenario= and curve=/impl=
			if (a[1] == "curve" || a[1] == "impl") inpoint = 0;
			if (i > 2 && inpoint) pt = pt (pt == "" ? "" : " ") $i;
		}
		if (kv["impl"] == "base") next;
		sc = kv["scenario"];
		if (kv["status"] == "failed") { printf "%-8s %-40s %-8s FAILED\n", sc, pt, kv["impl"]; next; }
		if (sc == "ingest") line = sprintf("msgs/s x%.2f   msgs/cpu_s x%.2f", kv["ratio_msgs_per_s"], kv["ratio_msgs_per_cpu_s"]);
		else if (sc == "echo") line = sprintf("p50 x%.2f  p99 x%.2f  p999 x%.2f  msgs/cpu_s x%.2f", kv["ratio_p50_us"], kv["ratio_p99_us"], kv["ratio_p999_us"], kv["ratio_msgs_per_cpu_s"]);
		else if (sc == "conns") line = sprintf("rtt/s x%.2f   msgs/cpu_s x%.2f", kv["ratio_msgs_per_s"], kv["ratio_msgs_per_cpu_s"]);
		else if (sc == "drainers") line = sprintf("msgs/s x%.2f   msgs/cpu_s x%.2f   violations %d", kv["ratio_msgs_per_s"], kv["ratio_msgs_per_cpu_s"], kv["violations"]);
		else if (sc == "fanout") line = sprintf("deliver x%.2f  send loop x%.2f  msgs/cpu_s x%.2f", kv["ratio_deliver_ms"], kv["ratio_send_ms"], kv["ratio_msgs_per_cpu_s"]);
		else if (sc == "idle") line = sprintf("bytes/conn %.0f (x%.1f)  accepts/s x%.2f  cpu/accept x%.2f  idle cpu %.2f ms/s", kv["bytes_per_conn"], kv["ratio_bytes_per_conn"], kv["ratio_accepts_per_s"], kv["ratio_accept_cpu_us"], kv["idle_cpu_ms_per_s"]);
		else line = sprintf("ratio x%.2f", kv["ratio"]);
		printf "%-8s %-40s %-8s %s\n", sc, pt, kv["impl"], line;
	}' "$out"
	echo "elapsed: $(($(date +%s) - start)) s"
} | tee -a "$out.summary"
cat "$out.summary" >>"$out"
rm -f "$out.summary"

# Scaling curves into data files and, with gnuplot, a chart.
# rows: x msgs_per_s mb_per_s msgs_per_cpu_s ratio_msgs_per_s ratio_msgs_per_cpu_s
curve() { # curve NAME XKEY IMPL
	awk -v c="$1" -v x="$2" -v im="$3" '
	/^BENCH / && / curve=/ {
		delete kv;
		for (i = 2; i <= NF; i++) { split($i, a, "="); kv[a[1]] = a[2]; }
		if (kv["curve"] == c && kv["impl"] == im && kv["status"] != "failed")
			print kv[x], kv["msgs_per_s"], (kv["mb_per_s"] == "" ? 0 : kv["mb_per_s"]), kv["msgs_per_cpu_s"],
				(kv["ratio_msgs_per_s"] == "" ? "NaN" : kv["ratio_msgs_per_s"]),
				(kv["ratio_msgs_per_cpu_s"] == "" ? "NaN" : kv["ratio_msgs_per_cpu_s"]);
	}' "$out" | sort -n
}
have_points=0
for c in size:size threads:threads conns:conns; do
	name=${c%%:*}
	for im in lib lib-more base; do
		curve "$name" "${c#*:}" "$im" >"$dir/curve-$name-$im.dat"
		[ -s "$dir/curve-$name-$im.dat" ] && have_points=1
	done
done
if [ "$have_points" = 1 ] && command -v gnuplot >/dev/null 2>&1; then
	if gnuplot -e "dir='$dir'; title='buffstreams vs plain sockets ($mode, $(nproc) CPUs)'" \
		"$here/scaling.gp" 2>>"$log"; then
		echo "chart: $dir/scaling.png" | tee -a "$out"
	else
		echo "gnuplot failed (see $log)" | tee -a "$out"
	fi
elif [ "$have_points" = 1 ]; then
	echo "gnuplot not installed: no chart (data in $dir/curve-*.dat)" | tee -a "$out"
fi
echo "results: $out"
exit $failed
