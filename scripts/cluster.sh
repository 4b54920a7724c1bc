#!/usr/bin/env bash
# A local Occam cluster on 127.0.0.1, in one command.
#
#   scripts/cluster.sh up       # create the cluster's files (first time), start every node
#                               # (not those replaced for good; see `occam cluster add-node`)
#   scripts/cluster.sh status   # each replica's height and state root
#   scripts/cluster.sh down     # stop every node
#   scripts/cluster.sh prometheus-config   # print a Prometheus scrape config for its nodes
#
# Settings (environment): DIR (default target/cluster), NODES (4), SHARDS (4), REPLICAS (4),
# BASE_PORT (7000), WORKLOAD (transfer), ACCOUNTS (100000), THREADS (1), BLOCK_TXS (4096), BLOCK_MS (20),
# OCCAM (the binary; default target/release/occam, built if missing), WAIT (1: `up` waits until
# every shard has a leader; 0: it returns once the processes are started).
# Node i logs to $DIR/node-i.log (OCCAM_LOG=debug for more) and serves Prometheus metrics on
# TCP port BASE_PORT + 1000 + i. Then: occam load --cluster $DIR/cluster.toml --rate 1000
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${DIR:-target/cluster}
NODES=${NODES:-4}
SHARDS=${SHARDS:-4}
REPLICAS=${REPLICAS:-4}
BASE_PORT=${BASE_PORT:-7000}
WORKLOAD=${WORKLOAD:-transfer}
ACCOUNTS=${ACCOUNTS:-100000}
THREADS=${THREADS:-1}
BLOCK_TXS=${BLOCK_TXS:-4096}
BLOCK_MS=${BLOCK_MS:-20}
OCCAM=${OCCAM:-target/release/occam}

binary() {
  if [ ! -x "$OCCAM" ]; then
    echo "building $OCCAM (first time only)…" >&2
    cargo build --release --locked -p occam-bench >&2
  fi
}

# A node killed a moment ago may linger as a zombie until its parent (often init) reaps it:
# that is not running.
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null && [ "$(ps -o stat= -p "$(cat "$1")" | cut -c1)" != Z ]; }

up() {
  binary
  if [ ! -f "$DIR/cluster.toml" ]; then
    "$OCCAM" cluster init --nodes "$NODES" --shards "$SHARDS" --replicas "$REPLICAS" --dir "$DIR" \
      --base-port "$BASE_PORT" --workload "$WORKLOAD" --accounts "$ACCOUNTS" --threads "$THREADS" \
      --block-txs "$BLOCK_TXS" --block-ms "$BLOCK_MS"
  fi
  local n replaced
  n=$(grep -c '^\[\[nodes\]\]' "$DIR/cluster.toml")
  # Nodes replaced for good (`occam cluster add-node --replaces`) are not started again.
  replaced=" $(awk -F' *= *' '$1 == "replaces" { printf "%s ", $2 }' "$DIR/cluster.toml")"
  for ((i = 0; i < n; i++)); do
    if [[ "$replaced" == *" $i "* ]]; then
      continue
    fi
    if running "$DIR/node-$i.pid"; then
      echo "node $i already running (pid $(cat "$DIR/node-$i.pid"))"
      continue
    fi
    nohup "$OCCAM" node --config "$DIR/node-$i.toml" >"$DIR/node-$i.log" 2>&1 &
    echo $! >"$DIR/node-$i.pid"
  done
  # Up means: every node answers and every shard has elected a leader (WAIT=0: return at once).
  [ "${WAIT:-1}" = 0 ] && return 0
  local shards table
  shards=$(awk -F' *= *' '$1 == "shards" { print $2; exit }' "$DIR/cluster.toml")
  for _ in $(seq 1 120); do
    if table=$("$OCCAM" cluster status --cluster "$DIR/cluster.toml" 2>/dev/null) &&
      [ "$(awk '$4 == "leader" { print $1 }' <<<"$table" | sort -u | wc -l)" -ge "$shards" ]; then
      echo "cluster up: $n nodes ($DIR/cluster.toml); logs in $DIR/node-*.log"
      return 0
    fi
    sleep 0.5
  done
  echo "the cluster did not come up; see $DIR/node-*.log" >&2
  "$OCCAM" cluster status --cluster "$DIR/cluster.toml" >&2 || true
  return 1
}

down() {
  local any=0
  for pidfile in "$DIR"/node-*.pid; do
    [ -e "$pidfile" ] || continue
    if running "$pidfile"; then
      kill -TERM "$(cat "$pidfile")" && any=1
    fi
  done
  for pidfile in "$DIR"/node-*.pid; do
    [ -e "$pidfile" ] || continue
    for _ in $(seq 1 50); do running "$pidfile" || break; sleep 0.1; done
    running "$pidfile" && kill -KILL "$(cat "$pidfile")"
    rm -f "$pidfile"
  done
  [ "$any" = 1 ] && echo "cluster down" || echo "no node was running"
}

status() {
  binary
  "$OCCAM" cluster status --cluster "$DIR/cluster.toml"
}

# A Prometheus configuration that scrapes every node of the cluster every second (job
# `occam`); scripts/prometheus.sh runs a server with it, and scripts/grafana-dashboard.json
# reads what it collects.
prometheus_config() {
  [ -f "$DIR/cluster.toml" ] || { echo "no cluster in $DIR (run: $0 up)" >&2; exit 1; }
  local targets
  targets=$(sed -n 's/^metrics = "\(.*\)"/"\1"/p' "$DIR/cluster.toml" | paste -sd, -)
  [ -n "$targets" ] || { echo "the cluster's nodes serve no metrics" >&2; exit 1; }
  cat <<EOF
# Prometheus scrape configuration for the Occam cluster in $DIR.
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: occam
    static_configs:
      - targets: [$targets]
EOF
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  prometheus-config) prometheus_config ;;
  *) echo "usage: $0 up|down|status|prometheus-config" >&2; exit 2 ;;
esac
