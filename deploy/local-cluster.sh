#!/usr/bin/env bash
# A 3-node Basalt cluster on 127.0.0.1 for trying things out: certificates, one config and one
# file-backed store per node, three `basalt start` processes in the background.
#
#   deploy/local-cluster.sh start [DIR]   # default DIR: ./basalt-local (created)
#   deploy/local-cluster.sh stop  [DIR]   # SIGTERM every node, wait for the clean stop
#   deploy/local-cluster.sh status [DIR]  # basalt-ctl status
#
# Binaries: target/release when present, else target/debug, else built first with
# `cargo build --release --bin basalt --bin basalt-ctl`; BASALT_BIN_DIR overrides. Ports: BASALT_BASE_PORT (default
# 20160) for QUIC, +1, +2; metrics on BASALT_BASE_PORT+20.. (20180, 20181, 20182 by default).
# Environment: BASALT_STORE_SIZE (default 1GiB, zero-filled when created), BASALT_REGIONS (default 4).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cmd="${1:-start}"
dir="${2:-basalt-local}"
base_port="${BASALT_BASE_PORT:-20160}"
store_size="${BASALT_STORE_SIZE:-1GiB}"
regions="${BASALT_REGIONS:-4}"
nodes=3

bin_dir() {
  if [ -n "${BASALT_BIN_DIR:-}" ]; then
    echo "$BASALT_BIN_DIR"
    return
  fi
  local target="${CARGO_TARGET_DIR:-$repo/target}"
  for profile in release debug; do
    if [ -x "$target/$profile/basalt" ] && [ -x "$target/$profile/basalt-ctl" ]; then
      echo "$target/$profile"
      return
    fi
  done
  echo "local-cluster: no binaries in $target; cargo build --release --bin basalt --bin basalt-ctl" >&2
  (cd "$repo" && cargo build --release --bin basalt --bin basalt-ctl) >&2
  echo "$target/release"
}

endpoints() {
  local eps=() i
  for i in $(seq 1 $nodes); do eps+=("127.0.0.1:$((base_port + i - 1))"); done
  (IFS=,; echo "${eps[*]}")
}

ctl_command() {
  echo "$(bin_dir)/basalt-ctl --endpoints $(endpoints) --certs $dir/certs --name admin"
}

write_config() {
  local i=$1 members="" j
  for j in $(seq 1 $nodes); do
    members+="  { store-id = $j, node-id = $j, addr = \"127.0.0.1:$((base_port + j - 1))\" },"$'\n'
  done
  cat >"$dir/node$i.toml" <<EOF
node-id = $i
listen-addr = "127.0.0.1:$((base_port + i - 1))"
metrics-addr = "127.0.0.1:$((base_port + 20 + i - 1))"

[[stores]]
store-id = $i
device = "store$i.img"
create-size = "$store_size"

[tls]
ca-cert = "certs/ca.pem"
node-cert = "certs/node$i.pem"
node-key = "certs/node$i.key"

[cluster]
initial-cluster = [
$members]
initial-regions = $regions
EOF
}

start() {
  local bin i
  bin="$(bin_dir)"
  if [ -f "$dir/pids" ]; then
    for pid in $(cat "$dir/pids"); do
      if kill -0 "$pid" 2>/dev/null; then
        echo "local-cluster: already running in $dir (pid $pid); stop it first" >&2
        exit 1
      fi
    done
  fi
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if [ ! -f "$dir/certs/ca.pem" ]; then
    local args=()
    for i in $(seq 1 $nodes); do args+=(--node "node$i=127.0.0.1,localhost"); done
    "$bin/basalt" certs --dir "$dir/certs" "${args[@]}" --client admin >/dev/null
  fi
  : >"$dir/pids"
  for i in $(seq 1 $nodes); do
    [ -f "$dir/node$i.toml" ] || write_config "$i"
    NO_COLOR=1 "$bin/basalt" -v start --config "$dir/node$i.toml" >>"$dir/node$i.log" 2>&1 &
    echo $! >>"$dir/pids"
  done
  echo "local-cluster: $nodes nodes started from $bin in $dir (pids $(tr '\n' ' ' <"$dir/pids"))"
  echo "  logs:    $dir/node{1..$nodes}.log"
  echo "  metrics: http://127.0.0.1:$((base_port + 20))/metrics (and the next $((nodes - 1)) ports)"
  echo "  status:  $(ctl_command) status"
  echo "  stop:    $0 stop $dir"
}

stop() {
  [ -f "$dir/pids" ] || { echo "local-cluster: no $dir/pids; nothing to stop"; return; }
  local pids pid deadline rc=0
  pids="$(cat "$dir/pids")"
  for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
  deadline=$((SECONDS + 60))
  for pid in $pids; do
    while kill -0 "$pid" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then
        echo "local-cluster: pid $pid still running 60 s after SIGTERM" >&2
        rc=1
        break
      fi
      sleep 0.2
    done
  done
  [ $rc -eq 0 ] && rm -f "$dir/pids"
  echo "local-cluster: stopped"
  return $rc
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) dir="$(cd "$dir" && pwd)"; $(ctl_command) status ;;
  *) echo "usage: $0 start|stop|status [DIR]" >&2; exit 2 ;;
esac
