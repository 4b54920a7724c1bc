#!/usr/bin/env bash
# The scaling runs behind BENCHMARKS.md: `occam bench` over thread counts on the workloads and
# contention levels that the engine issue's targets name. Every run writes its table (.txt)
# and its full JSON report (.json) to OUT.
#
#   scripts/scaling.sh [OCCAM_BINARY] [OUT]        (defaults: target/release/occam, out/scaling)
#   THREADS=1,2 scripts/scaling.sh                   (thread counts; default 1,2,4,8,16 capped at the cores)
#
# Build the binary first: cargo build --release -p occam-bench
set -euo pipefail
bin=${1:-target/release/occam}
out=${2:-out/scaling}
mkdir -p "$out"
cores=$(nproc)
if [ -z "${THREADS:-}" ]; then
  THREADS=""
  for t in 1 2 4 8 16 32 64; do
    [ "$t" -le "$cores" ] && THREADS="${THREADS:+$THREADS,}$t"
  done
fi

run() {
  local name=$1
  shift
  echo "== $name: occam bench --threads $THREADS $*"
  "$bin" bench --quiet --threads "$THREADS" --json "$out/$name.json" "$@" | tee "$out/$name.txt"
}

# Low-contention payments: the headline speedup (auto) and the Block-STM bookkeeping (parallel x1).
run transfer --workload transfer --accounts 100000 --block-size 10000 --txs 100000
# A heavier VM: 10 us of hashing per transaction.
run transfer-cost10 --workload transfer --accounts 100000 --block-size 10000 --txs 50000 --tx-cost-us 10 --warmup 1
# Worst cases: every transaction on one hot key; one NFT collection counter.
run hotspot --workload transfer --accounts 100000 --block-size 10000 --txs 50000 --distribution hotspot:1.0:1
run nft-mint --workload nft-mint:1 --accounts 100000 --block-size 10000 --txs 50000
# Every workload at default contention, and under Zipf skew.
run workloads --workload transfer,smallbank,ycsb-a,ycsb-b,ycsb-f,token,amm-swap,nft-mint --txs 50000
run zipf --workload transfer,smallbank,ycsb-a,token --distribution zipf:0.99 --txs 50000
# The ten application scenarios (README, "Scenarios").
run scenarios --workload scenarios --txs 50000
