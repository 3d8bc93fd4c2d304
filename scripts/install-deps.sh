#!/usr/bin/env bash
# Install what the tests and local runs need that cargo does not bring:
# Redis (the queue and cache services' shared store, and the tests' real
# server); for the fault suite (scripts/chaos.sh) iproute2 and iptables
# (the lock nodes' network namespaces and partitions) and a C compiler (the
# disk fault shim). Idempotent; uses Debian's packages.
set -euo pipefail
. "$(dirname "$0")/lib/apt-install.sh"
apt_install_once redis-server redis-server redis-server
apt_install_once iptables iptables iptables
apt_install_once cc gcc gcc
if ! command -v ip >/dev/null 2>&1; then
  sudo=""; if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq iproute2 >/dev/null
fi
echo "ip present: $(ip -V)"
