#!/bin/sh
# End-to-end test of bscat: a listener and a sender for every framing, over
# unix sockets and loopback TCP; --hex, --count, error exit codes; send
# --reconnect across a listener that goes and comes back, and --failed
# when it never comes back.
#
#   sh tests/bscat_e2e.sh path/to/bscat [path/to/echo_server [VECTORS_DIR]]
#
# VECTORS_DIR holds the captured wire vectors (default: tests/vectors beside
# this script); they are replayed with python3. Missing ones fail the test.
#
# Every wait is bounded: each program runs under timeout(1), each polling
# loop has a fixed number of rounds.

BSCAT=${1:?usage: bscat_e2e.sh path/to/bscat [path/to/echo_server [VECTORS_DIR]]}
ECHO=${2:-}
VEC=${3:-$(dirname "$0")/vectors}
T=8 # seconds any one bscat may run

dir=$(mktemp -d "${TMPDIR:-/tmp}/bscat-e2e.XXXXXX") || exit 1
listener=
cleanup() {
	[ -n "$listener" ] && kill "$listener" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fails=0
ok() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }

# start_listener OUT ADDR [options]: starts bscat listen in the background
# and waits until it is listening. 0 when it is, 1 when it exited first.
start_listener() {
	out=$1; shift
	timeout $T "$BSCAT" listen "$@" >"$out" 2>"$out.err" &
	listener=$!
	i=0
	while [ $i -lt 100 ]; do
		grep -q 'listening on' "$out.err" 2>/dev/null && return 0
		kill -0 "$listener" 2>/dev/null || return 1
		sleep 0.05
		i=$((i + 1))
	done
	return 1
}

# finish_listener: waits for the listener; its exit status.
finish_listener() {
	wait "$listener"; st=$?
	listener=
	return $st
}

# The test input: empty, UTF-8, blanks, a 200-byte line (a two-byte varint
# and a fixed1 length near its limit), and a last line without newline.
long=$(printf '%0200d' 7)
printf 'hello\n\nw\303\266rld with  spaces \n%s\nlast' "$long" >"$dir/in.txt"
printf 'hello\n\nw\303\266rld with  spaces \n%s\nlast\n' "$long" >"$dir/expect.txt"

# --- every framing, over a unix socket --------------------------------------
for f in fixed4 fixed1 fixed2le fixed3 fixed8le fixed4be varint buffstreams delim; do
	sock=unix:$dir/$f.sock
	if ! start_listener "$dir/$f.out" "$sock" --framing "$f" --count 5; then
		fail "framing $f: listener did not start: $(cat "$dir/$f.out.err")"
		finish_listener
		continue
	fi
	timeout $T "$BSCAT" send "$sock" --framing "$f" <"$dir/in.txt"; sst=$?
	finish_listener; lst=$?
	if [ $sst -eq 0 ] && [ $lst -eq 0 ] && cmp -s "$dir/expect.txt" "$dir/$f.out"; then
		ok "framing $f"
	else
		fail "framing $f (send $sst, listen $lst)"
		diff "$dir/expect.txt" "$dir/$f.out" | head -20
	fi
done

# --- loopback TCP on a free port, found by trying ---------------------------
port=$((20000 + $$ % 20000))
tries=0
started=no
while [ $tries -lt 20 ]; do
	if start_listener "$dir/tcp.out" "127.0.0.1:$port" --count 2 --hex; then
		started=yes
		break
	fi
	finish_listener
	port=$((port + 1))
	tries=$((tries + 1))
done
if [ $started = yes ]; then
	# --hex both ways: the sender decodes hex lines (blanks allowed),
	# the listener prints hex.
	printf '00ff10\n 41 42 43\n' | timeout $T "$BSCAT" send "127.0.0.1:$port" --hex; sst=$?
	finish_listener; lst=$?
	printf '00ff10\n414243\n' >"$dir/tcp.expect"
	if [ $sst -eq 0 ] && [ $lst -eq 0 ] && cmp -s "$dir/tcp.expect" "$dir/tcp.out"; then
		ok "tcp 127.0.0.1:$port with --hex"
	else
		fail "tcp with --hex (send $sst, listen $lst)"
		diff "$dir/tcp.expect" "$dir/tcp.out"
	fi
else
	fail "tcp: no free port found"
fi

