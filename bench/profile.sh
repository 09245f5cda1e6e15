#!/usr/bin/env bash
# Profiles the library side of one benchmark scenario (the server process
# only; the load client is a separate process named bench-client).
#
#   bench/profile.sh DIR SCENARIO perf|syscalls|callgrind [extra program options]
#
#   perf        cpu-clock samples (software event: works without hardware
#               counters), kernel and user symbols, flat by function.
#   syscalls    exact system call and context switch counts (tracepoints),
#               library run beside baseline run on the same work
#               (BENCH_PROFILE_IMPLS="lib lib-more base" for more sides).
#   callgrind   user-space instruction counts, repeatable; slow, so the run
#               is small. Kernel time is not seen.
# Output goes to DIR/profile-SCENARIO.{perf.data,callgrind.out,txt}.
set -u
dir=${1:?usage: profile.sh DIR SCENARIO perf|callgrind [options]}
scen=${2:?scenario: ingest echo conns drainers fanout idle}
tool=${3:-perf}
shift 3 2>/dev/null || shift $#
prog=$dir/bench_$scen
[ -x "$prog" ] || { echo "missing $prog" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

case $scen in
ingest) args="--sizes 110 --msgs 20000000" ;;
echo) args="--rtts 5000" ;;
conns) args="--conns 1000 --msgs 100000" ;;
drainers) args="--msgs 2000" ;;
fanout) args="--subs 5000 --rounds 6" ;;
idle) args="--conns 10000 --idle 0.2" ;;
*) echo "unknown scenario $scen" >&2; exit 2 ;;
esac
# callgrind runs user code about 50x slower: smaller counts, longer bounds
if [ "$tool" = callgrind ]; then
	case $scen in
	ingest) args="--sizes 110 --msgs 400000" ;;
	echo) args="--rtts 1000" ;;
	conns) args="--conns 200 --msgs 20000" ;;
	drainers) args="--msgs 200" ;;
	esac
fi
args="$args --impls lib --runs 1 --limit 300 $*"
txt=$dir/profile-$scen-$tool.txt

case $tool in
perf)
	command -v perf >/dev/null || { echo "perf is not installed" >&2; exit 2; }
	data=$dir/profile-$scen.perf.data
	# shellcheck disable=SC2086
	BENCH_START_DELAY=1 "$prog" $args >"$txt.run" 2>/dev/null &
	pid=$!
	perf record -q -e cpu-clock -F 2999 -p "$pid" -o "$data" 2>/dev/null &
	rec=$!
	wait "$pid"
	kill -INT "$rec" 2>/dev/null
	wait "$rec"
	# Every thread but the client's (it names itself bench-client), with
	# shares renormalised to the server's samples.
	rep() { # rep KEYS MIN%: KEYS after comm
		perf report -i "$data" --stdio --sort "comm,$1" 2>/dev/null |
			awk -v min="$2" '!/^#/ && NF >= 2 && $2 != "bench-client" {
				p = $1; sub(/%/, "", p); $1 = ""; $2 = ""; sub(/^ +/, "");
				pct[++n] = p; what[n] = $0; tot += p }
			END { for (i = 1; i <= n; i++) if (100 * pct[i] / tot >= min)
				printf "%7.2f%%  %s\n", 100 * pct[i] / tot, what[i] }'
	}
	{
		grep -v '^BENCH' "$txt.run"
		echo
		echo "== server process: cpu-clock samples by binary"
		rep dso 0.1 | head -12
		echo
		echo "== by thread"
		rep pid 0.5 | head -12
		echo
		echo "== by function (>= 0.5% of the server's samples)"
		rep dso,sym 0.5 | head -60
	} >"$txt"
	;;
callgrind)
	command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
	# shellcheck disable=SC2086
	valgrind --tool=callgrind --callgrind-out-file="$dir/profile-$scen.callgrind.%p" \
		"$prog" $args >"$txt.run" 2>"$txt.log" &
	pid=$!
	wait "$pid"
	out=$dir/profile-$scen.callgrind.$pid
	{
		grep -v '^BENCH' "$txt.run"
		echo
		echo "== server process: instructions by function (self)"
		callgrind_annotate --inclusive=no "$out" 2>/dev/null | sed -n '1,60p'
		echo
		echo "== inclusive"
		callgrind_annotate --inclusive=yes "$out" 2>/dev/null | sed -n '1,60p'
	} >"$txt"
	;;
syscalls)
	# Exact counts of the system calls (and context switches) of the
	# server process, library beside baseline on the same work.
	command -v perf >/dev/null || { echo "perf is not installed" >&2; exit 2; }
	evs=""
	for s in read readv recvfrom recvmsg write writev sendto sendmsg \
		epoll_wait epoll_pwait epoll_ctl futex accept4 nanosleep clock_nanosleep; do
		evs="$evs -e syscalls:sys_enter_$s"
	done
	evs="$evs -e sched:sched_switch"
	: >"$txt"
	impls=${BENCH_PROFILE_IMPLS:-lib base}
	for im in $impls; do
		data=$dir/profile-$scen-$im.sys.data
		# shellcheck disable=SC2086
		BENCH_START_DELAY=1 "$prog" ${args/--impls lib/--impls $im} >"$txt.run" 2>/dev/null &
		pid=$!
		# shellcheck disable=SC2086
		perf record -q $evs -p "$pid" -o "$data" 2>/dev/null &
		rec=$!
		wait "$pid"
		kill -INT "$rec" 2>/dev/null
		wait "$rec"
		grep -v '^BENCH' "$txt.run" | grep "impl\| $im " >>"$txt"
		# only the server's threads: the client names itself bench-client
		perf script -i "$data" -F comm,event 2>/dev/null |
			awk '$1 != "bench-client" { e = $NF; sub(/:$/, "", e);
				sub(/^syscalls:sys_enter_/, "", e); n[e]++ }
				END { for (e in n) print e, n[e] }' >"$txt.c.$im"
	done
	{
		echo
		echo "== system calls and context switches of the server process (same work)"
		# shellcheck disable=SC2046
		awk -v impls="$impls" '
			BEGIN { ni = split(impls, im, " ") }
			{ f = FILENAME; sub(/.*\.c\./, "", f); c[$1, f] = $2; ev[$1] = 1 }
			END {
				printf "%-22s", "event"; for (i = 1; i <= ni; i++) printf " %10s", im[i];
				printf "   (x base)\n";
				for (e in ev) {
					printf "%-22s", e;
					for (i = 1; i <= ni; i++) printf " %10d", c[e, im[i]];
					for (i = 1; i <= ni; i++) if (im[i] != "base")
						printf "  %s", c[e, "base"] ? sprintf("%.2f", c[e, im[i]] / c[e, "base"]) : "-";
					printf "\n";
				}
			}' $(for im in $impls; do echo "$txt.c.$im"; done) | { read -r h; echo "$h"; sort -k2 -rn; }
	} >>"$txt"
	for im in $impls; do rm -f "$txt.c.$im"; done
	;;
*)
	echo "unknown tool $tool (perf, syscalls or callgrind)" >&2
	exit 2 ;;
esac
rm -f "$txt.run"
cat "$txt"
echo "profile: $txt"
