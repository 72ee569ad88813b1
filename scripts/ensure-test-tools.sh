#!/usr/bin/env bash
# System tools some tests drive, installed from Debian's packages when missing.
set -euo pipefail

# Runs apt-get as root, or through sudo when there is one.
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
  fi
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "$@"
}

# promtool: checks and unit-tests deploy/prometheus/alerts.yml (tests/unit/test_alert_rules.py).
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool missing: installing Debian's prometheus package" >&2
  apt_install prometheus
fi

exit 0