# --- --count on send, two senders to one listener ---------------------------
sock=unix:$dir/count.sock
if start_listener "$dir/count.out" "$sock" --count 3; then
	printf 'one\ntwo\nthree\n' | timeout $T "$BSCAT" send "$sock" --count 2; s1=$?
	echo end | timeout $T "$BSCAT" send "$sock"; s2=$?
	finish_listener; lst=$?
	printf 'one\ntwo\nend\n' >"$dir/count.expect"
	if [ $s1 -eq 0 ] && [ $s2 -eq 0 ] && [ $lst -eq 0 ] &&
	   cmp -s "$dir/count.expect" "$dir/count.out"; then
		ok "send --count, two senders"
	else
		fail "send --count (send $s1 $s2, listen $lst)"
		diff "$dir/count.expect" "$dir/count.out"
	fi
else
	fail "count: listener did not start"
	finish_listener
fi

# --- wire compatibility with the captured vectors (needs python3) ----------
if ! command -v python3 >/dev/null 2>&1; then
	fail "wire vectors: python3 not found (Debian: apt-get install python3)"
elif [ ! -f "$VEC/README.md" ] || [ ! -d "$VEC/buffstreams" ] ||
     [ ! -d "$VEC/protobuf-delimited" ]; then
	fail "wire vectors: not found in $VEC (run from the repository root)"
