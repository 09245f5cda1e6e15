#!/bin/sh
# End-to-end test of examples/pubsub_server with examples/pubsub_client:
# the load mode (every delivery checked: exactly once, in each publisher's
# order) with many publishers and topics, with 1000 subscribers on one
# topic, and with a stalled subscriber under each --slow policy; then the
# sub, pub and direct modes; then, given a nats-server, the same checked loads
# over two nodes bridged by it.
#
#   sh tests/pubsub_e2e.sh path/to/pubsub_server path/to/pubsub_client [path/to/nats-server]
#
# The server runs with its default 2 draining threads, and the loads once
# more with 4: connection holds keep each publisher's order with any
# number. Every program runs under timeout(1); every load is bounded in
# time by --seconds.

SERVER=${1:?usage: pubsub_e2e.sh path/to/pubsub_server path/to/pubsub_client [nats-server]}
CLIENT=${2:?usage: pubsub_e2e.sh path/to/pubsub_server path/to/pubsub_client [nats-server]}
NATSD=${3:-}
T=60 # seconds any one program may run

ulimit -n 20000 2>/dev/null || true
dir=$(mktemp -d "${TMPDIR:-/tmp}/pubsub-e2e.XXXXXX") || exit 1
srv=
nodes=
natsd=
cleanup() {
	[ -n "$srv" ] && kill "$srv" 2>/dev/null
	for p in $nodes $natsd; do kill "$p" 2>/dev/null; done
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

passed=0
failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }

# start_server [options]: starts the server on a free port; sets $addr.
start_server() {
	: >"$dir/server.out" # not the last server's address, whoever runs first
	timeout $T "$SERVER" 127.0.0.1:0 "$@" >"$dir/server.out" 2>&1 &
	srv=$!
	i=0
	while [ $i -lt 100 ]; do
		addr=$(sed -n 's/.*listening on \([^ ]*\) .*/\1/p' "$dir/server.out")
		[ -n "$addr" ] && return 0
		kill -0 "$srv" 2>/dev/null || break
		sleep 0.05
		i=$((i + 1))
	done
	cat "$dir/server.out"
	return 1
}

# stop_server: SIGTERM, then its summary line in $summary; 0 when it
# exited cleanly and printed it.
stop_server() {
	kill -TERM "$srv"
	wait "$srv"; st=$?
	srv=
	summary=$(grep 'published' "$dir/server.out")
	[ $st -eq 0 ] && [ -n "$summary" ]
}

# field NAME: a number of the summary line ("dropped 3" -> 3).
field() { echo "$summary" | sed -n "s/.*$1 \([0-9]*\).*/\1/p"; }

# load NAME [client options]: one checked load run.
load() {
	name=$1; shift
	if timeout $T "$CLIENT" load "$addr" --quiet "$@" >"$dir/load.out" 2>&1; then
		ok "$name: $(grep -E '^(rate|stalled)' "$dir/load.out" | sed 's/  */ /g' | tr '\n' ' ')"
	else
		cat "$dir/load.out"
		fail "$name"
	fi
}

# --- loads, checked by the client ---------------------------------------------
for threads in 2 4; do
	if start_server --threads $threads; then
		load "$threads threads: 4 publishers, 200 subscribers, 20 topics" \
			--publishers 4 --subscribers 200 --topics 20 --rate 0 --seconds 2 --size 110
		load "$threads threads: 1 publisher, 1000 subscribers on one topic" \
			--publishers 1 --subscribers 1000 --topics 1 --rate 0 --seconds 2 --size 110
		load "$threads threads: paced, 2 publishers at 2000 msgs/s, 50 subscribers" \
			--publishers 2 --subscribers 50 --topics 5 --rate 2000 --seconds 1 --size 64
		if stop_server; then ok "server summary: $summary"; else fail "server exit: $summary"; fi
	else
		fail "server --threads $threads did not start"
	fi
done

# --- a stalled subscriber beside 20 healthy ones, each policy --------------------
# 12000 messages of 1000 B: far more than the queue (64 KiB) and the socket
# buffers of the stalled one hold, whatever the pace.
for policy in drop disconnect; do
	if ! start_server --slow $policy --queue 65536; then
		fail "server --slow $policy did not start"
		continue
	fi
	if [ $policy = drop ]; then expect=open; else expect=closed; fi
	load "--slow $policy: 20 healthy subscribers get everything, the stalled one is $expect" \
		--publishers 1 --subscribers 21 --stalled 1 --stall-after 0.1 --topics 1 \
		--rate 0 --window 16 --count 12000 --seconds 30 --size 1000 --expect-stalled $expect
	if stop_server; then
		if [ $policy = drop ]; then
			[ "$(field dropped)" -gt 0 ] && [ "$(field 'slow disconnects')" -eq 0 ] &&
				ok "--slow drop counted: $summary" || fail "--slow drop counts: $summary"
		else
			[ "$(field 'slow disconnects')" -eq 1 ] && [ "$(field dropped)" -eq 0 ] &&
				ok "--slow disconnect counted: $summary" || fail "--slow disconnect counts: $summary"
		fi
	else
		fail "server --slow $policy exit: $summary"
	fi
