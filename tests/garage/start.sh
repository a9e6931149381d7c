#!/usr/bin/env bash
# Starts a single-node Garage (the S3-compatible server of the object-store tests) on
# loopback, with one bucket and one key, and prints the environment that points at it:
#
#   eval "$(tests/garage/start.sh [--dir DIR] [--port-base N] [--watch PID])"
#
# prints `export AWS_ENDPOINT=… AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… AWS_REGION=garage
# AWS_ALLOW_HTTP=true TOWER_UPLOADS_TEST_S3=s3://tower-uploads GARAGE_ADMIN=…
# GARAGE_METRICS_TOKEN=… GARAGE_PID=…` (also written to DIR/env). Garage keeps running in
# the background; with --watch PID it stops when process PID exits (and a directory made by
# this script is removed); else stop it with `kill $GARAGE_PID`. Logs: DIR/garage.log. Needs `garage` on PATH (`cargo install garage
# --locked`).
set -euo pipefail

dir=
port_base=${GARAGE_PORT_BASE:-}
watch=
while (($#)); do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --port-base) port_base=$2; shift 2 ;;
    --watch) watch=$2; shift 2 ;;
    *) echo "start.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v garage >/dev/null 2>&1 || { echo "start.sh: garage is not on PATH (cargo install garage --locked)" >&2; exit 1; }
auto_dir=0
[[ -n $dir ]] || { dir=$(mktemp -d /tmp/garage-XXXXXX); auto_dir=1; }
mkdir -p "$dir"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -z $port_base ]]; then
  for _ in $(seq 1 50); do
    port_base=$((20000 + RANDOM % 20000))
    port_free "$port_base" && port_free $((port_base + 1)) && port_free $((port_base + 3)) && break
  done
fi
s3=$port_base rpc=$((port_base + 1)) admin=$((port_base + 3))

hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
admin_token=$(hex 16)
metrics_token=$(hex 16)
key_id="GK$(hex 12)"
secret=$(hex 32)

cat >"$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
compression_level = "none"
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$admin_token"
metrics_token = "$metrics_token"
TOML

g() { garage -c "$dir/garage.toml" "$@"; }
RUST_LOG=${GARAGE_LOG:-warn} nohup garage -c "$dir/garage.toml" server >"$dir/garage.log" 2>&1 &
pid=$!
echo "$pid" >"$dir/garage.pid"
for i in $(seq 1 100); do
  if g status >/dev/null 2>&1; then break; fi
  kill -0 "$pid" 2>/dev/null || { echo "start.sh: garage exited; log:" >&2; cat "$dir/garage.log" >&2; exit 1; }
  sleep 0.2
  ((i < 100)) || { echo "start.sh: garage did not start" >&2; kill "$pid"; exit 1; }
done
node=$(g node id -q 2>/dev/null || g node id)
node=${node%%@*}
g layout assign -z dc1 -c 1G "${node:0:64}" >/dev/null
g layout apply --version 1 >/dev/null
g bucket create tower-uploads >/dev/null
g key import --yes -n tower-uploads "$key_id" "$secret" >/dev/null
g bucket allow --read --write --owner tower-uploads --key tower-uploads >/dev/null

if [[ -n $watch ]]; then
  # Stop Garage when the watched process exits.
  (
    while kill -0 "$watch" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
    kill "$pid" 2>/dev/null || true
    # A directory made here goes with it.
    if ((auto_dir)); then
      for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      rm -rf "$dir"
    fi
  ) >/dev/null 2>&1 </dev/null &
  disown
fi

cat >"$dir/env" <<ENV
export AWS_ENDPOINT=http://127.0.0.1:$s3
export AWS_ALLOW_HTTP=true
export AWS_REGION=garage
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$secret
export TOWER_UPLOADS_TEST_S3=s3://tower-uploads
export GARAGE_ADMIN=http://127.0.0.1:$admin
export GARAGE_METRICS_TOKEN=$metrics_token
export GARAGE_PID=$pid
export GARAGE_DIR=$dir
ENV
cat "$dir/env"
