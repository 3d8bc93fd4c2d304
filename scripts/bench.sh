#!/usr/bin/env bash
# The per-service benchmarks (bench/): builds release binaries, installs the
# baselines (etcd, nginx; Redis comes with install-deps.sh), starts the whole
# system on 127.0.0.1 and runs every case of the services named, each case
# RUNS times, with its baseline in the same invocation.
#
#   scripts/bench.sh <lock|queue|cache|gateway|all|soak|storm> [more] [bench flags]
#   RUNS=5 SECONDS_PER_RUN=10 scripts/bench.sh lock
#   scripts/bench.sh all --smoke             # every case once, 1 s: it runs, nothing more
#                                            # (and 4 s each of soak and storm)
#   scripts/bench.sh soak                    # 20 min of steady mixed load (--soak-minutes,
#                                            # --soak-rate, --sample-seconds)
#   scripts/bench.sh storm                   # 3 min of load that only adds, against
#                                            # smaller limits (--storm-minutes, --storm-rate)
#
# `all` is the four services' cases; soak and storm run only when named.
# Results go to bench-results/<UTC timestamp>/ (OUT= overrides): runs.json,
# runs.csv, summary.csv, summary.md (medians, spread, ratios to direct and to
# the baselines); soak and storm add <name>-samples.{json,csv}, their charts
# and a section of summary.md. A progress line per run goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -eq 0 ]; then
  echo "usage: scripts/bench.sh <lock|queue|cache|gateway|all|soak|storm>... [bench flags]" >&2
  exit 2
fi
bash scripts/install-bench-deps.sh
cargo build --release --bins
OUT="${OUT:-bench-results/$(date -u +%Y%m%dT%H%M%SZ)}"
target/release/bench "$@" --runs "${RUNS:-3}" --seconds "${SECONDS_PER_RUN:-10}" --out "$OUT"
echo "summary: $OUT/summary.md"
