#!/usr/bin/env bash
# Server CPU (user/system ms, from /proc/PID/stat) and throughput for 20 000 signed 4 KiB PUTs,
# 32 concurrent, 4 rounds, for limit-server or our demo server: where a small upload's time goes.
#
# usage: benches/tools/cpu_small.sh limit|/path/to/server     (LOG=warn by default)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
CLIENT=$BENCH/client/target/release/upload-bench
W=$(mktemp -d /dev/shm/cpu.XXXX)
PID=
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
if [[ $1 == limit ]]; then
  "$BENCH/limit-server/target/release/limit-server" --listen 127.0.0.1:0 --dir "$W/data" > "$W/log" 2>&1 &
else
  env RUST_LOG="${LOG:-warn}" "$1" --listen 127.0.0.1:0 --data "$W/data" --key k123 > "$W/log" 2>&1 &
fi
PID=$!
for _ in $(seq 100); do grep -q "listening on" "$W/log" && break; sleep 0.05; done
URL=$(grep -o 'http://[0-9.:]*' "$W/log" | head -1)
for rep in 1 2 3 4; do
  python3 "$ROOT/benches/tools/small_urls.py" "$URL" k123 "$rep" > "$W/urls"
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$PID/stat")
  out=$("$CLIENT" small --url-file "$W/urls" --size 4096 --count 20000 --concurrency 32)
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$PID/stat")
  tck=$(getconf CLK_TCK)
  echo "round $rep user=$(( (u1 - u0) * 1000 / tck ))ms sys=$(( (s1 - s0) * 1000 / tck ))ms $(grep -o '"req_per_s":[0-9.]*' <<< "$out")"
done
