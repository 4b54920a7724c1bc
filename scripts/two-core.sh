#!/usr/bin/env bash
# The engine issue's 2-core targets, measured with `occam bench` (pinned to two cores, 2 and 3, with
# taskset when the machine has more). Writes tables and JSON reports to OUT.
#
#   scripts/two-core.sh [OCCAM_BINARY] [OUT]        (defaults: target/release/occam, out/two-core)
set -euo pipefail
bin=${1:-target/release/occam}
out=${2:-out/two-core}
mkdir -p "$out"
pin=()
if [ "$(nproc)" -gt 2 ] && command -v taskset >/dev/null; then
  pin=(taskset -c 2,3)
fi
run() {
  local name=$1
  shift
  echo "== $name: occam bench --threads 1,2 $*"
  "${pin[@]}" "$bin" bench --quiet --threads 1,2 --json "$out/$name.json" "$@" | tee "$out/$name.txt"
}
common=(--workload transfer --accounts 100000 --block-size 10000)
# auto at 2 threads >= 1.7x sequential on low-contention transfers.
run transfer "${common[@]}" --txs 200000
# parallel (Block-STM) at 2 threads >= 1.7x sequential with 10 us of VM work per transaction.
run transfer-cost10 "${common[@]}" --txs 30000 --tx-cost-us 10
# Worst cases: every executor >= 0.8x sequential.
run hotspot "${common[@]}" --txs 50000 --distribution hotspot:1.0:1
run nft-mint --workload nft-mint:1 --accounts 100000 --block-size 10000 --txs 50000
