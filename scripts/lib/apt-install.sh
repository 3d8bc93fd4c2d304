# Sourced by the install scripts: install one Debian package unless its
# command is already on PATH, and keep the package's own system service from
# running (the project starts its own instances on ports it picks).
#   apt_install_once <command> <package> <service>
apt_install_once() {
  local cmd=$1 pkg=$2 service=$3 sudo=""
  if command -v "$cmd" >/dev/null 2>&1; then
    echo "$cmd present: $("$cmd" --version | head -n1)"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null
  if command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
  fi
  echo "installed: $("$cmd" --version | head -n1)"
}
