#!/usr/bin/env bash
# The Debian package check (CI runs it after tests/run.sh; needs root):
#   1. copies this tree into a temporary directory: dpkg-buildpackage writes
#      the .deb, .buildinfo and .changes into the parent of the tree, and dh
#      leaves obj-*/ and debian/ artefacts, so nothing of it lands here;
#   2. builds libcontrastive-dev there (dpkg-buildpackage -us -uc -b) and
#      checks what the .deb holds;
#   3. installs it with apt-get and builds consumers against the installed
#      package (debian/tests/consumers: find_package without CMAKE_PREFIX_PATH,
#      pkg-config);
#   4. removes the package again, unless it was installed before.
# Usage: bash tests/package.sh [directory to keep the .deb in]
# Needs: build-essential debhelper cmake libeigen3-dev pkg-config.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
keep=${1:-}
work=$(mktemp -d "${TMPDIR:-/tmp}/contrastive-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # apt-get reads the .deb as user _apt
step_start=$SECONDS
step() {
  echo "package.sh: $1 took $((SECONDS - step_start)) s"
  step_start=$SECONDS
}

# 1. A clean copy: no VCS data, build trees or leftovers of an in-tree package build.
mkdir "$work/contrastive"
tar -C "$src" \
    --exclude=./.git --exclude='./build' --exclude='./build-*' --exclude='./obj-*' \
    --exclude=./debian/.debhelper --exclude=./debian/tmp --exclude=./debian/libcontrastive-dev \
    --exclude=./debian/files --exclude='./debian/*.substvars' --exclude='./debian/*.debhelper.log' --exclude=./debian/debhelper-build-stamp \
    -cf - . | tar -C "$work/contrastive" -xf -
step "copying the tree"

# 2. Build the binary package.
(cd "$work/contrastive" && dpkg-buildpackage -us -uc -b)
debs=("$work"/libcontrastive-dev_*_all.deb)
if [[ ${#debs[@]} -ne 1 || ! -f "${debs[0]}" ]]; then
  echo "package.sh: expected one libcontrastive-dev_*_all.deb in $work" >&2
  exit 1
fi
deb=${debs[0]}
contents=$(dpkg-deb -c "$deb")
for f in ./usr/include/contrastive/contrastive.hpp ./usr/include/contrastive/version.hpp \
         ./usr/share/cmake/contrastive/contrastiveConfig.cmake \
         ./usr/share/cmake/contrastive/contrastiveConfigVersion.cmake \
         ./usr/share/cmake/contrastive/contrastiveTargets.cmake \
         ./usr/share/pkgconfig/contrastive.pc ./usr/share/doc/libcontrastive-dev/copyright; do
  if ! grep -q " $f\$" <<<"$contents"; then
    echo "package.sh: $f is not in $(basename "$deb")" >&2
    exit 1
  fi
done
if [[ "$(dpkg-deb -f "$deb" Architecture)" != all ]] || ! dpkg-deb -f "$deb" Depends | grep -q libeigen3-dev; then
  echo "package.sh: $(basename "$deb") must be Architecture: all and depend on libeigen3-dev" >&2
  exit 1
fi
if [[ -n "$keep" ]]; then
  mkdir -p "$keep"
  cp "$work"/*.deb "$work"/*.buildinfo "$work"/*.changes "$keep"/
fi
step "dpkg-buildpackage -us -uc -b ($(basename "$deb"), $(stat -c %s "$deb") bytes)"

# 3. Install it and build against it.
was_installed=no
if dpkg-query -W -f='${Status}' libcontrastive-dev 2>/dev/null | grep -q 'install ok installed'; then
  was_installed=yes
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$deb"
step "apt-get install"
bash "$src/debian/tests/consumers"
step "consumers of the installed package"

# 4. Leave the machine as it was.
if [[ $was_installed == no ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -q libcontrastive-dev
  step "apt-get purge"
else
  echo "package.sh: libcontrastive-dev was installed before; it is now $(dpkg-query -W -f='${Version}' libcontrastive-dev)"
fi
