#!/bin/sh
# The English text the one-shot and decomposition benchmarks calibrate and evaluate on: Debian's
# `fortunes` package (/usr/share/games/fortunes). Installed when missing; benchmarks only.
set -eu
if [ -d /usr/share/games/fortunes ] && ls /usr/share/games/fortunes/* >/dev/null 2>&1; then
  exit 0
fi
echo "English corpus not found: installing Debian's fortunes package (benchmarks only)."
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = "0" ] || [ -n "$SUDO" ]; }; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fortunes
  exit 0
fi
echo "error: install Debian's 'fortunes' package (the benchmarks' English sentences) and re-run." >&2
exit 1
