#!/usr/bin/env bash
# The pub/sub benchmark: the same three loads against our pubsub_server,
# nats-server and redis-server, in one run, on loopback; then two of them
# across two pubsub_server nodes bridged by nats-server, against one node.
#
#   bench/pubsub.sh BUILD_DIR [RESULTS_FILE]
#
# Each run starts its servers on free loopback ports, drives them with
# BUILD_DIR/bench/pubsub_load (one C load client, one thread, speaking the
# server's protocol: ours, NATS text SUB/PUB/MSG, or Redis RESP
# SUBSCRIBE/PUBLISH), reads the servers' CPU time from /proc/PID/stat
# before and after the load, and stops them. Runs are interleaved (the
# order of the servers turns every round) and the tables show medians,
# each also as a ratio against nats-server (or, across nodes, against one
# node) measured in the same run. With gnuplot installed, the medians are
# also drawn (bench/pubsub.gp) next to the results file, as pubsub.png.
#
# Environment: PUBSUB_ROUNDS (default 3), PUBSUB_SECONDS per run (default
# 3), PUBSUB_THREADS for our server (default 2, the server's default; the
# load client checks every publisher's order whatever the count),
# PUBSUB_CLUSTER=0 to leave out the runs across nodes.
set -u
build=${1:?usage: pubsub.sh BUILD_DIR [RESULTS_FILE]}
out=${2:-$build/bench/pubsub.txt}
rounds=${PUBSUB_ROUNDS:-3}
secs=${PUBSUB_SECONDS:-3}
threads=${PUBSUB_THREADS:-2}
cluster=${PUBSUB_CLUSTER:-1}
server_bin=$build/examples/pubsub_server
load_bin=$build/bench/pubsub_load
raw=$build/bench/pubsub-runs.txt
here=$(cd "$(dirname "$0")" && pwd)
tick=$(getconf CLK_TCK)

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
for b in "$server_bin" "$load_bin"; do
	[ -x "$b" ] || { echo "missing $b" >&2; exit 2; }
done
for b in nats-server redis-server; do
	command -v $b >/dev/null || { echo "missing $b (apt-get install nats-server redis-server)" >&2; exit 2; }
done
# Across nodes needs the server built with the NATS bridge (libnats-dev).
if [ "$cluster" = 1 ] && "$server_bin" --help 2>&1 | grep -q 'not in this build'; then
	echo "pubsub_server was built without NATS (libnats-dev): no runs across nodes" >&2
	cluster=0
fi

# name|load options. Every run is bounded by --seconds; the client also
# bounds its setup and its wait for the last deliveries.
loads=(
	"fanout|--publishers 1 --subscribers 1000 --topics 1 --size 110 --window 64"
	"topics|--publishers 4 --subscribers 1000 --topics 100 --size 110 --window 256"
	"stalled|--publishers 1 --subscribers 101 --stalled 1 --stall-after 0.5 --topics 1 --size 1024 --window 64"
)
servers=(bs nats redis)
# Across nodes: the two fan-out loads, every subscriber on node 2, every
# publisher on node 1 ("cross"), against the same load on one node
# without NATS ("single").
xloads=(
	"xfanout|--publishers 1 --subscribers 1000 --topics 1 --size 110 --window 64"
	"xtopics|--publishers 4 --subscribers 1000 --topics 100 --size 110 --window 256"
)
xservers=(single cross)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-pubsub.XXXXXX") || exit 1
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# CPU ticks of every server process of the run.
cpu_ticks() {
	local t=0 p
	for p in "${pids[@]}"; do
		t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo $t
}

# Waits until something accepts on 127.0.0.1:$1 (at most 10 s).
wait_port() {
	for _ in $(seq 200); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		kill -0 "${pids[-1]}" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

# start_ours LOG [options]: one pubsub_server; its address in $ours.
start_ours() {
	local log=$1
	shift
	: >"$log"
	"$server_bin" 127.0.0.1:0 --threads "$threads" "$@" >"$log" 2>&1 &
	pids+=($!)
	for _ in $(seq 200); do
		ours=$(sed -n 's/.*listening on \([^ ]*\) .*/\1/p' "$log")
		[ -n "$ours" ] && return 0
		kill -0 "${pids[-1]}" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

# start KIND: starts the servers of one run; sets $addr (and $pub_addr).
start() {
	local port
	pub_addr=
	case $1 in
	bs|single)
		start_ours "$tmp/server.log" || return 1
		addr=$ours
		return 0 ;;
	cross)
		port=$("$load_bin" --free-port)
		nats-server -a 127.0.0.1 -p "$port" >"$tmp/nats.log" 2>&1 &
		pids+=($!)
		wait_port "$port" || return 1
		start_ours "$tmp/server.log" --node 1 --nats "nats://127.0.0.1:$port" || return 1
		pub_addr=$ours
		start_ours "$tmp/server2.log" --node 2 --nats "nats://127.0.0.1:$port" || return 1
		addr=$ours
		return 0 ;;
	nats)
		port=$("$load_bin" --free-port)
		nats-server -a 127.0.0.1 -p "$port" >"$tmp/server.log" 2>&1 &
		pids+=($!) ;;
	redis)
		port=$("$load_bin" --free-port)
		redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
			--protected-mode no --daemonize no --maxclients 10000 >"$tmp/server.log" 2>&1 &
		pids+=($!) ;;
	esac
	addr=127.0.0.1:$port
	wait_port "$port"
}

