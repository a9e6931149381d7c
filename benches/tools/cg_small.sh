#!/usr/bin/env bash
# User-space instructions per small upload, counted by callgrind: repeatable to ~0.5 % for
# the same binary (90,234 and 90,339; 87,528 and 87,865), whatever else the machine does
# (throughput on this VM swings by ±10 % between runs). Starts the server under valgrind,
# sends 200 signed 4 KiB PUTs to warm up, zeroes the counters, sends N more (4 concurrent),
# dumps, and prints the total divided by N. The profile stays in /tmp/cg-<binary name>.out
# for callgrind_annotate.
#
# Caveat: valgrind hides the CPU's SHA extensions, so sha2 runs its portable code under it and
# SHA-256 (signature, ids, etag) counts ~20 000 instructions per PUT that the real CPU does in
# a fraction of that. Compare builds with each other, not with the machine's time.
#
# usage: benches/tools/cg_small.sh limit|/path/to/server [N=1000]
set -euo pipefail
N=${2:-1000}
WRAP="valgrind --tool=callgrind" STARTUP=40 source "$(dirname "${BASH_SOURCE[0]}")/small_server.sh"
python3 "$ROOT/benches/tools/small_urls.py" "$URL" k123 1 > "$W/all"
head -200 "$W/all" > "$W/urls"
"$CLIENT" small --url-file "$W/urls" --size 4096 --count 200 --concurrency 4 > /dev/null
callgrind_control -z "$PID" > /dev/null 2>&1
python3 "$ROOT/benches/tools/small_urls.py" "$URL" k123 2 > "$W/all"
head -"$N" "$W/all" > "$W/urls"
"$CLIENT" small --url-file "$W/urls" --size 4096 --count "$N" --concurrency 4 > /dev/null
callgrind_control -d "$PID" > /dev/null 2>&1
sleep 0.5
total=$(awk '/^summary:/ {print $2; exit}' "$W/callgrind.out.$PID.1")
echo "$(basename "$1"): $((total / N)) instructions per request"
cp "$W/callgrind.out.$PID.1" "/tmp/cg-$(basename "$1").out"
