#!/usr/bin/env bash
# Server CPU (user/system ms, from /proc/PID/stat) and throughput for 20 000 signed 4 KiB PUTs,
# 32 concurrent, 4 rounds, for limit-server or our demo server: where a small upload's time goes.
#
# usage: benches/tools/cpu_small.sh limit|/path/to/server     (LOG=warn by default)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/small_server.sh"
for rep in 1 2 3 4; do
  python3 "$ROOT/benches/tools/small_urls.py" "$URL" k123 "$rep" > "$W/urls"
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$PID/stat")
  out=$("$CLIENT" small --url-file "$W/urls" --size 4096 --count 20000 --concurrency 32)
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$PID/stat")
  tck=$(getconf CLK_TCK)
  echo "round $rep user=$(( (u1 - u0) * 1000 / tck ))ms sys=$(( (s1 - s0) * 1000 / tck ))ms $(grep -o '"req_per_s":[0-9.]*' <<< "$out")"
done
