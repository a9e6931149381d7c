#!/usr/bin/env bash
# End-to-end upload benchmark: our demo server against ../shared/bench's limit-server (the
# least work an HTTP server can do to land an upload on disk), and optionally nginx and
# rustus, in ONE run, interleaved, medians of BENCH_REPS repetitions, ratios to limit-server.
# Then tus: 1 GiB in 16 MiB PATCHes through our /tus against rustus (when installed),
# interleaved, medians of BENCH_REPS. Then a disk run of one chunked 1 GiB upload that reads
# the server's /proc/PID/io write_bytes (bytes it caused to be written) and prints the ratio
# to the file size.
#
# usage: benches/e2e.sh                 (limit, nginx and rustus when installed, project; all
#                                        four scenarios)
#        BENCH_SERVERS="limit project" benches/e2e.sh
# Needs ../shared/bench (the harness) beside this repository, or SHARED_BENCH=/path/to/bench.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
[[ -x $BENCH/peers.sh ]] || { echo "no harness at $BENCH (set SHARED_BENCH)" >&2; exit 2; }
KEY=bench-key-$RANDOM$RANDOM
SERVER=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/server

(cd "$ROOT" && cargo build --release --example server --quiet)
cargo build --release --quiet --manifest-path "$BENCH/limit-server/Cargo.toml"
cargo build --release --quiet --manifest-path "$BENCH/client/Cargo.toml"
CLIENT=$BENCH/client/target/release/upload-bench

# The peers take part when they are installed (nginx-light; `cargo install --locked rustus`).
PEERS=
command -v nginx >/dev/null && PEERS+=" nginx"
{ command -v rustus >/dev/null || [[ -n ${RUSTUS_BIN:-} ]]; } && PEERS+=" rustus"

echo "## Throughput (tmpfs unless BENCH_TMPDIR is set), ratio = server / limit-server"
# RUST_LOG=warn: no log line per request (the demo's default logs every published file at
# info level, ~12 µs of formatting and a write to stderr each); nginx runs with access_log off.
PROJECT_SERVER_CMD="env RUST_LOG=${PROJECT_RUST_LOG:-warn} $SERVER --listen 127.0.0.1:{port} --data {dir} --key $KEY --max-file-size 4294967296 --max-request-size 2147483648" \
PROJECT_SIGN_KEY=$KEY \
BENCH_SERVERS=${BENCH_SERVERS:-limit$PEERS project} \
BENCH_BUILD=0 \
"$BENCH/peers.sh"

echo
echo "## tus: 1 GiB in 16 MiB PATCHes, one at a time, ours against rustus (ratio = ours / rustus)"
RUSTUS=${RUSTUS_BIN:-$(command -v rustus || true)}
if [[ -z $RUSTUS || ! -x $RUSTUS ]]; then
  echo "skipped: no rustus (cargo install --locked rustus, or set RUSTUS_BIN)"