else
	# raw_send PATH FILE: writes FILE's bytes to the unix socket PATH.
	raw_send() {
		python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(open(sys.argv[2], "rb").read())
s.close()' "$1" "$2"
	}
	# raw_listen PATH OUT: accepts one connection on PATH, stores its bytes.
	raw_listen() {
		# The socket gets its name only once it listens: a connect
		# between bind and listen would be refused.
		python3 -c 'import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1] + ".tmp"); s.listen(1); s.settimeout(5)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
c, _ = s.accept(); c.settimeout(5)
data = b""
for _ in range(10000):
    d = c.recv(65536)
    if not d:
        break
    data += d
open(sys.argv[2], "wb").write(data)' "$1" "$2"
	}
	payload() { # the vectors' payload: n bytes of a..z repeated
		python3 -c 'import sys
n = int(sys.argv[1]); sys.stdout.write("".join(chr(97 + i % 26) for i in range(n)))' "$1"
	}
	for v in max4096_len110:4096:110 max255_len110:255:110 max65536_len200:65536:200 max256_len0:256:0; do
		name=${v%%:*}; rest=${v#*:}; max=${rest%%:*}; n=${rest#*:}
		# Go's writer to bscat listen.
		if start_listener "$dir/$name.out" "unix:$dir/$name.sock" --framing buffstreams \
		    --max "$max" --count 1; then
			raw_send "$dir/$name.sock" "$VEC/buffstreams/$name.bin"
			finish_listener; lst=$?
			{ payload "$n"; echo; } >"$dir/$name.expect"
			if [ $lst -eq 0 ] && cmp -s "$dir/$name.expect" "$dir/$name.out"; then
				ok "buffstreams vector $name read"
			else
				fail "buffstreams vector $name read (listen $lst)"
			fi
		else
			fail "vector $name: listener did not start"
			finish_listener
		fi
		# bscat send to Go's reader: the bytes must be identical.
		raw_listen "$dir/$name.raw.sock" "$dir/$name.raw" &
		raw=$!
		i=0
		while [ $i -lt 100 ] && [ ! -S "$dir/$name.raw.sock" ]; do sleep 0.05; i=$((i + 1)); done
		{ payload "$n"; echo; } | timeout $T "$BSCAT" send "unix:$dir/$name.raw.sock" \
			--framing buffstreams --max "$max"; sst=$?
		wait $raw
		if [ $sst -eq 0 ] && cmp -s "$VEC/buffstreams/$name.bin" "$dir/$name.raw"; then
			ok "buffstreams vector $name written"
		else
			fail "buffstreams vector $name written (send $sst)"
		fi
	done

	# protobuf writeDelimitedTo stream: 11 messages, 0 to 70004 bytes.
	pb=$VEC/protobuf-delimited
	if start_listener "$dir/pb.out" "unix:$dir/pb.sock" --framing varint --max 100000 \
	    --count 11 --hex; then
		raw_send "$dir/pb.sock" "$pb/stream.bin"
		finish_listener; lst=$?
		if [ $lst -eq 0 ] && awk '
			NR == FNR { if ($1 !~ /^#/) { len[$1] = $2; sub("payload_head=", "", $4); head[$1] = $4 }; next }
			{ i = FNR - 1; n++
			  if (length($0) != 2 * len[i] || substr($0, 1, length(head[i])) != head[i]) bad = 1 }
			END { exit !(n == 11 && !bad) }' "$pb/stream.txt" "$dir/pb.out"; then
			ok "protobuf delimited stream read"
		else
			fail "protobuf delimited stream read (listen $lst)"
		fi
	else
		fail "protobuf stream: listener did not start"
		finish_listener
	fi
fi

# --- send --replies against the echo server ---------------------------------
if [ -n "$ECHO" ]; then
	sock=unix:$dir/echo.sock
	timeout $T "$ECHO" "$sock" --threads 2 >"$dir/echo.log" 2>&1 &
	echo_pid=$!
	i=0
	while [ $i -lt 100 ] && ! grep -qs 'listening on' "$dir/echo.log"; do sleep 0.05; i=$((i + 1)); done
	timeout $T "$BSCAT" send "$sock" --framing fixed4 --replies 5 <"$dir/in.txt" >"$dir/echo.out"; sst=$?
	printf 'one\n' | timeout $T "$BSCAT" send "$sock" --replies 2 --wait 2000 >/dev/null 2>"$dir/echo.err"; s2=$?
	kill -INT $echo_pid 2>/dev/null
	wait $echo_pid
	if [ $sst -eq 0 ] && cmp -s "$dir/expect.txt" "$dir/echo.out"; then
		ok "send --replies prints the echoes"
	else
		fail "send --replies (send $sst)"
		diff "$dir/expect.txt" "$dir/echo.out" | head
	fi
	if [ $s2 -eq 1 ] && grep -q '1 of 2 replies' "$dir/echo.err"; then
		ok "missing replies (exit 1)"
	else
		fail "missing replies: exit $s2: $(cat "$dir/echo.err")"
	fi
fi

# --- send --reconnect across a listener that goes and comes back ----------
# The input comes through a fifo, so that each part is written at a known
# moment: lines 1-3 to the first listener (which exits after them), 4-6
# while the sender is down (it says so on stderr), 7-9 once a second
# listener has the port again. Over TCP, whose kernel tells what the peer
# acknowledged, nothing is counted as maybe lost here: the first listener
# had read all it got.
mkfifo "$dir/re.in"
port=$((20000 + ($$ + 7919) % 20000))
tries=0
started=no
while [ $tries -lt 20 ]; do
	if start_listener "$dir/re1.out" "127.0.0.1:$port" --count 3; then
		started=yes
		break
	fi
	finish_listener
	port=$((port + 1))
	tries=$((tries + 1))
done
sock=127.0.0.1:$port
if [ $started = yes ]; then
	timeout $T "$BSCAT" send "$sock" --reconnect --backoff 50 --wait 3000 \
		--failed "$dir/re.failed" <"$dir/re.in" 2>"$dir/re.err" &
	snd=$!
	exec 3>"$dir/re.in"
	printf '1\n2\n3\n' >&3
	finish_listener; l1=$?
	i=0
	while [ $i -lt 100 ] && ! grep -q 'down:' "$dir/re.err"; do sleep 0.05; i=$((i + 1)); done
	printf '4\n5\n6\n' >&3
	if start_listener "$dir/re2.out" "$sock" --count 6; then l2s=0; else l2s=1; fi
	printf '7\n8\n9\n' >&3
	exec 3>&-
	wait $snd; sst=$?
	finish_listener; l2=$?
	printf '1\n2\n3\n' >"$dir/re1.expect"
	printf '4\n5\n6\n7\n8\n9\n' >"$dir/re2.expect"
	last=$(tail -n 1 "$dir/re.err")
	if [ $sst -eq 0 ] && [ $l1 -eq 0 ] && [ $l2s -eq 0 ] && [ $l2 -eq 0 ] &&
	   cmp -s "$dir/re1.expect" "$dir/re1.out" && cmp -s "$dir/re2.expect" "$dir/re2.out" &&
	   [ "$last" = "bscat: sent 9 written 9 returned 0 maybe_lost 0" ] &&
	   [ -f "$dir/re.failed" ] && [ ! -s "$dir/re.failed" ] &&
	   grep -q 'connected to .* again' "$dir/re.err"; then
		ok "send --reconnect: every line once, in order, across two listeners"
	else
		fail "send --reconnect (send $sst, listeners $l1 $l2s $l2): $(cat "$dir/re.err")"
		diff "$dir/re1.expect" "$dir/re1.out"
		diff "$dir/re2.expect" "$dir/re2.out"
	fi
else
	fail "reconnect: listener did not start"
	finish_listener
fi

# --- send --reconnect --failed: nobody ever listens ------------------------
printf 'a\nb b\nc\n' | timeout $T "$BSCAT" send "unix:$dir/gone.sock" --reconnect --backoff 20 \
	--retries 2 --failed "$dir/gone.failed" 2>"$dir/gone.err"; sst=$?
printf 'a\nb b\nc\n' >"$dir/gone.expect"
last=$(tail -n 1 "$dir/gone.err")
if [ $sst -eq 1 ] && cmp -s "$dir/gone.expect" "$dir/gone.failed" &&
   [ "$last" = "bscat: sent 3 written 0 returned 3 maybe_lost 0" ] &&
   [ "$(grep -c 'down:' "$dir/gone.err")" -ge 1 ]; then
	ok "send --reconnect --failed: the lines handed back, one per line (exit 1)"
else
	fail "send --reconnect --failed: exit $sst: $(cat "$dir/gone.err")"
	diff "$dir/gone.expect" "$dir/gone.failed"
fi
printf '00ff\n 41 \n' | timeout $T "$BSCAT" send "unix:$dir/gone.sock" --hex --reconnect \
	--backoff 20 --retries 1 --failed "$dir/gonehex.failed" 2>"$dir/gonehex.err"; sst=$?
printf '00ff\n41\n' >"$dir/gonehex.expect"
if [ $sst -eq 1 ] && cmp -s "$dir/gonehex.expect" "$dir/gonehex.failed" &&
   [ "$(tail -n 1 "$dir/gonehex.err")" = "bscat: sent 2 written 0 returned 2 maybe_lost 0" ]; then
	ok "send --reconnect --failed --hex: handed back as hex"
else
	fail "send --reconnect --failed --hex: exit $sst: $(cat "$dir/gonehex.err")"
fi

# --- runtime errors exit 1 --------------------------------------------------
# expect_status WANT NAME CMD...: runs CMD with empty input.
expect_status() {
	want=$1 name=$2; shift 2
	timeout $T "$@" </dev/null >"$dir/st.out" 2>"$dir/st.err"; st=$?
	if [ $st -eq "$want" ]; then
		ok "$name (exit $st)"
	else
		fail "$name: exit $st, expected $want"
		cat "$dir/st.err"
	fi
}
expect_status 1 "send to a missing unix socket" "$BSCAT" send "unix:$dir/nobody.sock"

sock=unix:$dir/big.sock
if start_listener "$dir/big.out" "$sock" --max 4; then
	echo toolong | timeout $T "$BSCAT" send "$sock" --max 4 2>"$dir/big.err"; sst=$?
	kill "$listener" 2>/dev/null
	finish_listener
	if [ $sst -eq 1 ] && [ -s "$dir/big.err" ]; then
		ok "line longer than --max (exit 1)"
	else
		fail "line longer than --max: exit $sst"
	fi
else
	fail "big: listener did not start"
	finish_listener
fi

sock=unix:$dir/hex.sock
if start_listener "$dir/hex.out" "$sock"; then
	printf '41\nzz\n' | timeout $T "$BSCAT" send "$sock" --hex 2>"$dir/hex.err"; sst=$?
	kill "$listener" 2>/dev/null
	finish_listener
	if [ $sst -eq 1 ] && grep -q 'line 2: not hex' "$dir/hex.err"; then
		ok "bad hex rejected (exit 1)"
	else
		fail "bad hex: exit $sst: $(cat "$dir/hex.err")"
	fi
else
	fail "hex: listener did not start"
	finish_listener
fi

# --- usage errors exit 2, --help exits 0 ------------------------------------
expect_status 2 "no arguments" "$BSCAT"
expect_status 2 "unknown mode" "$BSCAT" frob "$sock"
expect_status 2 "missing address" "$BSCAT" listen
expect_status 2 "unknown framing" "$BSCAT" listen "$sock" --framing fixed9
expect_status 2 "--max beyond a fixed1 length" "$BSCAT" listen "$sock" --framing fixed1 --max 256
expect_status 2 "bad byte order" "$BSCAT" listen "$sock" --framing fixed4xx
expect_status 2 "bad --count" "$BSCAT" send "$sock" --count abc
expect_status 2 "bad --max" "$BSCAT" send "$sock" --max -5
expect_status 2 "missing option value" "$BSCAT" send "$sock" --max
expect_status 2 "unknown option" "$BSCAT" send "$sock" --frobnicate
expect_status 2 "--replies on listen" "$BSCAT" listen "$sock" --replies 1
expect_status 2 "extra argument" "$BSCAT" send "$sock" extra
expect_status 2 "--failed without --reconnect" "$BSCAT" send "$sock" --failed "$dir/x"
expect_status 2 "--reconnect on listen" "$BSCAT" listen "$sock" --reconnect
expect_status 2 "bad --backoff" "$BSCAT" send "$sock" --reconnect --backoff 0
expect_status 2 "bad --retries" "$BSCAT" send "$sock" --reconnect --retries x
expect_status 0 "--help" "$BSCAT" --help
if grep -q '^usage: bscat listen' "$dir/st.out"; then ok "--help prints usage"; else fail "--help output"; fi

if [ $fails -ne 0 ]; then
	echo "bscat_e2e: $fails check(s) failed"
	exit 1
fi
echo "bscat_e2e: all checks passed"
