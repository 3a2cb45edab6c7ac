#!/usr/bin/env bash
# Build a flat apt repository (one folder: the .deb files, Packages, Packages.gz, Release and,
# when signed, InRelease, Release.gpg and the public key) that any web server or file share can
# serve as it is.
#
#   bash packaging/publish-apt-repo.sh -k KEYID -o dist/apt ../s1mpled_0.1.0_amd64.deb
#   bash packaging/publish-apt-repo.sh -o dist/apt ../s1mpled_*.deb        # unsigned (warns)
#
#   -k KEYID  sign with this GPG key (gpg --clearsign => InRelease, gpg --detach-sign =>
#             Release.gpg) and export its public key as s1mpled-archive-keyring.gpg;
#             also taken from $GPG_KEY_ID. GNUPGHOME selects the keyring as usual.
#   -o DIR    the repository folder (default dist/apt); files of earlier runs are kept, so
#             publishing a new version adds it next to the old ones.
#
# A user adds the signed repository (served at https://HOST/PATH) with:
#
#   sudo curl -fsSLo /usr/share/keyrings/s1mpled-archive-keyring.gpg \
#       https://HOST/PATH/s1mpled-archive-keyring.gpg
#   echo 'deb [signed-by=/usr/share/keyrings/s1mpled-archive-keyring.gpg] https://HOST/PATH ./' |
#       sudo tee /etc/apt/sources.list.d/s1mpled.list
#   sudo apt update && sudo apt install s1mpled
#
# (Check the key's fingerprint out of band: `gpg --show-keys s1mpled-archive-keyring.gpg`.)
# An unsigned repository needs `deb [trusted=yes] ...`, which makes apt install whatever the
# server (or anyone in between) hands out: use it only on a network you trust.
#
# Needs only dpkg-deb, coreutils, gzip and (for signing) gpg.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }

key=${GPG_KEY_ID:-}
out=dist/apt
while getopts "k:o:h" opt; do
    case $opt in
        k) key=$OPTARG ;;
        o) out=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
(($#)) || usage

mkdir -p "$out"
for deb in "$@"; do
    dpkg-deb -f "$deb" Package >/dev/null  # refuse anything that is not a .deb
    cp -f "$deb" "$out/"
done
cd "$out"

# Packages: each .deb's control fields plus where it is and its checksums (what
# dpkg-scanpackages writes, without needing dpkg-dev).
{
    first=1
    for deb in $(ls -1 -- *.deb | LC_ALL=C sort); do
        ((first)) || echo
        first=0
        dpkg-deb -f "$deb" | grep -v -E '^(Filename|Size|MD5sum|SHA1|SHA256):'
        echo "Filename: ./$deb"
        echo "Size: $(stat -c %s "$deb")"
        echo "MD5sum: $(md5sum "$deb" | cut -d' ' -f1)"
        echo "SHA1: $(sha1sum "$deb" | cut -d' ' -f1)"
        echo "SHA256: $(sha256sum "$deb" | cut -d' ' -f1)"
    done
} >Packages
gzip -9nkf Packages

# Release: the checksums apt verifies every index against. The date is the build's
# SOURCE_DATE_EPOCH when set, so the same inputs give the same repository.
archs=$(for deb in *.deb; do dpkg-deb -f "$deb" Architecture; done | LC_ALL=C sort -u | tr '\n' ' ')
date_s=${SOURCE_DATE_EPOCH:-$(date +%s)}
{
    echo "Origin: s1mpled"
    echo "Label: s1mpled"
    echo "Date: $(LC_ALL=C date -u -R -d "@$date_s")"
    echo "Architectures: ${archs% }"
    echo "Description: s1mpled, the S1mpleTrader operations daemon"
    for sum in MD5Sum:md5sum SHA1:sha1sum SHA256:sha256sum; do
        echo "${sum%%:*}:"
        for f in Packages Packages.gz; do
            printf ' %s %s %s\n' "$(${sum#*:} "$f" | cut -d' ' -f1)" "$(stat -c %s "$f")" "$f"
        done
    done
} >Release

rm -f InRelease Release.gpg
if [ -n "$key" ]; then
    gpg --batch --yes --local-user "$key" --digest-algo SHA256 --clearsign -o InRelease Release
    gpg --batch --yes --local-user "$key" --digest-algo SHA256 --armor --detach-sign -o Release.gpg Release
    gpg --batch --yes --export "$key" >s1mpled-archive-keyring.gpg
    [ -s s1mpled-archive-keyring.gpg ] || { echo "publish-apt-repo: no public key for $key" >&2; exit 1; }
    echo "publish-apt-repo: signed with $key; users need s1mpled-archive-keyring.gpg (signed-by=)" >&2
else
    cat >&2 <<'EOF'
publish-apt-repo: WARNING: no GPG key given (-k KEYID or GPG_KEY_ID): the repository is UNSIGNED.
publish-apt-repo: WARNING: apt refuses it unless the source says [trusted=yes], and then nothing
publish-apt-repo: WARNING: protects users from a tampered server or connection. Sign it for real use.
EOF
fi
echo "publish-apt-repo: $(grep -c '^Package:' Packages) package(s) in $(pwd)" >&2
