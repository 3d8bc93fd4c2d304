#!/usr/bin/env bash
# The project's one test command (README, CI): format, lints, docs, every
# Rust test, the short fault suite, then the compose topology in real
# containers; between them a smoke of the benchmarks.
#
# Tests need a real `redis-server` on PATH (the queue and cache suites start
# throwaway servers on free ports), and the fault suite iptables, iproute2
# and a C compiler; scripts/install-deps.sh installs them (run first, below).
# The compose test builds its images itself (scripts/build-images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests need beyond cargo (Redis, iptables, iproute2, cc):
# installed here, idempotently, so this one command is all a fresh machine
# needs.
bash scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo doc"
# Broken or private intra-doc links and stray HTML fail like lints do.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --quiet

echo "== cargo nextest"
# Cluster tests start several nodes each; on a 2-core machine running too
# many at once only produces election timeouts, not coverage.
cargo nextest run --workspace --no-fail-fast --test-threads "${TEST_THREADS:-2}" "$@"

# API conformance: the whole system on 127.0.0.1 and schemathesis (pinned)
# against the gateway's /openapi.json, every check, fixed seed, ~2.5 min.
# Zero failures and zero 5xx. SKIP_API=1 leaves it out.
if [ -n "${SKIP_API:-}" ]; then
  echo "== API conformance skipped (SKIP_API set)"
else
  echo "== API conformance (schemathesis)"
  bash scripts/api-conformance.sh
fi

# The fault suite, short: every workload under every fault kind, checked
# (chaos/; a failing run keeps its history and logs under run/chaos).
# Debug binaries: nextest just built them. SKIP_CHAOS=1 leaves it out.
if [ -n "${SKIP_CHAOS:-}" ]; then
  echo "== chaos suite skipped (SKIP_CHAOS set)"
else
  echo "== chaos suite (short)"
  PROFILE=debug bash scripts/chaos.sh --short
fi

# The benchmarks, as a smoke: every scenario and baseline once for a second
# (bench/; no thresholds: numbers belong to scripts/bench.sh). Debug
# binaries, which nextest built. SKIP_BENCH=1 leaves it out.
if [ -n "${SKIP_BENCH:-}" ]; then
  echo "== bench smoke skipped (SKIP_BENCH set)"
else
  echo "== bench smoke"
  bash scripts/install-bench-deps.sh
  cargo build --quiet --bins
  target/debug/bench all --smoke --out run/bench-smoke
fi

# The compose topology in real containers (images built locally, no
# registry): on machines with a Docker engine, which this project's CI
# machines have. SKIP_COMPOSE=1 leaves it out of a quick local run.
if [ -n "${SKIP_COMPOSE:-}" ]; then
  echo "== compose test skipped (SKIP_COMPOSE set)"
elif ! docker info >/dev/null 2>&1; then
  echo "== compose test NOT RUN: no reachable Docker engine on this machine" >&2
elif [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
  # Building the base image runs debootstrap, which needs root.
  echo "== compose test NOT RUN: needs root or passwordless sudo (debootstrap)" >&2
else
  echo "== compose test"
  bash scripts/compose-test.sh
fi