done

# --- sub, pub and direct ---------------------------------------------------------
if start_server; then
	: >"$dir/sub.out"
	: >"$dir/sub.err" # there before the client runs, whoever runs first
	timeout $T "$CLIENT" sub "$addr" news weather --count 4 --seconds 20 \
		>"$dir/sub.out" 2>"$dir/sub.err" &
	sub=$!
	i=0
	while [ $i -lt 400 ] && { [ "$(grep -c '^subscribed' "$dir/sub.err")" -lt 2 ] ||
		! grep -q '^id ' "$dir/sub.err"; }; do
		sleep 0.05
		i=$((i + 1))
	done
	id=$(sed -n 's/^id //p' "$dir/sub.err")
	timeout $T "$CLIENT" pub "$addr" news "hello world" &&
	timeout $T "$CLIENT" pub "$addr" sport "nobody listens" &&
	timeout $T "$CLIENT" pub "$addr" weather "$(printf 'rain\001')" &&
	timeout $T "$CLIENT" pub "$addr" news bye &&
	timeout $T "$CLIENT" direct "$addr" "$id" "just for you"
	pubs=$?
	# a stale id: the server says so, and direct fails
	timeout $T "$CLIENT" direct "$addr" 00000000deadbeef "nobody" 2>"$dir/direct.err"
	stale=$?
	wait $sub; subst=$?
	printf 'news: hello world\nweather: rain\\x01\nnews: bye\n' >"$dir/sub.want"
	if [ $pubs -eq 0 ] && [ $subst -eq 0 ] && [ $stale -ne 0 ] &&
		grep -q 'unknown id' "$dir/direct.err" &&
		head -3 "$dir/sub.out" | cmp -s - "$dir/sub.want" &&
		sed -n 4p "$dir/sub.out" | grep -Eq '^[0-9a-f]{16}: just for you$'; then
		ok "sub, pub and direct: four deliveries, printed; a stale id refused"
	else
		cat "$dir/sub.out" "$dir/sub.err" "$dir/direct.err"
		fail "sub, pub and direct (pub $pubs, sub $subst, stale $stale)"
	fi
	if stop_server && [ "$(field published)" -eq 4 ] && [ "$(field delivered)" -eq 4 ] &&
		[ "$(field direct)" -eq 1 ]; then
		ok "server summary: $summary"
	else
		fail "server summary: $summary"
	fi
else
	fail "server did not start"
fi

# --- two nodes bridged by nats-server -------------------------------------------
# start_node N: node N of the cluster on a free port; its address in $addr.
start_node() {
	timeout $T "$SERVER" 127.0.0.1:0 --node "$1" --nats "nats://127.0.0.1:$nport" \
		>"$dir/node$1.out" 2>"$dir/node$1.err" &
	nodes="$nodes $!"
	i=0
	while [ $i -lt 100 ]; do
		addr=$(sed -n 's/.*listening on \([^ ]*\) .*/\1/p' "$dir/node$1.out")
		[ -n "$addr" ] && return 0
		sleep 0.05
		i=$((i + 1))
	done
	cat "$dir/node$1.out" "$dir/node$1.err"
	return 1
}

if [ -n "$NATSD" ]; then
	# -p -1: nats-server picks a free port and says which.
	timeout $((4 * T)) "$NATSD" -a 127.0.0.1 -p -1 >"$dir/natsd.log" 2>&1 &
	natsd=$!
	nport=
	i=0
	while [ -z "$nport" ] && [ $i -lt 100 ]; do
		nport=$(sed -n 's/.*Listening for client connections on 127.0.0.1:\([0-9]*\).*/\1/p' \
			"$dir/natsd.log")
		sleep 0.05
		i=$((i + 1))
	done
	if [ -n "$nport" ] && start_node 1 && a1=$addr && start_node 2 && a2=$addr; then
		addr=$a1,$a2
		load "cluster: 4 publishers, 200 subscribers, 20 topics, both spread over 2 nodes" \
			--publishers 4 --subscribers 200 --topics 20 --rate 0 --seconds 2 --size 110 \
			--window 64
		addr=$a2
		load "cluster: 1 publisher on node 1 -> 500 subscribers on node 2" \
			--pub-addr "$a1" --publishers 1 --subscribers 500 --topics 1 --rate 0 \
			--seconds 2 --size 110
		for n in $nodes; do kill -TERM "$n"; wait "$n"; done
		nodes=
		for n in 1 2; do
			summary=$(grep 'published' "$dir/node$n.out")
			if echo "$summary" | grep -q 'not sent 0, received [0-9]*, lost 0,'; then
				ok "node $n summary: $summary"
			else
				cat "$dir/node$n.err"
				fail "node $n summary: $summary"
			fi
		done
	else
		cat "$dir/natsd.log"
		fail "cluster did not start"
	fi
	kill "$natsd" 2>/dev/null
	wait "$natsd" 2>/dev/null
	natsd=
fi

echo "pubsub-e2e: $passed passed, $failed failed"
[ $failed -eq 0 ]
