#!/usr/bin/env bash
# Heap allocations per small upload: counts glibc malloc/realloc calls in the server (perf
# uprobes on libc) during N signed 4 KiB PUTs, 4 concurrent, after 100 to warm up.
# Needs root (perf probe). Used for PERFORMANCE.md's "allocations per request" figures.
#
# usage: benches/tools/alloc_small.sh limit|/path/to/server [N=2000]
set -euo pipefail
LIBC=$(ldconfig -p | awk '/libc.so.6 .*x86-64/ {print $NF; exit}')
N=${2:-2000}
for f in malloc realloc; do
  perf probe -l 2>/dev/null | grep -q "probe_libc:$f " || perf probe -q -x "$LIBC" "$f" >/dev/null
done
source "$(dirname "${BASH_SOURCE[0]}")/small_server.sh"
python3 "$ROOT/benches/tools/small_urls.py" "$URL" k123 1 > "$W/all"
head -100 "$W/all" > "$W/urls"
"$CLIENT" small --url-file "$W/urls" --size 4096 --count 100 --concurrency 4 > /dev/null
python3 "$ROOT/benches/tools/small_urls.py" "$URL" k123 2 > "$W/all"
head -"$N" "$W/all" > "$W/urls"
perf stat -e probe_libc:malloc,probe_libc:realloc -p "$PID" -o "$W/stat" &
STAT=$!
sleep 0.3
"$CLIENT" small --url-file "$W/urls" --size 4096 --count "$N" --concurrency 4 > /dev/null
sleep 0.2
kill -INT "$STAT"; wait "$STAT" || true
awk -v n="$N" '/probe_libc/ {gsub(",", "", $1); printf "%s: %.1f per request\n", $2, $1 / n}' "$W/stat"