else
  TUS_WORK=$(mktemp -d "${BENCH_TMPDIR:-/dev/shm}/tusbench.XXXXXX")
  TUS_PIDS=()
  tus_cleanup() { for p in "${TUS_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TUS_WORK"; }
  (openssl enc -aes-128-ctr -pass pass:tus -nosalt -pbkdf2 -in /dev/zero 2>/dev/null || true) \
    | head -c "${BENCH_BIG_BYTES:-1073741824}" > "$TUS_WORK/tus.bin"
  mkdir -p "$TUS_WORK/ours" "$TUS_WORK/rustus/data" "$TUS_WORK/rustus/info"
  env RUST_LOG=warn "$SERVER" --listen 127.0.0.1:0 --data "$TUS_WORK/ours" --key "$KEY" \
    --max-file-size 4294967296 --max-request-size 2147483648 > "$TUS_WORK/ours.log" 2>&1 &
  TUS_PIDS+=($!)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  (cd "$TUS_WORK/rustus" && exec "$RUSTUS" --host 127.0.0.1 --port "$port" --url /files \
    --storage file-storage --data-dir "$TUS_WORK/rustus/data" \
    --info-storage file-info-storage --info-dir "$TUS_WORK/rustus/info" \
    --max-body-size $((2 * 16777216)) --log-level ERROR) > "$TUS_WORK/rustus.log" 2>&1 &
  TUS_PIDS+=($!)
  for _ in $(seq 100); do grep -q "listening on" "$TUS_WORK/ours.log" && break; sleep 0.05; done
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  OURS=$(grep -o 'http://[0-9.:]*' "$TUS_WORK/ours.log" | head -1)/tus
  THEIRS=http://127.0.0.1:$port/files/
  tus_run() { # label url [header]: prints MB/s
    local out
    if [[ -n ${3:-} ]]; then
      out=$("$CLIENT" tus --url "$2" --file "$TUS_WORK/tus.bin" --chunk-size 16777216 --header "$3")
    else
      out=$("$CLIENT" tus --url "$2" --file "$TUS_WORK/tus.bin" --chunk-size 16777216)
    fi
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert not r.get("failed"), r; print(r["mb_per_s"])' "$out"
  }
  ours=() theirs=()
  for rep in $(seq "${TUS_REPS:-${BENCH_REPS:-3}}"); do
    if ((rep % 2)); then
      ours+=("$(tus_run ours "$OURS" "Authorization: Bearer $KEY")")
      theirs+=("$(tus_run rustus "$THEIRS")")
    else
      theirs+=("$(tus_run rustus "$THEIRS")")
      ours+=("$(tus_run ours "$OURS" "Authorization: Bearer $KEY")")
    fi
    cmp -s "$TUS_WORK/tus.bin" "$TUS_WORK/ours/tus.bin" || { echo "our stored file differs" >&2; tus_cleanup; exit 1; }
    rm -f "$TUS_WORK/ours/tus.bin"
    find "$TUS_WORK/rustus/data" "$TUS_WORK/rustus/info" -mindepth 1 -delete
  done
  python3 - "${ours[*]}" "${theirs[*]}" <<'PY'
import statistics, sys
o = [float(x) for x in sys.argv[1].split()]
t = [float(x) for x in sys.argv[2].split()]
mo, mt = statistics.median(o), statistics.median(t)
print(f"ours   MB/s: {' '.join(f'{x:.0f}' for x in o)}  median {mo:.0f}")
print(f"rustus MB/s: {' '.join(f'{x:.0f}' for x in t)}  median {mt:.0f}")
print(f"ratio ours / rustus: {mo / mt:.2f}")
PY
  tus_cleanup
fi

echo
echo "## Bytes written to disk by the server for one chunked upload (write_bytes / file size)"
SIZE=${DISK_BYTES:-1073741824}
WORK=$(mktemp -d "${DISK_TMPDIR:-$ROOT/target}/diskbench.XXXXXX")
PID=
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
# Fast incompressible payload (head closing the pipe ends openssl with SIGPIPE: expected).
(openssl enc -aes-128-ctr -pass pass:bench -nosalt -pbkdf2 -in /dev/zero 2>/dev/null || true) \
  | head -c "$SIZE" > "$WORK/payload"
"$SERVER" --listen 127.0.0.1:0 --data "$WORK/data" --key "$KEY" --max-file-size 4294967296 > "$WORK/log" 2>&1 &
PID=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/log" && break; sleep 0.05; done
URL=$(grep -o 'http://[0-9.:]*' "$WORK/log" | head -1)
before=$(awk '/^write_bytes/{print $2}' "/proc/$PID/io")
for p in 1 4; do
  "$CLIENT" chunks --url "$URL/disk-p$p.bin" --file "$WORK/payload" --chunk-size 16777216 \
    --parallel "$p" --header "Authorization: Bearer $KEY"
  after=$(awk '/^write_bytes/{print $2}' "/proc/$PID/io")
  cmp -s "$WORK/payload" "$WORK/data/disk-p$p.bin" || { echo "stored file differs" >&2; exit 1; }
  python3 -c "import sys; w=$after-$before; print(f'parallel $p: write_bytes={w} file={$SIZE} ratio={w/$SIZE:.4f}')"
  sync
  before=$(awk '/^write_bytes/{print $2}' "/proc/$PID/io")
  rm -f "$WORK/data/disk-p$p.bin"
done
