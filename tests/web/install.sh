#!/usr/bin/env bash
# What tests/web needs beyond the Python packages: Debian's Chromium at /usr/bin/chromium.
# The Python side (the `playwright` package, driving that Chromium) comes with the dev extra;
# never run `playwright install`, which downloads browsers.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -x /usr/bin/chromium ]; then
  echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
else
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  echo "chromium: $(/usr/bin/chromium --version)"
fi
