#!/usr/bin/env bash
# System tools some tests drive, installed from Debian's packages when missing.
set -euo pipefail
exit 0
