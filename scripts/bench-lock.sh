#!/usr/bin/env bash
# Lock service load loops: builds release binaries, then runs each scenario
# RUNS times (default 3) against a fresh three-node cluster the tool starts
# and stops itself. Output: one JSON line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-8}"
cargo build --release -p lock-service --bins --examples
LOAD=target/release/examples/lock_load
for i in $(seq 1 "$RUNS"); do
  "$LOAD" --scenario pairs --clients 1 --seconds "$SECONDS_PER_RUN"
  "$LOAD" --scenario pairs --clients 16 --seconds "$SECONDS_PER_RUN"
  "$LOAD" --scenario handoff --clients 16 --seconds "$SECONDS_PER_RUN"
done
"$LOAD" --scenario failover --rounds 5
"$LOAD" --scenario failover --rounds 5 \
  --node-args "--heartbeat-ms 25 --election-min-ms 75 --election-max-ms 125"
