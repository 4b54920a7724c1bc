#!/usr/bin/env bash
# Failover under load: kills the leader of shard 0 with SIGKILL, KILLS times, while `occam load`
# runs, and measures each time from the kill to the next certified block of shard 0 (a new
# leader committing). Prints each time and the p50 and max. The killed node is started again
# (scripts/cluster.sh up), and the next kill waits until it has caught up.
#
#   DIR=target/cluster scripts/cluster.sh up && DIR=target/cluster scripts/failover.sh
#
# Settings (environment): DIR (default target/cluster), KILLS (10), RATE (load, 200 tx/s),
# DURATION (of the load, s; default 30 per kill + 30),
# OCCAM (default target/release/occam). The cluster must be up; traffic stays on its addresses.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DIR:-target/cluster}
KILLS=${KILLS:-10}
RATE=${RATE:-200}
OCCAM=${OCCAM:-target/release/occam}
CLUSTER=$DIR/cluster.toml
[ -f "$CLUSTER" ] || { echo "no cluster at $DIR (scripts/cluster.sh up first)" >&2; exit 1; }

# Every node's Prometheus metrics, concatenated (a node that is down adds nothing). Plain HTTP
# on each node's metrics address answers within milliseconds even on a loaded machine, where a
# QUIC status request (a fresh handshake with every node) can take seconds.
mapfile -t METRICS < <(sed -n 's/^metrics = "\(.*\)"/\1/p' "$CLUSTER")
[ ${#METRICS[@]} -gt 0 ] || { echo "the cluster's nodes serve no metrics (no metrics = in $CLUSTER)" >&2; exit 1; }
status() { for a in "${METRICS[@]}"; do curl -s --max-time 0.5 "http://$a/metrics" || true; done; }
# The node leading shard 0, and shard 0's highest certified height, from the metrics.
# (Label order is the exporter's: match each label on its own.)
leader0() { grep -E '^occam_replica_role\{[^}]*shard="0"[^}]*\} 1$' | grep 'role="leader"' | sed -n 's/.*node="\([0-9]*\)".*/\1/p' | head -1; }
# True when every node answers and its replica of shard 0 is within 2 blocks of the highest.
settled0() {
  awk -v want="${#METRICS[@]}" -F'[ ]' '/^occam_replica_height\{/ && /shard="0"/ {
      n++; if (min == "" || $2 < min) min = $2; if ($2 > max) max = $2 }
    END { exit !(n == want && max - min <= 2) }'
}
certified0() { awk -F'[ ]' '/^occam_replica_certified_height\{/ && /shard="0"/ { if ($2 > m) m = $2 } END { print m + 0 }'; }
now_ms() { date +%s%3N; }

# Each kill takes the failover, the restart and the catch-up: about 20 s on a 2-core VM, more
# when it is busy. The load must outlast the kills, or a kill finds no traffic to certify.
duration=${DURATION:-$((KILLS * 30 + 30))}
"$OCCAM" load --cluster "$CLUSTER" --rate "$RATE" --duration "$duration" --drain 30 >"$DIR/failover-load.txt" 2>&1 &
load=$!
trap 'kill $load 2>/dev/null || true' EXIT
# The load signs its transactions first (seconds of both cores): kill only once it is sending.
for _ in $(seq 1 600); do grep -q "t=" "$DIR/failover-load.txt" 2>/dev/null && break; sleep 0.2; done
sleep 3
times=()
for ((k = 1; k <= KILLS; k++)); do
  kill -0 "$load" 2>/dev/null || { echo "the load ended before kill $k (raise DURATION, now $duration s)" >&2; break; }
  table=$(status)
  leader=$(leader0 <<<"$table")
  before=$(certified0 <<<"$table")
  [ -n "$leader" ] || { echo "kill $k: shard 0 has no leader now" >&2; sleep 2; continue; }
  pid=$(cat "$DIR/node-$leader.pid")
  t0=$(now_ms)
  kill -KILL "$pid"
  deadline=$((t0 + 30000))
  while :; do
    table=$(status)
    new=$(leader0 <<<"$table")
    if [ -n "$new" ] && [ "$new" != "$leader" ] && [ "$(certified0 <<<"$table")" -gt "$before" ]; then
      break
    fi
    [ "$(now_ms)" -lt "$deadline" ] || { echo "kill $k: no new certified block within 30 s" >&2; exit 1; }
    sleep 0.05
  done
  t=$(($(now_ms) - t0))
  times+=("$t")
  echo "kill $k: node $leader killed; shard 0 certified again under node $new after $t ms"
  # Restarted without waiting for it: on a loaded machine a status round over fresh QUIC
  # connections can take seconds; the next kill waits for shard 0's leader in the metrics.
  DIR=$DIR WAIT=0 scripts/cluster.sh up >/dev/null
  # One fault at a time: the next kill waits until the restarted node has caught up (a replica
  # still catching up cannot vote, and certificates need 3 of 4 votes).
  for _ in $(seq 1 600); do status | settled0 && break; sleep 0.1; done
  sleep 2
done
# The load's report (and its status reads of what had no receipt) when it ends.
echo "waiting for the load to end (its report is in $DIR/failover-load.txt)…" >&2
wait "$load" || true
trap - EXIT
grep -vE '^ +(t=|queue )' "$DIR/failover-load.txt" | tail -6
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
n=${#times[@]}
echo "failover over $n kills: p50 $(sed -n "$(((n + 1) / 2))p" <<<"$sorted") ms, max $(tail -1 <<<"$sorted") ms"
