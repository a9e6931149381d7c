#!/usr/bin/env bash
# Requests and bytes one 1 GiB resumable upload (64 chunks of 16 MiB) costs on S3, measured
# on Garage's side (its Prometheus metrics: S3 requests per endpoint, bytes of request
# bodies received, block bytes written and read) around the upload, through the demo server
# with its records in a throwaway PostgreSQL (`--coordinator`, tests/postgres/start.sh).
# Not part of CI; run by hand:
#
#   cargo build --features object-store,postgres --example server && tests/garage/measure_1gib.sh
#
# Env: SERVER (default target/debug/examples/server, or $CARGO_TARGET_DIR/debug/…),
# SIZE_MIB (1024), CHUNK_MIB (16; 4 is below S3's smallest part: the fallback),
# PARALLEL (1: chunks one at a time; 4: four at a time).
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${SIZE_MIB:-1024}
CHUNK_MIB=${CHUNK_MIB:-16}
PARALLEL=${PARALLEL:-1}
SERVER=${SERVER:-${CARGO_TARGET_DIR:-target}/debug/examples/server}
work=$(mktemp -d /tmp/measure-XXXXXX)
trap 'kill ${srv_pid:-} 2>/dev/null || true; rm -rf "$work"' EXIT

eval "$(tests/garage/start.sh --dir "$work/garage" --watch $$)"
eval "$(tests/postgres/start.sh --watch $$)"
metrics() {
  curl -sf -H "Authorization: Bearer $GARAGE_METRICS_TOKEN" "$GARAGE_ADMIN/metrics" |
    { grep -E '^(api_s3_request_counter|api_s3_request_body_bytes|block_bytes_written|block_bytes_read)' || true; } | sort
}

"$SERVER" --listen 127.0.0.1:0 --key measure --store "$TOWER_UPLOADS_TEST_S3/measure" \
  --coordinator "$TOWER_UPLOADS_TEST_PG" >"$work/server.out" 2>"$work/server.err" &
srv_pid=$!
for _ in $(seq 1 100); do grep -q listening "$work/server.out" 2>/dev/null && break; sleep 0.1; done
base=$(sed -n 's/^listening on //p' "$work/server.out")

head -c $((SIZE_MIB << 20)) /dev/urandom >"$work/file"
want=$(sha256sum "$work/file" | cut -d' ' -f1)
total=$((SIZE_MIB << 20))
chunk=$((CHUNK_MIB << 20))

send() { # start end: one chunk; its answer's status into $work/code.<start>
  dd if="$work/file" bs=1M skip=$(($1 >> 20)) count=$((($2 - $1) >> 20)) status=none |
    curl -s -o /dev/null -w '%{http_code}' -X PUT "$base/big.bin" -H 'Authorization: Bearer measure' \
      -H "Content-Range: bytes $1-$(($2 - 1))/$total" --data-binary @- >"$work/code.$1"
}
io() { awk '/^wchar/ { print $2 }' "/proc/$srv_pid/io"; }
metrics >"$work/before"
wchar0=$(io)
( # a subshell: its `wait` waits for the chunks, not for the server
  running=0
  for ((start = 0; start < total; start += chunk)); do
    end=$((start + chunk < total ? start + chunk : total))
    send "$start" "$end" &
    running=$((running + 1))
    if ((running >= PARALLEL)); then
      wait -n
      running=$((running - 1))
    fi
  done
  wait
)
metrics >"$work/after"
wchar1=$(io)
codes=()
for f in "$work"/code.*; do codes+=("$(cat "$f")"); done
got=$(curl -sf "$base/big.bin" | sha256sum | cut -d' ' -f1)

echo "upload: ${SIZE_MIB} MiB in ${CHUNK_MIB} MiB chunks, ${PARALLEL} at a time; answers: $(printf '%s\n' "${codes[@]}" | sort | uniq -c | tr '\n' ' ')"
[[ $got == "$want" ]] && echo "sha256 ok ($want)" || { echo "sha256 MISMATCH: $got != $want"; exit 1; }
echo "Bytes the server wrote (/proc/PID/io wchar: to Garage, plus a few KiB to PostgreSQL and"
echo "its answers to curl): $((wchar1 - wchar0))"
echo "Garage metrics, after minus before (the upload only; the GET above is not counted):"
join -a2 -e 0 -o 0,1.2,2.2 <(sed 's/ \([0-9.e+]*\)$/\t\1/' "$work/before" | tr ' ' '_' | sort) \
  <(sed 's/ \([0-9.e+]*\)$/\t\1/' "$work/after" | tr ' ' '_' | sort) -t $'\t' |
  awk -F'\t' '{ d = $3 - $2; if (d != 0) { printf "  %-90s %d\n", $1, d; if ($1 ~ /^api_s3_request_counter/) n += d } }
    END { printf "  %-90s %d\n", "TOTAL S3 requests", n }'
