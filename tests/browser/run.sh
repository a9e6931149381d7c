#!/usr/bin/env bash
# Headless-Chromium tests: tests/browser/run.sh [TEST.test.mjs ...]
#
# Runs every tests/browser/*.mjs whose first line is `// server: <example> [flags…]` (or the
# files named), each against a fresh server that the runner starts (run.mjs: that example
# binary on 127.0.0.1:0 with a temporary data dir and a random key). Needs Debian's
# /usr/bin/chromium (or $CHROMIUM) and node; installs playwright-core from package-lock.json
# when node_modules is missing.
#
# Environment: BROWSER_PROFILE=release|debug (which build of the examples; default release,
# built here if missing or stale), CARGO_TARGET_DIR, BROWSER_ARTIFACTS (screenshots and
# server logs; default <target>/browser).
set -euo pipefail
tests=()
for t in "$@"; do [[ $t == /* ]] && tests+=("$t") || tests+=("$PWD/$t"); done
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
PROFILE=${BROWSER_PROFILE:-release}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $PROFILE in
  release) build_flags=(--release) ;;
  debug) build_flags=() ;;
  *) echo "BROWSER_PROFILE must be release or debug" >&2; exit 2 ;;
esac

command -v node >/dev/null || { echo "node is missing" >&2; exit 1; }
[[ -x ${CHROMIUM:-/usr/bin/chromium} ]] || { echo "chromium is missing (${CHROMIUM:-/usr/bin/chromium})" >&2; exit 1; }
[[ -d node_modules/playwright-core ]] || npm ci --no-audit --no-fund

# The servers the tests start (cheap when already built).
(cd "$ROOT" && cargo build "${build_flags[@]}" --example browser --example server)

export EXAMPLES_DIR=$TARGET/$PROFILE/examples
export BROWSER_ARTIFACTS=${BROWSER_ARTIFACTS:-$TARGET/browser}
mkdir -p "$BROWSER_ARTIFACTS"
exec node run.mjs "${tests[@]}"
