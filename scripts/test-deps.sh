#!/usr/bin/env bash
# Installs the servers the tests start on loopback, when they are missing:
#   moto (PyPI), an S3-compatible server, for the S3 backend and Object Lock;
#   Azurite (npm, with Debian's nodejs and npm), the Azure Storage emulator,
#   for the Azure Blob backend;
#   aiosmtpd (PyPI), an SMTP server with STARTTLS and AUTH, for the email tests;
#   Go and Debian's govmomi, for the vcsim conformance harness (tests/vcsim);
#   e2fsprogs (mkfs.ext4, e2fsck), for the restore drill's partition checks;
#   jsonschema (PyPI), which validates every --json output against its schema;
#   promtool (Debian's prometheus), which checks the daemon's metrics;
#   systemd-analyze (Debian's systemd), which verifies the example unit;
#   Chromium (Debian's chromium), which renders the reports for screenshots;
#   PostgreSQL (Debian's postgresql), the server of the shared-catalog tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, with the package lists read once when one is missing.
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
APT_UPDATED=""
apt_install() {
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; then
    [ -n "$APT_UPDATED" ] && return 1
    $SUDO apt-get update -qq
    APT_UPDATED=1
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
  fi
}

if ! python3 -c 'import moto.server, flask' 2>/dev/null; then
  echo "== installing moto (S3-compatible test server) from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi
if ! command -v azurite-blob >/dev/null; then
  if ! command -v npm >/dev/null; then
    echo "== installing Node.js and npm (Debian's nodejs, npm) for Azurite"
    apt_install nodejs npm
  fi
  echo "== installing Azurite (Azure Storage emulator) from npm"
  $SUDO npm install --global --silent --no-audit --no-fund 'azurite@3'
fi
if ! python3 -c 'import aiosmtpd, cryptography' 2>/dev/null; then
  echo "== installing aiosmtpd (SMTP test server) from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check 'aiosmtpd>=1.4,<2' cryptography
fi

if ! python3 -c 'import jsonschema, rfc3339_validator' 2>/dev/null; then
  echo "== installing jsonschema (JSON Schema validator) from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check 'jsonschema[format-nongpl]>=4.18,<5'
fi

if ! command -v mkfs.ext4 >/dev/null && ! [ -x /usr/sbin/mkfs.ext4 ] && ! [ -x /sbin/mkfs.ext4 ]; then
  echo "== installing e2fsprogs (mkfs.ext4, e2fsck) for the drill tests"
  apt_install e2fsprogs
fi

if ! command -v promtool >/dev/null; then
  echo "== installing promtool (Debian's prometheus) for the metrics test"
  apt_install prometheus
fi

if ! command -v systemd-analyze >/dev/null; then
  echo "== installing systemd-analyze (Debian's systemd) for the unit test"
  apt_install systemd
fi

if ! [ -x /usr/bin/chromium ]; then
  echo "== installing Chromium (Debian's chromium) for the report screenshots"
  apt_install chromium
fi

if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "== installing PostgreSQL (Debian's postgresql) for the shared-catalog tests"
  apt_install postgresql
fi

echo "== vcsim harness"
scripts/install-vcsim.sh
