#!/usr/bin/env bash
# Model-checks the Block-STM scheduler and multi-version memory with loom
# (engine/tests/loom.rs). The build goes to target/loom so that `--cfg loom` does not
# invalidate the normal build. Extra arguments go to the test binary, e.g. a test name:
#
#   scripts/loom.sh validation_abort_race
#
# LOOM_MAX_PREEMPTIONS may be overridden from the environment (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom${RUSTFLAGS:+ $RUSTFLAGS}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
exec cargo test -p occam-engine --profile loom --test loom --target-dir target/loom -- "$@"
