#!/usr/bin/env bash
# ittybit's official Python SDK (PyPI ittybit==1.0.0) against examples/server.
#
# Creates (or reuses) a venv in <target>/sdk-venv with the SDK, builds the release server
# example, and runs tests/interop/sdk_interop.py twice: against the server with public
# delivery, then with --private. Each server gets a free loopback port, a temp --data dir and
# a fixed --key; it is stopped on exit. Exits non-zero when anything failed.
#
# Environment: CARGO_TARGET_DIR (default <repo>/target), SDK_BUILD=0 skips `cargo build`.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
VENV=$TARGET/sdk-venv
SERVER=$TARGET/release/examples/server
KEY=sdk_interop_key_0123456789
SDK_VERSION=1.0.0

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sdk-interop.XXXXXX")
SERVER_PID=
stop_server() {
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
  stop_server
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the SDK ---------------------------------------------------------------------------------
if [[ ! -x $VENV/bin/python ]]; then
  echo "run_sdk: creating venv $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" - "$SDK_VERSION" <<'EOF' 2>/dev/null; then
import importlib.metadata as m, sys
sys.exit(0 if m.version("ittybit") == sys.argv[1] else 1)
EOF
  echo "run_sdk: pip install ittybit==$SDK_VERSION"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "ittybit==$SDK_VERSION"
fi
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as m
print("run_sdk: " + ", ".join(f"{p} {m.version(p)}" for p in ("ittybit", "httpx", "pydantic")))
EOF

# --- the server ------------------------------------------------------------------------------
if [[ ${SDK_BUILD:-1} != 0 ]]; then
  cargo build --release --example server
fi
[[ -x $SERVER ]] || { echo "run_sdk: $SERVER not found" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server NAME [server args...]: sets SERVER_PID and BASE; retries on a port race.
start_server() {
  local name=$1 attempt port log
  shift
  for attempt in 1 2 3; do
    port=$(free_port)
    log=$WORK/$name.log
    mkdir -p "$WORK/$name-data"
    "$SERVER" --listen "127.0.0.1:$port" --data "$WORK/$name-data" --key "$KEY" "$@" >"$log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
      if grep -q "listening on" "$log"; then
        BASE=http://127.0.0.1:$port
        echo "run_sdk: server ($name) pid $SERVER_PID: $(grep -m1 'listening on' "$log")"
        return 0
      fi
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    echo "run_sdk: server ($name) did not come up (attempt $attempt); its output:" >&2
    sed 's/^/  | /' "$log" >&2
    stop_server
  done
  return 1
}

# --- the test, public then private delivery --------------------------------------------------
status=0
for mode in public private; do
  echo
  echo "run_sdk: ---- $mode delivery ----"
  args=()
  [[ $mode == private ]] && args+=(--private)
  start_server "$mode" "${args[@]}"
  py_args=(--base "$BASE" --key "$KEY")
  [[ $mode == private ]] && py_args+=(--private)
  if ! "$VENV/bin/python" tests/interop/sdk_interop.py "${py_args[@]}"; then
    status=1
    echo "run_sdk: FAILED ($mode); server log:" >&2
    sed 's/^/  | /' "$WORK/$mode.log" >&2
  fi
  stop_server
done

if [[ $status == 0 ]]; then
  echo "run_sdk: all SDK interop checks passed"
else
  echo "run_sdk: SDK interop FAILED" >&2
fi
exit "$status"
