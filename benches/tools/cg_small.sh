#!/usr/bin/env bash
# User-space instructions per small upload, counted by callgrind: repeatable to a few parts in
# ten thousand for the same binary, whatever else the machine does (throughput on this VM
# swings by ±10 % between runs). Starts the server under valgrind, sends 200 signed 4 KiB PUTs
# to warm up, zeroes the counters, sends N more (4 concurrent), dumps, and prints the total
# divided by N. The profile stays in /tmp/cg-<binary name>.out for callgrind_annotate.
#
# Caveat: valgrind hides the CPU's SHA extensions, so sha2 runs its portable code under it and
# SHA-256 (signature, ids, etag) counts ~20 000 instructions per PUT that the real CPU does in
# a fraction of that. Compare builds with each other, not with the machine's time.
#
# usage: benches/tools/cg_small.sh limit|/path/to/server [N=1000]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
CLIENT=$BENCH/client/target/release/upload-bench
BIN=$1
N=${2:-1000}
W=$(mktemp -d /dev/shm/cg.XXXX)
PID=
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
cd "$W"
if [[ $BIN == limit ]]; then
  valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" \
    "$BENCH/limit-server/target/release/limit-server" --listen 127.0.0.1:0 --dir "$W/data" \
    > "$W/log" 2>&1 &
else
  env RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" \
    "$BIN" --listen 127.0.0.1:0 --data "$W/data" --key k123 > "$W/log" 2>&1 &
fi
PID=$!
for _ in $(seq 400); do grep -q "listening on" "$W/log" && break; sleep 0.1; done
URL=$(grep -o 'http://[0-9.:]*' "$W/log" | head -1)
python3 "$ROOT/benches/tools/small_urls.py" "$URL" k123 1 > "$W/all"
head -200 "$W/all" > "$W/urls"
"$CLIENT" small --url-file "$W/urls" --size 4096 --count 200 --concurrency 4 > /dev/null
callgrind_control -z "$PID" > /dev/null 2>&1
python3 "$ROOT/benches/tools/small_urls.py" "$URL" k123 2 > "$W/all"
head -"$N" "$W/all" > "$W/urls"
"$CLIENT" small --url-file "$W/urls" --size 4096 --count "$N" --concurrency 4 > /dev/null
callgrind_control -d "$PID" > /dev/null 2>&1
sleep 0.5
total=$(awk '/^summary:/ {print $2; exit}' "$W/cg.out.1")
echo "$(basename "$BIN"): $((total / N)) instructions per request"
cp "$W/cg.out.1" "/tmp/cg-$(basename "$BIN").out"
