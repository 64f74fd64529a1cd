#!/usr/bin/env bash
# Install the Debian tools the tests and benchmarks drive (nginx, wrk, promtool, pgbouncer, chromium) when they are missing.
set -euo pipefail
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)  # promtool (tests/deploy): Debian ships it only there, ~20 MB
[ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)  # transaction-mode pooling (tests/scale/test_pgbouncer.py)
# The web app's browser tests (tests/e2e/test_web_browser.py): Playwright from PyPI drives Debian's Chromium (Playwright's own browser
# download is not used; BAGTRACK_CHROMIUM points elsewhere).
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-tools: missing ${missing[*]} and cannot apt-get install them here; tests needing them will skip" >&2
  exit 0
fi
echo "ensure-tools: installing ${missing[*]}"
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
# Debian starts a pgbouncer of its own on 6432; the project runs its own instances, on their own ports.
[ -x /etc/init.d/pgbouncer ] && /etc/init.d/pgbouncer stop >/dev/null 2>&1 || true
