#!/usr/bin/env bash
# Prepare a development/CI machine: the Debian packages the build needs, then a virtualenv with
# s1mpled and its test tools. Safe to re-run: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# libsystemd-dev + pkg-config: systemd-python compiles against libsystemd.
# systemd (systemd-analyze), dpkg-dev, gnupg: tests/test_packaging.py checks the units and the apt repo script.
# mmdebstrap, systemd-container, zstd + build-deb.sh's build deps: tests/test_systemd_e2e.py (container).
# chromium + chromium-driver: tests/test_dashboard_browser.py (the dashboard in a real headless browser).
APT_PACKAGES=(libsystemd-dev pkg-config gcc systemd dpkg-dev gnupg mmdebstrap systemd-container zstd git debhelper dh-virtualenv bash-completion python3 python3-dev python3-venv build-essential lintian chromium chromium-driver)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "dev-setup: installing Debian packages: ${missing[*]}" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${missing[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.s1mpled-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
    touch "$stamp"
fi
