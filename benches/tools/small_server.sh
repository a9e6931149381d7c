# Sourced by cpu_small.sh, alloc_small.sh and cg_small.sh: starts limit-server (`limit`) or our
# demo server (a binary path; RUST_LOG=${LOG:-warn}, key k123) on a loopback port with its
# files under a fresh /dev/shm directory, and sets ROOT, BENCH, CLIENT, W (work dir), PID and
# URL. The server and the work dir go when the script exits.
# WRAP: a command to run the server under, in W (cg_small.sh: valgrind); STARTUP: seconds to
# wait for it to listen (default 5).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
CLIENT=$BENCH/client/target/release/upload-bench
W=$(mktemp -d /dev/shm/small.XXXX)
PID=
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
if [[ $1 == limit ]]; then
  (cd "$W" && exec ${WRAP:-} "$BENCH/limit-server/target/release/limit-server" \
    --listen 127.0.0.1:0 --dir "$W/data") > "$W/log" 2>&1 &
else
  (cd "$W" && RUST_LOG="${LOG:-warn}" exec ${WRAP:-} "$1" \
    --listen 127.0.0.1:0 --data "$W/data" --key k123) > "$W/log" 2>&1 &
fi
PID=$!
for _ in $(seq $((${STARTUP:-5} * 20))); do grep -q "listening on" "$W/log" && break; sleep 0.05; done
URL=$(grep -o 'http://[0-9.:]*' "$W/log" | head -1)