stop() {
	local p
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do
		for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
		kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	pids=()
}

# run ROUND NAME KIND OPTIONS: one load against one setup, into $raw.
run() {
	local r=$1 name=$2 s=$3 opts=$4 proto=$3 extra=()
	case $s in single|cross) proto=bs ;; esac
	if ! start "$s"; then
		echo "round $r $name $s: server did not start" >&2
		cat "$tmp"/*.log >&2
		stop
		return
	fi
	[ -n "$pub_addr" ] && extra=(--pub-addr "$pub_addr")
	local c0 c1 rc res cpu
	c0=$(cpu_ticks)
	# shellcheck disable=SC2086
	timeout -k 5 $((secs + 60)) "$load_bin" "$addr" "${extra[@]}" --proto "$proto" --quiet \
		--seconds "$secs" $opts >"$tmp/load.out" 2>"$tmp/load.err"
	rc=$?
	c1=$(cpu_ticks)
	stop
	res=$(grep '^RESULT' "$tmp/load.out")
	cpu=$(awk -v a="$c0" -v b="$c1" -v t="$tick" 'BEGIN { printf "%.2f", (b - a) / t }')
	echo "RUN load=$name server=$s round=$r rc=$rc cpu_s=$cpu ${res#RESULT }" >>"$raw"
	printf 'round %d  %-8s %-6s %s\n' "$r" "$name" "$s" \
		"$(grep -E '^(rate|latency|check)' "$tmp/load.out" | sed 's/  */ /g' | tr '\n' ' ') cpu ${cpu}s" >&2
	if [ "$rc" -ne 0 ]; then head -5 "$tmp/load.err" >&2; fi
}

{
	echo "pub/sub benchmark $(date -u '+%Y-%m-%d %H:%M:%SZ')"
	echo "host: $(uname -sr), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "servers: pubsub_server --threads $threads (buffstreams), $(nats-server --version 2>&1 | head -1)," \
		"$(redis-server --version | cut -d' ' -f1-3)"
	echo "$rounds interleaved rounds of $secs s per load and server; medians; ratio = server / nats-server"
} >"$tmp/head"
cat "$tmp/head"
: >"$raw"

