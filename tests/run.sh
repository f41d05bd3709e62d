#!/usr/bin/env bash
# Runs every test of fnm-escalator: unit tests, the HTTP and CLI integration tests, and the
# end-to-end tests against real gobgpd, ExaBGP 4.2, BIRD 2 and FastNetMon Community 1.2.4 on loopback (which the tests start
# and stop themselves). Installs the daemons with apt-get first if they are missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
{ command -v gobgpd && command -v gobgp; } >/dev/null 2>&1 || missing+=(gobgpd)
{ command -v bird && command -v birdc; } >/dev/null 2>&1 || missing+=(bird2)
command -v exabgp >/dev/null 2>&1 || missing+=(exabgp)
[ -x /usr/sbin/fastnetmon ] || missing+=(fastnetmon)
if [ ${#missing[@]} -gt 0 ]; then
  apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
  [ "$(id -u)" = 0 ] || apt=(sudo -n "${apt[@]}")
  echo "tests/run.sh: installing ${missing[*]}"
  "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { "${apt[@]}" update -qq && "${apt[@]}" install -y --no-install-recommends "${missing[@]}"; }
fi

cargo test --locked "$@"
