#!/usr/bin/env bash
# Install etcd 3.4 (Debian's etcd-server) for the lock benchmarks' comparison
# (`lock_load --compare-etcd`, COMPARE_ETCD=1 / ETCD_BIN in bench-lock.sh).
# Benchmark-only: the tests, local runs and CI do not need it. Idempotent.
set -euo pipefail

if command -v etcd >/dev/null 2>&1; then
  echo "etcd present: $(etcd --version | head -n1)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq etcd-server >/dev/null
# Debian's package may start a system instance on the default ports; the
# benchmark starts its own members on free ports and never uses it.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
fi
echo "installed: $(etcd --version | head -n1)"