for ((r = 1; r <= rounds; r++)); do
	for l in "${loads[@]}"; do
		for ((k = 0; k < ${#servers[@]}; k++)); do
			run "$r" "${l%%|*}" "${servers[$(((k + r) % ${#servers[@]}))]}" "${l#*|}"
		done
	done
	[ "$cluster" = 1 ] || continue
	for l in "${xloads[@]}"; do
		for ((k = 0; k < ${#xservers[@]}; k++)); do
			run "$r" "${l%%|*}" "${xservers[$(((k + r) % ${#xservers[@]}))]}" "${l#*|}"
		done
	done
done

# Medians per load and server, then the tables and the chart's data.
awk -v rounds="$rounds" -v chart="$tmp/chart.dat" '
function field(line, key,   m) {
	if (match(line, " " key "=[^ ]*")) return substr(line, RSTART + length(key) + 2, RLENGTH - length(key) - 2)
	return ""
}
function median(list,   n, a, i, j, t) {
	n = split(list, a, " ")
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	if (n == 0) return 0
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
/^RUN / {
	key = field($0, "load") SUBSEP field($0, "server")
	dps[key] = dps[key] " " field($0, "dps")
	p50[key] = p50[key] " " field($0, "p50_us")
	p99[key] = p99[key] " " field($0, "p99_us")
	cpu[key] = cpu[key] " " field($0, "cpu_s")
	dl = field($0, "delivered") + 0
	nsd[key] = nsd[key] " " (dl > 0 ? field($0, "cpu_s") * 1e9 / dl : 0)
	if (field($0, "ok") != "1" || field($0, "rc") != "0") bad[key]++
	runs[key]++
	if (field($0, "stalled") + 0 > 0) {
		st[key] = 1
		sclosed[key] += field($0, "stalled_closed")
		srecv[key] = srecv[key] " " field($0, "stalled_received")
	}
}
END {
	split("fanout topics stalled", L, " ")
	desc["fanout"] = "1 publisher -> 1000 subscribers, 1 topic, 110 B"
	desc["topics"] = "4 publishers, 100 topics x 10 subscribers, 110 B"
	desc["stalled"] = "1 publisher -> 100 healthy + 1 stalled subscriber, 1 KiB"
	short["fanout"] = "1 -> 1000"; short["topics"] = "100 topics x 10"; short["stalled"] = "100 + 1 stalled"
	split("bs nats redis", S, " ")
	sname["bs"] = "pubsub_server"; sname["nats"] = "nats-server"; sname["redis"] = "redis-server"
	printf "\n| load | server | deliveries/s | vs nats | vs redis | p50 us | vs nats | p99 us | vs nats | server CPU s | vs nats | CPU ns/delivery | check |\n"
	printf "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
	for (i = 1; i <= 3; i++) {
		l = L[i]
		n = l SUBSEP "nats"; rd = l SUBSEP "redis"
		bd = median(dps[n]); b50 = median(p50[n]); b99 = median(p99[n]); bc = median(cpu[n]); bn = median(nsd[n])
		rdd = median(dps[rd])
		for (j = 1; j <= 3; j++) {
			k = l SUBSEP S[j]
			if (!runs[k]) continue
			d = median(dps[k]); q50 = median(p50[k]); q99 = median(p99[k]); c = median(cpu[k]); ns = median(nsd[k])
			printf "| %s | %s | %.0f | %.2f | %.2f | %.0f | %.2f | %.0f | %.2f | %.2f | %.2f | %.0f | %s |\n",
				j == 1 ? desc[l] : "", sname[S[j]], d, bd ? d / bd : 0, rdd ? d / rdd : 0,
				q50, b50 ? q50 / b50 : 0, q99, b99 ? q99 / b99 : 0, c, bc ? c / bc : 0, ns,
				bad[k] ? bad[k] " of " runs[k] " runs FAILED" : "ok"
			printf "1 %d %d \"%s\" \"%s\" %.0f %.0f\n", i, j, short[l], sname[S[j]], d, q99 >> chart
		}
	}
	printf "\nStalled subscriber (load 3): what each server did with it; the deliveries/s and latencies above are those of the healthy ones\n\n"
	printf "| server | stalled one disconnected | deliveries it got (median) |\n|---|---|---|\n"
	for (j = 1; j <= 3; j++) {
		k = "stalled" SUBSEP S[j]
		if (!runs[k]) continue
		printf "| %s | in %d of %d runs | %.0f |\n", sname[S[j]], sclosed[k], runs[k], median(srecv[k])
	}
	if (!runs["xfanout" SUBSEP "cross"] && !runs["xtopics" SUBSEP "cross"])
		exit
	desc["xfanout"] = desc["fanout"]; desc["xtopics"] = desc["topics"]
	short["xfanout"] = "1 -> 1000"; short["xtopics"] = "100 topics x 10"
	xname["single"] = "one node"; xname["cross"] = "node 1 -> node 2 over NATS"
	printf "\nAcross nodes: every publisher on node 1, every subscriber on node 2, bridged by one nats-server; against the same load on one node (no NATS). CPU: all server processes\n\n"
	printf "| load | setup | deliveries/s | vs one node | p50 us | p99 us | server CPU s | CPU ns/delivery | check |\n"
	printf "|---|---|---|---|---|---|---|---|---|\n"
	split("xfanout xtopics", X, " ")
	split("single cross", M, " ")
	for (i = 1; i <= 2; i++) {
		l = X[i]
		bd = median(dps[l SUBSEP "single"])
		for (j = 1; j <= 2; j++) {
			k = l SUBSEP M[j]
			if (!runs[k]) continue
			d = median(dps[k])
			printf "| %s | %s | %.0f | %.2f | %.0f | %.0f | %.2f | %.0f | %s |\n",
				j == 1 ? desc[l] : "", xname[M[j]], d, bd ? d / bd : 0, median(p50[k]),
				median(p99[k]), median(cpu[k]), median(nsd[k]),
				bad[k] ? bad[k] " of " runs[k] " runs FAILED" : "ok"
			printf "2 %d %d \"%s\" \"%s\" %.0f %.0f\n", i, j, short[l], xname[M[j]], d, median(p99[k]) >> chart
		}
	}
}' "$raw" >"$tmp/table"

cat "$tmp/table"
mkdir -p "$(dirname "$out")"
{ cat "$tmp/head" "$tmp/table"; echo; echo "runs:"; cat "$raw"; } >"$out"
echo "results: $out" >&2
if command -v gnuplot >/dev/null; then
	png=$(dirname "$out")/pubsub.png
	if gnuplot -e "data='$tmp/chart.dat'; out='$png'; title='$(sed -n 1p "$tmp/head"), $(sed -n 2p "$tmp/head" | sed 's/^host: //')'" \
		"$here/pubsub.gp"; then
		echo "chart: $png" >&2
	fi
fi
grep -q FAILED "$tmp/table" && exit 1
exit 0
