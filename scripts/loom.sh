#!/usr/bin/env bash
# Model-checks the Block-STM scheduler and multi-version memory with loom
# (engine/tests/loom.rs). The build goes to target/loom so that `--cfg loom` does not
# invalidate the normal build. Extra arguments go to the test binary, e.g. a test name:
#
#   scripts/loom.sh validation_abort_race
#
# Each model sets its own preemption bound (see the file's header); LOOM_MAX_PREEMPTIONS from the
# environment overrides them all: `LOOM_MAX_PREEMPTIONS=3 scripts/loom.sh` is the deep run
# (about 4.5 minutes on 2 cores) for changes to the scheduler, the memory or the worker loop.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom${RUSTFLAGS:+ $RUSTFLAGS}"
exec cargo test -p occam-engine --profile loom --test loom --target-dir target/loom -- "$@"
