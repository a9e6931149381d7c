#!/usr/bin/env bash
# Interleaved A/B of server binaries (and limit-server) on one upload scenario: each round runs
# every server once, in the given order; prints MiB/s (or req/s) and the server's CPU time
# (user/system, from /proc/PID/stat) per round, and each server's VmHWM.
# Used for the "what each change bought" rows of PERFORMANCE.md (ratios to limit-server from
# the same rounds, medians of the rounds).
#
# usage: benches/tools/ab.sh put|1|4|small limit /path/to/server-a /path/to/server-b ...
#        (small: 20 000 signed 4 KiB PUTs, 32 concurrent, req/s; the others 1 GiB, MiB/s)
#        ROUNDS=6 (default 3)  ABDIR=/tmp (default /dev/shm: where payload and files live)
# Each non-limit binary is the demo server (`cargo build --release --example server`, copied).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
CLIENT=$BENCH/client/target/release/upload-bench
LIMIT=$BENCH/limit-server/target/release/limit-server
MODE=$1; shift
W=$(mktemp -d "${ABDIR:-/dev/shm}/ab.XXXX")
declare -A URL PIDS
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
[[ $MODE == small ]] || head -c 1073741824 /dev/urandom > "$W/payload"
i=0
for b in "$@"; do
  i=$((i + 1)); d=$W/s$i; mkdir -p "$d"
  if [[ $b == limit ]]; then
    "$LIMIT" --listen 127.0.0.1:0 --dir "$d/data" > "$d/log" 2>&1 &
  else
    env RUST_LOG=warn "$b" --listen 127.0.0.1:0 --data "$d/data" --key k1 \
      --max-file-size 4294967296 --max-request-size 2147483648 > "$d/log" 2>&1 &
  fi
  PIDS[$i]=$!
  for _ in $(seq 100); do grep -q "listening on" "$d/log" && break; sleep 0.05; done
  URL[$i]=$(grep -o 'http://[0-9.:]*' "$d/log" | head -1)
done
TCK=$(getconf CLK_TCK)
# The server's CPU time (user/system, ms) since u0/s0 (clock ticks, /proc/PID/stat).
cpu() {
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/${PIDS[$1]}/stat")
  echo "user=$(( ($u1 - $2) * 1000 / TCK ))ms sys=$(( ($s1 - $3) * 1000 / TCK ))ms"
}
for r in $(seq "${ROUNDS:-3}"); do
  i=0
  for b in "$@"; do
    i=$((i + 1))
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/${PIDS[$i]}/stat")
    if [[ $MODE == small ]]; then
      python3 "$ROOT/benches/tools/small_urls.py" "${URL[$i]}" k1 "$r" > "$W/urls"
      out=$("$CLIENT" small --url-file "$W/urls" --size 4096 --count 20000 --concurrency 32)
      rm -rf "$W/s$i/data/small"
      echo "$(basename "$b") round $r $(grep -o '"req_per_s":[0-9]*' <<< "$out") $(cpu "$i" "$u0" "$s0")"
      continue
    elif [[ $MODE == put ]]; then
      out=$("$CLIENT" put --url "${URL[$i]}/r$r.bin" --file "$W/payload" --header "Authorization: Bearer k1")
    else
      out=$("$CLIENT" chunks --url "${URL[$i]}/r$r.bin" --file "$W/payload" --chunk-size 16777216 \
        --parallel "$MODE" --header "Authorization: Bearer k1")
    fi
    rm -f "$W/s$i/data/r$r.bin"
    echo "$(basename "$b") round $r $(grep -o '"mb_per_s":[0-9]*' <<< "$out") $(cpu "$i" "$u0" "$s0")"
  done
done
i=0
for b in "$@"; do i=$((i + 1)); echo "$(basename "$b") $(grep VmHWM "/proc/${PIDS[$i]}/status")"; done
