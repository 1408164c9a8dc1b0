#!/bin/sh
# Make sure Debian's chromium is at /usr/bin/chromium for the report's browser test
# (tests/report/test_browser.py). Never fails the build: without it that test skips with a message.
set -u
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
fi
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = "0" ] || [ -n "$SUDO" ]; }; then
  echo "chromium not found at /usr/bin/chromium: installing Debian's chromium package."
  if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium; then
    exit 0
  fi
fi
echo "note: chromium could not be installed (needs apt-get as root); the report's browser test will be skipped." >&2
exit 0
