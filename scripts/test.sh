#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs the system
# packages the build and the tests need (when run as root), then cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential pkg-config libssl-dev ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "scripts/test.sh: missing Debian packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

cargo test --locked --all-targets "$@"
