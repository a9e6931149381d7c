#!/usr/bin/env bash
# README's curl session, as pasted: takes the ```sh block under "## A curl session" from
# README.md, starts the release demo server the way README's first command does (key
# my-secret-key; on a free port instead of 8080, which the block's BASE is rewritten to), runs
# the block with `bash -euo pipefail` in an empty directory, and checks that each step
# answered as the block's comments say (curl -f fails the run on any 4xx/5xx).
#
# Environment: CARGO_TARGET_DIR (default <repo>/target), README_BUILD=0 skips `cargo build`.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
SERVER=$TARGET/release/examples/server
if [[ ${README_BUILD:-1} != 0 ]]; then
  cargo build --release --example server
fi

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

awk '/^## A curl session/ { on = 1; next }
     on && /^```sh/ { block = 1; next }
     block && /^```/ { exit }
     block { print }' README.md > "$WORK/session.sh"
grep -q 'BASE=http://127.0.0.1:8080' "$WORK/session.sh" ||
  { echo "readme_curl: no curl session with BASE=http://127.0.0.1:8080 in README.md" >&2; exit 1; }

"$SERVER" --key my-secret-key --listen 127.0.0.1:0 --data "$WORK/data" > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do grep -q 'listening on' "$WORK/server.log" && break; sleep 0.05; done
BASE=$(grep -o 'http://[0-9.:]*' "$WORK/server.log" | head -n1)
[[ -n $BASE ]] || { echo "readme_curl: the demo server did not start" >&2; cat "$WORK/server.log" >&2; exit 1; }
sed -i "s|http://127.0.0.1:8080|$BASE|g" "$WORK/session.sh"

mkdir "$WORK/run"
(cd "$WORK/run" && bash -euo pipefail ../session.sh) | tee "$WORK/out.txt"

expect() {
  grep -q -- "$1" "$WORK/out.txt" || { echo "readme_curl: no '$1' in the session's output" >&2; exit 1; }
}
expect '"method":"put","signature":'
expect '"status":201,"object":"file"},"data":{"id":"file_'
expect '"filename":"cat.txt","url":"'"$BASE"'/pets/cat.txt"'
expect '^hello from curl$'
expect '"status":202,"object":"upload"},"data":{"total":3000000,"ranges":\[\[2000000,2999999\]\]}'
expect '"filesize":3000000'
expect '^big.bin: the same bytes$'
echo "readme_curl: README's curl session ran as pasted"
echo "readme_curl: 1 passed, 0 failed"
