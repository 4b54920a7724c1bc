#!/usr/bin/env bash
# Replacing a node for good, under load: SIGKILLs node NODE while `occam load` runs, adds a
# node that replaces it (`occam cluster add-node`), starts it, and measures from its start
# until it votes in every shard it took over (each shard's leader has swapped the dead node
# for it in one Raft membership change) and has certified a block there. The load re-reads the
# cluster file, so it follows the new node and verifies the new epoch's certificates.
#
#   DIR=target/cluster scripts/cluster.sh up && DIR=target/cluster scripts/replace.sh
#
# Settings (environment): DIR (default target/cluster), NODE (the node killed for good; default
# 3), RATE (load, 200 tx/s), DURATION (of the load, s; 60), OCCAM (default
# target/release/occam). The cluster must be up; traffic stays on its addresses.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DIR:-target/cluster}
NODE=${NODE:-3}
RATE=${RATE:-200}
DURATION=${DURATION:-60}
OCCAM=${OCCAM:-target/release/occam}
CLUSTER=$DIR/cluster.toml
[ -f "$CLUSTER" ] || { echo "no cluster at $DIR (scripts/cluster.sh up first)" >&2; exit 1; }
now_ms() { date +%s%3N; }

"$OCCAM" load --cluster "$CLUSTER" --rate "$RATE" --duration "$DURATION" --drain 30 >"$DIR/replace-load.txt" 2>&1 &
load=$!
trap 'kill $load 2>/dev/null || true' EXIT
# The load signs its transactions first: kill only once it is sending.
for _ in $(seq 1 600); do grep -q "t=" "$DIR/replace-load.txt" 2>/dev/null && break; sleep 0.2; done
sleep 5
kill -KILL "$(cat "$DIR/node-$NODE.pid")"
rm -f "$DIR/node-$NODE.pid"
echo "node $NODE killed for good"
sleep 2
added=$("$OCCAM" cluster add-node --dir "$DIR" --replaces "$NODE")
echo "$added"
new=$(sed -n 's/^node \([0-9]*\) replaces.*/\1/p' <<<"$added")
t0=$(now_ms)
DIR=$DIR WAIT=0 scripts/cluster.sh up >/dev/null
metrics=$(awk -v id="$new" '/^\[\[nodes\]\]/ { n = -1 } $1 == "id" { n = $3 } n == id && $1 == "metrics" { gsub(/"/, "", $3); print $3 }' "$CLUSTER")
# Until the new node's every replica votes and holds a certificate it formed with the others.
deadline=$((t0 + 300000))
while :; do
  m=$(curl -s --max-time 0.5 "http://$metrics/metrics" || true)
  # One learner sample per hosted replica; 0 where it votes.
  voters=$(grep '^occam_replica_role{' <<<"$m" | grep -c 'role="learner".*} 0$' || true)
  hosted=$(grep '^occam_replica_role{' <<<"$m" | grep -c 'role="learner"' || true)
  certified=$(awk '/^occam_replica_certified_height\{/ && $2 > 0' <<<"$m" | wc -l)
  if [ "$hosted" -gt 0 ] && [ "$voters" = "$hosted" ] && [ "$certified" = "$hosted" ]; then
    break
  fi
  [ "$(now_ms)" -lt "$deadline" ] || { echo "node $new did not vote and certify in all its shards within 300 s" >&2; exit 1; }
  sleep 0.1
done
echo "node $new votes and certifies in all $hosted of its shards $(($(now_ms) - t0)) ms after it was started"
echo "waiting for the load to end (its report is in $DIR/replace-load.txt)…" >&2
wait "$load" || true
trap - EXIT
grep -vE '^ +(t=|queue )' "$DIR/replace-load.txt" | tail -7
