#!/bin/sh
# Make sure a PostgreSQL server can be started for the distributed-search test
# (tests/search/test_study_postgres.py): install Debian's postgresql package when initdb is missing.
# Never fails the build: where it cannot install, it says so and the test skips with the reason.
set -u
for dir in "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")" /usr/local/bin /usr/lib/postgresql/*/bin; do
  if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
    exit 0
  fi
done
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = "0" ] || [ -n "$SUDO" ]; }; then
  echo "PostgreSQL not found: installing Debian's postgresql package for the search test."
  if DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null 2>&1 || {
       $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql; }; then
    exit 0
  fi
  echo "warning: installing postgresql failed; the PostgreSQL search test will be skipped." >&2
  exit 0
fi
echo "note: PostgreSQL is not installed and apt-get (as root) is not available; the PostgreSQL" \
     "search test will be skipped. Install the 'postgresql' package to run it." >&2
exit 0
