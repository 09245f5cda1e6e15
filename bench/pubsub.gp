# The pub/sub benchmark's chart: gnuplot -e "data='...'; out='...'; title='...'" pubsub.gp
# Reads the medians bench/pubsub.sh writes, one row per load and server:
#   panel load_index server_index "load" "server" deliveries_per_s p99_us
# panel 1: the three servers on the three loads; panel 2: across nodes
# against one node. Draws deliveries/s (top) and p99 latency (bottom).

if (!exists("data")) data = "chart.dat"
if (!exists("out")) out = "pubsub.png"
if (!exists("title")) title = "pub/sub benchmark"

set terminal pngcairo size 1600,900 font ",10" noenhanced
set output out

set style fill solid 0.85 border -1
set boxwidth 0.26
set grid ytics
set key top right
set yrange [0:*]
set offsets 0, 0, graph 0.2, 0 # room for the key above the bars
set xtics nomirror scale 0
set format y "%.1s%c"
colour(s) = s == 1 ? 0xc0392b : s == 2 ? 0x2c3e50 : 0xe67e22
x(l, s, n) = l + (s - (n + 1) / 2.0) * 0.28
name1(s) = s == 1 ? "pubsub_server" : s == 2 ? "nats-server" : "redis-server"
name2(s) = s == 1 ? "one node" : "node 1 -> node 2 over NATS"
loads1 = "set xtics ('1 pub -> 1000 subs' 1, '4 pubs, 100 topics x 10 subs' 2, '1 pub -> 100 + 1 stalled' 3)"
loads2 = "set xtics ('1 pub -> 1000 subs' 1, '4 pubs, 100 topics x 10 subs' 2)"

set multiplot layout 2,2 title title font ",12"

set title "deliveries/s (higher is better)"
set xrange [0.4:3.6]
@loads1
plot for [s=1:3] data using ($1 == 1 && $3 == s ? x($2, s, 3) : 1/0):6:(colour(s)) \
	with boxes lc rgb variable title name1(s)

set title "across nodes: deliveries/s"
set xrange [0.4:2.6]
@loads2
plot for [s=1:2] data using ($1 == 2 && $3 == s ? x($2, s, 2) : 1/0):6:(colour(s)) \
	with boxes lc rgb variable title name2(s)

set title "p99 latency, us (lower is better)"
set xrange [0.4:3.6]
@loads1
plot for [s=1:3] data using ($1 == 1 && $3 == s ? x($2, s, 3) : 1/0):7:(colour(s)) \
	with boxes lc rgb variable title name1(s)

set title "across nodes: p99 latency, us"
set xrange [0.4:2.6]
@loads2
plot for [s=1:2] data using ($1 == 2 && $3 == s ? x($2, s, 2) : 1/0):7:(colour(s)) \
	with boxes lc rgb variable title name2(s)

unset multiplot
