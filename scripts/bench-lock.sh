#!/usr/bin/env bash
# Lock service load loops: builds release binaries, then runs each scenario
# RUNS times (default 3) against a fresh three-node cluster the tool starts
# and stops itself. Output: one JSON line per run, then a summary line of
# medians per scenario.
#
# BASELINE_BIN=/path/to/other/lock-service runs that build alternately with
# this one in the same invocation (same machine noise) and reports the ratio
# of the medians, e.g. a build of an older commit:
#   git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build --release -p lock-service)
#   BASELINE_BIN=/tmp/base/target/release/lock-service scripts/bench-lock.sh
#
# ETCD_BIN=/path/to/etcd (or COMPARE_ETCD=1 with /usr/bin/etcd, which
# scripts/install-etcd.sh installs) also runs a three-member etcd 3.4 cluster
# alternately in each scenario and reports ratio_this_to_etcd; ETCD_ARGS
# passes extra etcd flags. Combines with BASELINE_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-8}"
cargo build --release -p lock-service --bins --examples
LOAD=target/release/examples/lock_load
base=()
if [ -n "${BASELINE_BIN:-}" ]; then base=(--baseline-bin "$BASELINE_BIN"); fi
if [ -z "${ETCD_BIN:-}" ] && [ "${COMPARE_ETCD:-}" = 1 ]; then
  if [ ! -x /usr/bin/etcd ]; then
    echo "COMPARE_ETCD=1 but no /usr/bin/etcd: run scripts/install-etcd.sh" >&2
    exit 1
  fi
  ETCD_BIN=/usr/bin/etcd
fi
if [ -n "${ETCD_BIN:-}" ]; then
  base+=(--compare-etcd "$ETCD_BIN")
  if [ -n "${ETCD_ARGS:-}" ]; then base+=(--etcd-args "$ETCD_ARGS"); fi
fi
"$LOAD" --scenario pairs --clients 1 --seconds "$SECONDS_PER_RUN" --runs "$RUNS" "${base[@]}"
"$LOAD" --scenario pairs --clients 16 --seconds "$SECONDS_PER_RUN" --runs "$RUNS" "${base[@]}"
"$LOAD" --scenario handoff --clients 16 --seconds "$SECONDS_PER_RUN" --runs "$RUNS" "${base[@]}"
"$LOAD" --scenario failover --rounds 7 --runs "$RUNS" "${base[@]}"
