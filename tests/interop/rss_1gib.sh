#!/usr/bin/env bash
# Memory does not grow with file size (PROTOCOL.md §3, §8): one 1 GiB PUT and one 1 GiB GET
# against the release examples/server, comparing the server's peak RSS (VmHWM) with its idle
# RSS (VmRSS before any request). Fails when the growth exceeds RSS_LIMIT_KIB (32 MiB), when
# an answer is not 201/200, or when the stored bytes differ from the source.
#
# Work dir (source file + the server's --data): /dev/shm when it has >= 3 GiB free, else
# <target>/. Everything is removed on exit.
#
# Environment: CARGO_TARGET_DIR (default <repo>/target), RSS_BUILD=0 skips `cargo build`,
# RSS_BYTES (default 1073741824), RSS_LIMIT_KIB (default 32768).
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
SERVER=$TARGET/release/examples/server
KEY=rss_1gib_key_0123456789
BYTES=${RSS_BYTES:-1073741824}
LIMIT_KIB=${RSS_LIMIT_KIB:-32768}
URL_PATH=rss/big.bin

if [[ ${RSS_BUILD:-1} != 0 ]]; then
  cargo build --release --example server
fi
[[ -x $SERVER ]] || { echo "rss_1gib: $SERVER not found" >&2; exit 1; }

need=$((3 * 1024 * 1024 * 1024))
if [[ -d /dev/shm ]] && (($(df --output=avail -B1 /dev/shm | tail -n1) >= need)); then
  PARENT=/dev/shm
else
  PARENT=$TARGET
fi
WORK=$(mktemp -d "$PARENT/rss-1gib.XXXXXX")
DATA=$WORK/data
SRC=$WORK/source.bin
LOG=$WORK/server.log
mkdir -p "$DATA"

SERVER_PID=
cleanup() {
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

status_kib() { # status_kib FIELD: VmRSS / VmHWM of the server, in KiB
  awk -v f="$1:" '$1 == f { print $2 }' "/proc/$SERVER_PID/status"
}
mib_s() { # bytes/s -> MiB/s
  awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'
}

echo "rss_1gib: work dir $WORK"
t0=$(date +%s%N)
if command -v openssl >/dev/null 2>&1; then
  # AES-CTR keystream: incompressible like urandom, several times faster
  { openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:rss$$$RANDOM" </dev/zero 2>/dev/null || true; } |
    head -c "$BYTES" >"$SRC"
else
  head -c "$BYTES" /dev/urandom >"$SRC"
fi
[[ $(stat -c %s "$SRC") == "$BYTES" ]] || { echo "rss_1gib: could not generate $BYTES bytes" >&2; exit 1; }
echo "rss_1gib: generated $BYTES random bytes in $((($(date +%s%N) - t0) / 1000000)) ms"

# --- server ----------------------------------------------------------------------------------
for attempt in 1 2 3; do
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$SERVER" --listen "127.0.0.1:$PORT" --data "$DATA" --key "$KEY" \
    --max-file-size 2147483648 --max-request-size 2147483648 >"$LOG" 2>&1 &
  SERVER_PID=$!
  up=0
  for _ in $(seq 1 300); do
    if grep -q "listening on" "$LOG"; then up=1; break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  ((up)) && break
  echo "rss_1gib: server did not come up (attempt $attempt); its output:" >&2
  sed 's/^/  | /' "$LOG" >&2
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
done
[[ -n $SERVER_PID ]] || exit 1
URL=http://127.0.0.1:$PORT/$URL_PATH
echo "rss_1gib: server pid $SERVER_PID: $(grep -m1 'listening on' "$LOG")"

sleep 0.5
idle=$(status_kib VmRSS)
echo "rss_1gib: idle VmRSS ${idle} KiB"

fail=0
# --- upload ----------------------------------------------------------------------------------
read -r code speed_up < <(curl -sS -T "$SRC" -H "Authorization: Bearer $KEY" -H "Expect:" \
  -H "Content-Type: application/octet-stream" -o "$WORK/put.json" \
  -w '%{http_code} %{speed_upload}\n' "$URL")
after_put=$(status_kib VmRSS)
echo "rss_1gib: PUT $URL -> $code, $(mib_s "$speed_up") MiB/s (VmRSS after: ${after_put} KiB)"
if [[ $code != 201 ]]; then
  echo "rss_1gib: FAIL: PUT answered $code: $(head -c 600 "$WORK/put.json")" >&2
  fail=1
elif ! python3 - "$WORK/put.json" "$BYTES" <<'EOF'; then
import json, sys
j = json.load(open(sys.argv[1]))
f = j["data"] if isinstance(j.get("data"), dict) else j
ok = f.get("filesize") == int(sys.argv[2])
print(f"rss_1gib: File object: filesize {f.get('filesize')}, kind {f.get('kind')}, type {f.get('type')}")
sys.exit(0 if ok else 1)
EOF
  echo "rss_1gib: FAIL: File object's filesize is not $BYTES" >&2
  fail=1
fi

# --- download --------------------------------------------------------------------------------
read -r code speed_down size_down < <(curl -sS -o /dev/null \
  -w '%{http_code} %{speed_download} %{size_download}\n' "$URL")
echo "rss_1gib: GET $URL -> $code, $size_down bytes, $(mib_s "$speed_down") MiB/s"
if [[ $code != 200 || $size_down != "$BYTES" ]]; then
  echo "rss_1gib: FAIL: GET answered $code with $size_down bytes" >&2
  fail=1
fi

# --- memory (read before anything else can disturb the server) -------------------------------
peak=$(status_kib VmHWM)
now=$(status_kib VmRSS)
growth=$((peak - idle))

# --- bytes -----------------------------------------------------------------------------------
STORED=$DATA/$URL_PATH
if [[ -f $STORED ]]; then
  src_sum=$(sha256sum "$SRC" | cut -d' ' -f1)
  stored_sum=$(sha256sum "$STORED" | cut -d' ' -f1)
  echo "rss_1gib: sha256 source $src_sum"
  echo "rss_1gib: sha256 stored $stored_sum"
  if [[ $src_sum != "$stored_sum" ]]; then
    echo "rss_1gib: FAIL: stored bytes differ from the source" >&2
    fail=1
  fi
else
  echo "rss_1gib: FAIL: no stored file at $STORED" >&2
  fail=1
fi

echo "idle_rss_kib=$idle"
echo "peak_rss_kib=$peak"
echo "growth_kib=$growth"
echo "final_rss_kib=$now"
echo "upload_mib_s=$(mib_s "$speed_up")"
echo "download_mib_s=$(mib_s "$speed_down")"
if ((growth > LIMIT_KIB)); then
  echo "rss_1gib: FAIL: peak RSS grew by $growth KiB (> $LIMIT_KIB KiB) over idle" >&2
  fail=1
fi
if ((fail)); then
  echo "rss_1gib: server log (last 40 lines):" >&2
  tail -n 40 "$LOG" | sed 's/^/  | /' >&2
  exit 1
fi
echo "rss_1gib: ok (growth $growth KiB <= $LIMIT_KIB KiB)"
