#!/usr/bin/env bash
# Build the s1mpled Debian package (Debian 12): install the build dependencies that are missing,
# run `dpkg-buildpackage -us -uc -b` from the repository root, check the result with lintian and
# print the path of the .deb (../s1mpled_<version>_<arch>.deb) as the last line of stdout.
#
#   bash packaging/build-deb.sh            # everything; progress on stderr
#   NO_LINTIAN=1 bash packaging/build-deb.sh
#
# The build needs root (or sudo) only to install missing build dependencies, and network access
# to PyPI: dh-virtualenv installs the pinned wheels of debian/requirements.txt into the venv.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's python3 and tools, never a pyenv/venv python that comes first in PATH: the venv in the
# package must be built by the interpreter the package depends on (/usr/bin/python3, 3.11).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset VIRTUAL_ENV PYTHONHOME PYTHONPATH

log() { printf 'build-deb: %s\n' "$*" >&2; }

# What debian/control's Build-Depends need, plus lintian for the check below.
BUILD_DEPS=(debhelper dh-virtualenv bash-completion python3 python3-dev python3-venv
    libsystemd-dev pkg-config build-essential)
[ -n "${NO_LINTIAN:-}" ] || BUILD_DEPS+=(lintian)

install_missing() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
        --no-install-recommends "$@" >&2
}

install_missing "${BUILD_DEPS[@]}"
# The venv is made by `python3 -m venv`: make sure Debian's 3.11 can (ensurepip is in python3-venv).
python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' >&2
python3 -m venv --help >/dev/null

version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb="$(cd .. && pwd)/s1mpled_${version}_${arch}.deb"
changes="$(cd .. && pwd)/s1mpled_${version}_${arch}.changes"

log "building s1mpled ${version} (${arch})"
start=$SECONDS
# -tc: clean the tree afterwards (debian/s1mpled holds the whole 150 MB venv).
dpkg-buildpackage -us -uc -b -tc >&2
log "built in $((SECONDS - start)) s: $(du -h "$deb" | cut -f1) $deb"

if [ -z "${NO_LINTIAN:-}" ]; then
    # Errors and warnings fail the build (a package that builds is lintian-clean); info is shown.
    # Overrides are justified in debian/s1mpled.lintian-overrides.
    log "lintian:"
    lintian --fail-on error,warning --info "$changes" >&2
fi

echo "$deb"
