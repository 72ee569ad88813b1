#!/usr/bin/env bash
# System tools some tests drive, installed from Debian's packages when missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
APT_UPDATED=0

# Runs apt-get as root, or through sudo when not root; the package lists are refreshed once.
apt_install() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    $SUDO apt-get update
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$@"
}

# promtool: checks and unit-tests deploy/prometheus/alerts.yml (tests/unit/test_alert_rules.py).
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool missing: installing Debian's prometheus package" >&2
  apt_install prometheus
fi

# chromium: the browser Playwright drives in tests/browser (Playwright cannot download its own
# browsers here, so the tests launch Debian's build at this path).
if [ ! -x /usr/bin/chromium ]; then
  echo "chromium missing: installing Debian's chromium package" >&2
  apt_install chromium
fi

# A CJK font: the console is Chinese first, and without one Chromium draws its text as boxes
# (the screenshots in docs/console are taken from it).
if ! fc-list :lang=zh 2>/dev/null | grep -q .; then
  echo "no Chinese font: installing Debian's fonts-wqy-microhei" >&2
  apt_install fontconfig fonts-wqy-microhei
fi

exit 0
