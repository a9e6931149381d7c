#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server (the database of the PostgreSQL coordinator's tests,
# feature `postgres`) on loopback and a Unix socket, with one database, and prints the
# environment that points at it:
#
#   eval "$(tests/postgres/start.sh [--dir DIR] [--port N] [--watch PID])"
#
# prints `export TOWER_UPLOADS_TEST_PG=postgres://tower@127.0.0.1:PORT/tower_uploads
# PG_SOCKET_DIR=DIR/sock PG_PORT=… PG_DIR=DIR PG_PID=… PG_BINDIR=…` (also written to DIR/env).
# The superuser is `tower`, authentication is `trust` (loopback and the socket only), fsync is
# off. The server keeps running in the background; with --watch PID it stops when process PID
# exits (and a directory made by this script is removed); else stop it with
# `pg_ctl -D $PG_DIR/data -m immediate stop` (as the user that runs it). Logs: DIR/postgres.log
# (the server), DIR/initdb.log.
#
# Needs PostgreSQL's server binaries: `pg_config --bindir`, else the highest version under
# /usr/lib/postgresql/*/bin, else initdb/pg_ctl on PATH (Debian: `apt-get install postgresql`).
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` system user
# (created when missing), so DIR (and its parents) must be traversable by that user.
set -euo pipefail

dir=
port=
watch=
while (($#)); do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --watch) watch=$2; shift 2 ;;
    *) echo "start.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
die() { echo "start.sh: $*" >&2; exit 1; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
[[ -z $port ]] || port_free "$port" || die "port $port (127.0.0.1) is in use"

# --- the server binaries --------------------------------------------------------------------
bindir=
if b=$(pg_config --bindir 2>/dev/null) && [[ -x $b/initdb && -x $b/pg_ctl ]]; then
  bindir=$b
else
  b=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n1 || true)
  if [[ -n $b ]]; then
    bindir=${b%/initdb}
  elif command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    # Through symlinks: pg_ctl looks for `postgres` next to its real self.
    bindir=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
    [[ -x $bindir/initdb ]] || bindir=$(dirname "$(command -v pg_ctl)")
  fi
fi
[[ -n $bindir && -x $bindir/initdb && -x $bindir/pg_ctl ]] ||
  die "PostgreSQL's server binaries (initdb, pg_ctl) not found: not in \`pg_config --bindir\`, /usr/lib/postgresql/*/bin or PATH (Debian: apt-get install postgresql)"
createdb=$bindir/createdb
[[ -x $createdb ]] || createdb=$(command -v createdb) || die "createdb not found (in $bindir or on PATH)"
psql=$bindir/psql
[[ -x $psql ]] || psql=$(command -v psql) || die "psql not found (in $bindir or on PATH)"

# --- who runs the server: PostgreSQL refuses root --------------------------------------------
server_user=
if (($(id -u) == 0)); then
  server_user=postgres
  if ! getent passwd "$server_user" >/dev/null; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash "$server_user" >&2 ||
      die "could not create the system user $server_user"
  fi
fi
# as_server CMD...: CMD as the server user (from a directory it can enter), or as is.
as_server() {
  if [[ -z $server_user ]]; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    (cd / && runuser -u "$server_user" -- "$@")
  else
    # shellcheck disable=SC2016 # $0 and $@ are expanded by the user's shell
    (cd / && su -s /bin/sh "$server_user" -c 'exec "$0" "$@"' "$@")
  fi
}

# --- the directory ---------------------------------------------------------------------------
auto_dir=0
if [[ -z $dir ]]; then
  dir=$(mktemp -d /tmp/pg-XXXXXX)
  auto_dir=1
  chmod 755 "$dir" # the server user must be able to enter it
fi
started=0
# On failure: stop a server started here, remove a directory made here (its logs were shown).
cleanup() {
  local rc=$?
  ((rc != 0)) || return 0
  if ((started)); then
    as_server "$bindir/pg_ctl" -D "$dir/data" -m immediate -s stop >/dev/null 2>&1 || true
  fi
  if ((auto_dir)); then rm -rf "$dir"; fi
}
trap cleanup EXIT
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
[[ $dir != *"'"* ]] || die "the directory must not contain a single quote: $dir"
if [[ -n $server_user ]] && ! as_server test -x "$dir"; then
  die "user $server_user cannot enter $dir (as root the server runs as $server_user): use a directory under /tmp, or make $dir and its parents traversable (chmod o+x)"
fi
data=$dir/data sock=$dir/sock log=$dir/postgres.log
mkdir -p "$sock"
touch "$log"
if [[ -n $server_user ]]; then
  mkdir -p "$data"
  chown "$server_user:" "$data" "$sock" "$log"
fi

# --- initdb (unless DIR already holds a cluster) ---------------------------------------------
if [[ ! -f $data/PG_VERSION ]]; then
  if ! as_server "$bindir/initdb" -D "$data" -A trust -U tower --no-sync -E UTF8 --locale=C \
    >"$dir/initdb.log" 2>&1; then
    echo "start.sh: initdb failed; $dir/initdb.log:" >&2
    cat "$dir/initdb.log" >&2
    exit 1
  fi
fi

# --- start -----------------------------------------------------------------------------------
pick_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 20000))
    port_free "$p" && break
  done
  echo "$p"
}
auto_port=0
[[ -n $port ]] || { port=$(pick_port); auto_port=1; }
# A Unix socket's path is at most 107 bytes.
sock_path="$sock/.s.PGSQL.$port"
((${#sock_path} <= 107)) || die "the socket path $sock_path is longer than 107 bytes: use a shorter --dir"

for attempt in 1 2 3; do
  opts="-c listen_addresses=127.0.0.1 -p $port -k '$sock' -c fsync=off -c max_connections=200"
  if as_server "$bindir/pg_ctl" -D "$data" -l "$log" -o "$opts" -w -s start >&2; then
    started=1
    break
  fi
  # A port picked here may have been taken in between: try another one.
  if ((auto_port)) && ((attempt < 3)) && ! port_free "$port"; then
    echo "start.sh: port $port was taken; trying another one" >&2
    port=$(pick_port)
    continue
  fi
  echo "start.sh: the server did not start; $log:" >&2
  tail -n 30 "$log" >&2
  exit 1
done
pid=$(head -n1 "$data/postmaster.pid")

# --- the database ----------------------------------------------------------------------------
url=postgres://tower@127.0.0.1:$port/tower_uploads
if [[ -z $("$psql" -h 127.0.0.1 -p "$port" -U tower -d postgres -XAtqc \
  "select 1 from pg_database where datname = 'tower_uploads'") ]]; then
  "$createdb" -h 127.0.0.1 -p "$port" -U tower tower_uploads >&2
fi

if [[ -n $watch ]]; then
  # Stop the server when the watched process exits.
  (
    trap - EXIT
    while kill -0 "$watch" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
    as_server "$bindir/pg_ctl" -D "$data" -m immediate -s stop || true
    # A directory made here goes with it.
    if ((auto_dir)); then
      for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      rm -rf "$dir"
    fi
  ) >/dev/null 2>&1 </dev/null &
  disown
fi

{
  printf 'export TOWER_UPLOADS_TEST_PG=%s\n' "$url"
  printf 'export PG_SOCKET_DIR=%q\n' "$sock"
  printf 'export PG_PORT=%s\n' "$port"
  printf 'export PG_DIR=%q\n' "$dir"
  printf 'export PG_PID=%s\n' "$pid"
  printf 'export PG_BINDIR=%q\n' "$bindir"
} >"$dir/env"
cat "$dir/env"
