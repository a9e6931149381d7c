#!/usr/bin/env bash
# Requests and bytes one 1 GiB resumable upload (64 chunks of 16 MiB) costs on S3, measured
# on Garage's side (its Prometheus metrics: S3 requests per endpoint, block bytes written and
# read) around the upload. Not part of CI (it moves 3 GiB); run by hand:
#
#   cargo build --features object-store --example server && tests/garage/measure_1gib.sh
#
# Env: SERVER (default target/debug/examples/server, or $CARGO_TARGET_DIR/debug/…),
# SIZE_MIB (1024), CHUNK_MIB (16).
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${SIZE_MIB:-1024}
CHUNK_MIB=${CHUNK_MIB:-16}
SERVER=${SERVER:-${CARGO_TARGET_DIR:-target}/debug/examples/server}
work=$(mktemp -d /tmp/measure-XXXXXX)
trap 'kill ${srv_pid:-} 2>/dev/null || true; rm -rf "$work"' EXIT

eval "$(tests/garage/start.sh --dir "$work/garage" --watch $$)"
metrics() {
  curl -sf -H "Authorization: Bearer $GARAGE_METRICS_TOKEN" "$GARAGE_ADMIN/metrics" |
    grep -E '^(api_s3_request_counter|block_bytes_written|block_bytes_read)' | sort
}

"$SERVER" --listen 127.0.0.1:0 --key measure --store "$TOWER_UPLOADS_TEST_S3/measure" >"$work/server.out" 2>"$work/server.err" &
srv_pid=$!
for _ in $(seq 1 100); do grep -q listening "$work/server.out" 2>/dev/null && break; sleep 0.1; done
base=$(sed -n 's/^listening on //p' "$work/server.out")

head -c $((SIZE_MIB << 20)) /dev/urandom >"$work/file"
want=$(sha256sum "$work/file" | cut -d' ' -f1)
total=$((SIZE_MIB << 20))
chunk=$((CHUNK_MIB << 20))

metrics >"$work/before"
codes=()
for ((start = 0; start < total; start += chunk)); do
  end=$((start + chunk < total ? start + chunk : total))
  code=$(dd if="$work/file" bs=1M skip=$((start >> 20)) count=$(((end - start) >> 20)) status=none |
    curl -s -o /dev/null -w '%{http_code}' -X PUT "$base/big.bin" -H 'Authorization: Bearer measure' \
      -H "Content-Range: bytes $start-$((end - 1))/$total" --data-binary @-)
  codes+=("$code")
done
metrics >"$work/after"
got=$(curl -sf "$base/big.bin" | sha256sum | cut -d' ' -f1)

echo "upload: ${SIZE_MIB} MiB in ${CHUNK_MIB} MiB chunks; answers: $(printf '%s\n' "${codes[@]}" | sort | uniq -c | tr '\n' ' ')"
[[ $got == "$want" ]] && echo "sha256 ok ($want)" || { echo "sha256 MISMATCH: $got != $want"; exit 1; }
echo "Garage metrics, after minus before (the upload only; the GET above is not counted):"
join -a2 -e 0 -o 0,1.2,2.2 <(sed 's/ \([0-9.e+]*\)$/\t\1/' "$work/before" | tr ' ' '_' | sort) \
  <(sed 's/ \([0-9.e+]*\)$/\t\1/' "$work/after" | tr ' ' '_' | sort) -t $'\t' |
  awk -F'\t' '{ d = $3 - $2; if (d != 0) { printf "  %-90s %d\n", $1, d; if ($1 ~ /^api_s3_request_counter/) n += d } }
    END { printf "  %-90s %d\n", "TOTAL S3 requests", n }'
