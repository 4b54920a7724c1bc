#!/usr/bin/env bash
# What hostile clients cost a local cluster (BENCHMARKS.md, "Hostile clients"). On a cluster
# that is up (scripts/cluster.sh), with node 0 leading shard 0 (a fresh cluster's placement):
#
# 1. forged signatures: an honest open-loop `occam load` (RATE tx/s for DURATION s) alone,
#    then again with `occam attack forged` sending FORGED forgeries from 127.0.0.2 one second
#    in (an honest reader times reads of shard 0 meanwhile); each run's p50 and p99;
# 2. a client that does not read (`occam attack no-read`, from 127.0.0.3);
# 3. CONNS connections from 127.0.0.4 holding frames sent but for their last byte
#    (`occam attack stall`);
# for 2 and 3, node 0's resident memory before the attack, at its peak during it (sampled every
# 50 ms) and after.
#
#   DIR=target/cluster scripts/cluster.sh up && DIR=target/cluster scripts/attack.sh
#
# Settings (environment): DIR (default target/cluster), RATE (200), DURATION (20), FORGED
# (4096), CONNS (100), OCCAM (default target/release/occam). Traffic stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DIR:-target/cluster}
RATE=${RATE:-200}
DURATION=${DURATION:-20}
FORGED=${FORGED:-4096}
CONNS=${CONNS:-100}
OCCAM=${OCCAM:-target/release/occam}
CLUSTER=$DIR/cluster.toml
[ -f "$CLUSTER" ] || { echo "no cluster at $DIR (scripts/cluster.sh up first)" >&2; exit 1; }
pid=$(cat "$DIR/node-0.pid")
rss_mib() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"; }

# Runs "$@" (an attack) while sampling node 0's memory; prints before / peak / after (MiB).
with_memory() {
  local before peak now
  before=$(rss_mib)
  peak=$before
  "$@" &
  local attack=$!
  while kill -0 "$attack" 2>/dev/null; do
    now=$(rss_mib)
    peak=$(awk -v a="$peak" -v b="$now" 'BEGIN { print (b > a ? b : a) }')
    sleep 0.05
  done
  wait "$attack"
  sleep 1
  echo "node 0 memory: before $before MiB, peak $peak MiB, after $(rss_mib) MiB"
}

quantiles() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"p50 {r['latency']['p50_ms']:.0f} ms, p99 {r['latency']['p99_ms']:.0f} ms, committed {r['committed']}/{r['sent']}\")" "$1"; }

echo "== 1. forged signatures: honest load alone"
"$OCCAM" load --cluster "$CLUSTER" --rate "$RATE" --duration "$DURATION" --json "$DIR/attack-base.json" >/dev/null
echo "baseline: $(quantiles "$DIR/attack-base.json")"
echo "== 1. forged signatures: the same load, $FORGED forgeries one second in"
"$OCCAM" load --cluster "$CLUSTER" --rate "$RATE" --duration "$DURATION" --json "$DIR/attack-forged.json" >"$DIR/attack-load.txt" 2>&1 &
load=$!
trap 'kill $load 2>/dev/null || true' EXIT
# The load signs its transactions before its clock starts: attack once it is sending.
for _ in $(seq 1 600); do grep -q "t=" "$DIR/attack-load.txt" 2>/dev/null && break; sleep 0.1; done
"$OCCAM" attack forged --cluster "$CLUSTER" --from 127.0.0.2 --count "$FORGED" --delay 1
wait $load
trap - EXIT
echo "under attack: $(quantiles "$DIR/attack-forged.json")"

echo "== 2. a client that does not read"
with_memory "$OCCAM" attack no-read --cluster "$CLUSTER" --from 127.0.0.3 --count 100000

echo "== 3. $CONNS connections from one address holding partial frames"
with_memory "$OCCAM" attack stall --cluster "$CLUSTER" --from 127.0.0.4 --count "$CONNS" --hold 15
