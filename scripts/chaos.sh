#!/usr/bin/env bash
# The fault-injection suite (chaos/): start the whole system as real
# processes on 127.0.0.1, run the client workloads while a seeded nemesis
# injects faults, record the history and check it. Arguments go to the
# `chaos` binary:
#
#   scripts/chaos.sh --seed 7 --time 60 [--workload lock|queue|cache|all] [--redis]
#   scripts/chaos.sh --short        # what CI runs: fixed seeds, every workload
#                                   # and every fault kind, a few minutes
#
# PROFILE=debug uses the debug build (the one the tests just built) instead
# of building release binaries. A failing run keeps its history, node logs
# and report under run/chaos/ (the path is printed); replay the check with
#   target/<profile>/chaos --check run/chaos/<run>/history.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build --release --bins
else
  cargo build --bins
fi
CHAOS="target/$PROFILE/chaos"

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: run scripts/install-deps.sh first" >&2
  exit 1
fi

if [ "${1:-}" = "--short" ]; then
  # Every workload and every fault kind at least once (the nemesis's first
  # round goes through all of its kinds), once on the embedded stores and
  # once with Redis (kill-redis). Fixed seeds, so a failure is replayable.
  # Partitions need the lock nodes in network namespaces, which need root.
  netns=()
  if [ "$(id -u)" -ne 0 ]; then
    echo "== chaos: not root, so the partition faults are NOT RUN (--no-netns)" >&2
    netns=(--no-netns)
  fi
  faults=(--faults kill-redis,kill-queue-node,kill-cache-node,pause-cache-node,kill-lock-leader)
  if [ ${#netns[@]} -eq 0 ]; then faults[1]+=",partition-split"; fi
  "$CHAOS" --seed 1 --time 55 --workload all --out run/chaos/short-1 "${netns[@]}"
  "$CHAOS" --seed 2 --time 30 --workload all --redis --out run/chaos/short-2-redis \
    "${faults[@]}" "${netns[@]}"
  # Every fault kind at least once: a kind the nemesis could not place in
  # time (it waits for a role such as "the leader" to be filled) fails the
  # suite rather than passing it untested.
  for run in run/chaos/short-1 run/chaos/short-2-redis; do
    never=$(python3 -c 'import json,sys; print(",".join(json.load(open(sys.argv[1]))["totals"]["faults_never_injected"]))' "$run/report.json")
    if [ -n "$never" ]; then
      echo "chaos: $run never injected: $never" >&2
      exit 1
    fi
  done
  exit 0
fi
exec "$CHAOS" "$@"
