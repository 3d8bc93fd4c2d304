#!/usr/bin/env bash
# Install the benchmarks' baselines from Debian's packages (scripts/bench.sh
# runs this): etcd 3.4 (etcd-server) for the lock service, nginx for the
# gateway hop, and a TrueType font for the charts' text. Redis comes with
# scripts/install-deps.sh. Benchmark-only: tests and local runs do not need
# these. Idempotent.
#
# The packages' own services are kept from starting (a policy-rc.d for the
# length of the install): the benchmark starts its own instances on
# 127.0.0.1 ports it picks, and a stock nginx would listen on *:80.
set -euo pipefail
here="$(dirname "$0")"
. "$here/lib/apt-install.sh"
bash "$here/install-deps.sh" >/dev/null

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
if [ "${#missing[@]}" -gt 0 ]; then
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    $sudo sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
    made_policy=1
  fi
  trap 'if [ -n "$made_policy" ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi' EXIT
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "etcd: $(etcd --version | head -n1)"
echo "nginx: $( (/usr/sbin/nginx -v || nginx -v) 2>&1 | head -n1)"
echo "font: /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
