#!/usr/bin/env bash
# Install etcd 3.4 (Debian's etcd-server) for the lock benchmarks' comparison
# (`lock_load --compare-etcd`, COMPARE_ETCD=1 / ETCD_BIN in bench-lock.sh).
# Benchmark-only: the tests, local runs and CI do not need it. Idempotent.
set -euo pipefail
. "$(dirname "$0")/lib/apt-install.sh"
apt_install_once etcd etcd-server etcd
