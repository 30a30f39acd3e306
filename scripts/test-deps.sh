#!/usr/bin/env bash
# Installs the servers the tests start on loopback, when they are missing:
#   moto (PyPI), an S3-compatible server, for the S3 backend and Object Lock;
#   Go and Debian's govmomi, for the vcsim conformance harness (tests/vcsim).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import moto.server, flask' 2>/dev/null; then
  echo "== installing moto (S3-compatible test server) from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi

echo "== vcsim harness"
scripts/install-vcsim.sh
