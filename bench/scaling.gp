# Scaling curves of the benchmark run: gnuplot -e "dir='...'; title='...'" scaling.gp
# Reads dir/curve-{size,threads,conns}-{lib,lib-more,base}.dat, written by
# run.sh as rows of
#   x  msgs_per_s  mb_per_s  msgs_per_cpu_s  ratio_msgs_per_s  ratio_msgs_per_cpu_s
# and draws dir/scaling.png. Panels without data say so instead of failing.

if (!exists("dir")) dir = "."
if (!exists("title")) title = "buffstreams vs plain sockets"

set terminal pngcairo size 1800,1000 font ",10" noenhanced
set output dir."/scaling.png"

nonempty(f) = int(system(sprintf("test -s '%s' && echo 1 || echo 0", f)))
f(c, im) = sprintf("%s/curve-%s-%s.dat", dir, c, im)

set style line 1 lc rgb "#c0392b" lw 2 pt 7 ps 1.2
set style line 2 lc rgb "#2c3e50" lw 2 pt 5 ps 1.2 dt 2
set style line 3 lc rgb "#e67e22" lw 2 pt 9 ps 1.2
set style line 4 lc rgb "#c0392b" lw 1.5 pt 6 ps 1.2 dt 3
set style line 5 lc rgb "#e67e22" lw 1.5 pt 8 ps 1.2 dt 3
set grid
set key top left
set multiplot layout 2,3 title title font ",13"

# One plot element per implementation that has data; "" when none has.
line(c, im, col, ls, t) = nonempty(f(c, im)) ? \
	sprintf("'%s' using 1:%d with linespoints ls %d title '%s', ", f(c, im), col, ls, t) : ""
strip(s) = strlen(s) > 2 ? s[1:strlen(s) - 2] : ""
panel(c, col) = strip(line(c, "lib", col, 1, "buffstreams") . \
	line(c, "lib-more", col, 3, "buffstreams, replies batched with BS_SEND_MORE") . \
	line(c, "base", col, 2, "plain sockets"))
ratios(c) = strip(line(c, "lib", 5, 1, "buffstreams: messages/s") . \
	line(c, "lib", 6, 4, "buffstreams: messages per CPU-second") . \
	line(c, "lib-more", 5, 3, "BS_SEND_MORE: messages/s") . \
	line(c, "lib-more", 6, 5, "BS_SEND_MORE: messages per CPU-second"))
empty = "[0:1][0:1] NaN notitle"
draw(cmd) = strlen(cmd) ? cmd : empty

# ---- row 1: ingest over one connection, by message size
set title "ingest, one connection: messages/s by message size"
set logscale xy 2
set xlabel "payload bytes"
set ylabel "messages/s"
set format y "%.1s%c"
eval("plot ".draw(panel("size", 2)))

set title "ingest, one connection: MB/s by message size"
unset logscale y
set ylabel "MB/s (payload)"
set yrange [0:*]
set format y "%g"
eval("plot ".draw(panel("size", 3)))

set title "ingest: library / baseline by message size"
set ylabel "ratio (1 = same as plain sockets)"
set yrange [0:1.2<*]
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead lc rgb "#7f8c8d" lw 1
eval("plot ".draw(ratios("size")))
unset arrow 1

# ---- row 2: draining threads and connections
set title "ingest, 4 connections, 110 B: messages/s by draining threads"
unset logscale
set logscale x 2
set format y "%.1s%c"
set xlabel "application threads draining (baseline: one reader per connection)"
set ylabel "messages/s"
eval("plot ".draw(panel("threads", 2)))

set title "echo, window of 8 in flight: round trips/s by connections"
set logscale x 10
set xlabel "connections"
set ylabel "round trips/s"
eval("plot ".draw(panel("conns", 2)))

set title "echo: library / baseline by connections"
set ylabel "ratio (1 = same as plain sockets)"
set yrange [0:1.2<*]
set format y "%g"
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead lc rgb "#7f8c8d" lw 1
eval("plot ".draw(ratios("conns")))
unset arrow 1

unset multiplot
