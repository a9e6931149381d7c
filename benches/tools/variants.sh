#!/usr/bin/env bash
# Where a small upload's time goes, by removal: builds the demo server with
# benches/tools/variants.patch (a measurement-only patch, never merged: TU_SKIP=word,... turns
# parts of the simple-PUT path off at run time) in a throwaway worktree, then runs
# limit-server and each variant interleaved, ROUNDS times, through cpu_small.sh (its rounds 2
# and 3; round 1 warms up). Prints server CPU (ms per 20 000 PUTs) and req/s per run.
#
# Variants (TU_SKIP words; "none" = the real server):
#   xattr  publish without writing the record (the File object) to the file's xattr
#   probe  no media sniffing/probing (kind "other")
#   json   no File-object/record serialisation (answers `{}` as data)
#   (`xattr` and `json` act where the File object is stored. Since small simple uploads
#   publish without one when it can be derived again (Storage::stable_meta), that is no
#   longer the benchmark's PUTs; PERFORMANCE.md's table was measured at 68f3da2, whose
#   version of this patch is in that commit.)
#   floor  the handler drains the body into a file and renames it like limit-server
#          (create, write, rename), answering a constant envelope: what the HTTP stack, the
#          signature check and the routing cost without any of the upload path
#   h1     serve with hyper's http1 builder instead of hyper-util's auto (HTTP/1 + h2c)
#
# usage: ROUNDS=3 VARS="limit none floor xattr,probe,json" benches/tools/variants.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ROUNDS=${ROUNDS:-3}
VARS=${VARS:-limit none floor xattr,probe,json}
WT=${VARIANT_WORKTREE:-/tmp/tu-variants}
export CARGO_TARGET_DIR=${VARIANT_TARGET:-/tmp/tu-variants-target}
rm -rf "$WT"; git -C "$ROOT" worktree prune
git -C "$ROOT" worktree add -q --detach "$WT" HEAD
FLOOR=$(mktemp -d /dev/shm/floor.XXXX)
trap 'git -C "$ROOT" worktree remove --force "$WT"; rm -rf "$FLOOR"' EXIT
git -C "$WT" apply "$ROOT/benches/tools/variants.patch"
(cd "$WT" && cargo build -q --release --example server)
BIN=$CARGO_TARGET_DIR/release/examples/server
for _ in $(seq "$ROUNDS"); do
  for v in $VARS; do
    if [[ $v == limit ]]; then o=$("$ROOT/benches/tools/cpu_small.sh" limit | sed -n 2,3p)
    else o=$(TU_FLOOR_DIR=$FLOOR TU_SKIP=$v "$ROOT/benches/tools/cpu_small.sh" "$BIN" | sed -n 2,3p); fi
    awk -v v="$v" '{gsub(/user=|sys=|ms|"req_per_s":/, ""); c += $3 + $4; q += $5}
      END {printf "%-18s server_cpu_ms=%d req_per_s=%d\n", v, c / 2, q / 2}' <<< "$o"
  done
done
