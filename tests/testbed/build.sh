#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) pyzfsautosnap contributors
#
# Builds (or finds in the cache) a bootable Debian guest with real OpenZFS:
# kernel + initrd, ext4 root image with zfsutils/ssh/mbuffer/sanoid, and
# spl.ko/zfs.ko built against Debian's headers of that kernel with the compiler
# that kernel was built with: the host's gcc-12 for Debian 12 guests, gcc-14 in a
# cached Debian 13 build root for Debian 13 guests.
#
#   tests/testbed/build.sh            # ZFS_SERIES=2.3 (Debian 12, bookworm-backports)
#   ZFS_SERIES=2.1 tests/testbed/build.sh   # Debian 12, bookworm contrib
#   ZFS_SERIES=2.4 tests/testbed/build.sh   # Debian 13, trixie-backports contrib
#
# Prints the cache directory of the finished build on its last line.
set -euo pipefail

ZFS_SERIES=${ZFS_SERIES:-2.3}
CACHE_ROOT=${TESTBED_CACHE:-/var/cache/pyzfsautosnap-testbed}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
JOBS=${JOBS:-$(nproc)}

# RECIPE_REV is per series: bump it when anything below changes what ends up in that series' image.
case "$ZFS_SERIES" in
  2.4) RELEASE=trixie ZFS_SUITE=trixie-backports RECIPE_REV=1 ;;
  2.3) RELEASE=bookworm ZFS_SUITE=bookworm-backports RECIPE_REV=4 ;;
  2.1) RELEASE=bookworm ZFS_SUITE=bookworm RECIPE_REV=4 ;;
  *) echo "ZFS_SERIES must be 2.4, 2.3 or 2.1, not '$ZFS_SERIES'" >&2; exit 2 ;;
esac
SOURCES=(
  "deb [signed-by=$KEYRING] $MIRROR $RELEASE main contrib"
  "deb [signed-by=$KEYRING] $MIRROR $RELEASE-updates main contrib"
  "deb [signed-by=$KEYRING] $SECURITY_MIRROR $RELEASE-security main contrib"
  "deb [signed-by=$KEYRING] $MIRROR $RELEASE-backports main contrib"
)

log() { printf '[testbed %s] %s\n' "$(date +%T)" "$*" >&2; }

# One build at a time per cache: a second caller waits, then finds the finished build.
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build.lock"
flock 9

# ---------------------------------------------------------------- private apt
# A private apt configuration so the host's own sources and state stay untouched; one per release,
# so resolving a Debian 13 series never sees (or changes what resolves for) the Debian 12 ones.
APT_DIR=$CACHE_ROOT/apt
[ "$RELEASE" = bookworm ] || APT_DIR=$CACHE_ROOT/apt-$RELEASE
mkdir -p "$APT_DIR"/etc/apt/{apt.conf.d,preferences.d,sources.list.d} "$APT_DIR"/state/lists/partial \
         "$APT_DIR"/cache/archives/partial
touch "$APT_DIR/state/status"
printf '%s\n' "${SOURCES[@]}" > "$APT_DIR/etc/apt/sources.list"
APT_OPTS=(-o "Dir::Etc=$APT_DIR/etc/apt" -o "Dir::State=$APT_DIR/state"
          -o "Dir::State::status=$APT_DIR/state/status" -o "Dir::Cache=$APT_DIR/cache"
          -o Debug::NoLocking=1 -o APT::Get::List-Cleanup=0)
papt_cache() { apt-cache "${APT_OPTS[@]}" "$@"; }

latest_build() {
  # newest finished build of this series and recipe, for when the mirror is unreachable
  find "$CACHE_ROOT" -mindepth 2 -maxdepth 2 -name 'done' -path "*_zfs$ZFS_SERIES.*_r$RECIPE_REV/done" -printf '%T@ %h\n' 2>/dev/null |
    sort -rn | head -n 1 | cut -d' ' -f2-
}

if ! apt-get "${APT_OPTS[@]}" -q update >"$APT_DIR/update.log" 2>&1; then
  cached=$(latest_build)
  if [ -n "$cached" ]; then
    log "archive unreachable; using cached build $cached"
    echo "$cached"; exit 0
  fi
  cat "$APT_DIR/update.log" >&2; exit 1
fi

# ------------------------------------------------------------ resolve versions
# Old kernel ABIs vanish from the mirror, so resolve the current ones every time. The kernel comes from
# the release and its security suite (backports has a lower priority, so it is never the candidate).
KPKG_VERSION=$(papt_cache policy linux-image-amd64 | awk '/Candidate:/ {print $2}')
KABI=$(papt_cache show "linux-image-amd64=$KPKG_VERSION" | sed -n 's/^Depends: linux-image-\([^ ]*\) .*/\1/p' | head -n1)
KFLAVOURLESS=${KABI%-amd64}
ZFS_VERSION=$(papt_cache madison zfs-dkms | awk -v s="$ZFS_SUITE/contrib" '$0 ~ s {print $3; exit}')
ZFS_UPSTREAM=${ZFS_VERSION%%-*}
# linux-kbuild is named per kernel series on Debian 12 (linux-kbuild-6.1), per ABI on Debian 13
KBUILD=$(papt_cache show "linux-headers-$KABI=$KPKG_VERSION" 2>/dev/null | sed -n 's/^Depends: .*\(linux-kbuild-[^ ,]*\).*/\1/p' | head -n1)
if [ -z "$KABI" ] || [ -z "$ZFS_VERSION" ] || [ -z "$KBUILD" ]; then
  log "could not resolve kernel ($KABI, $KBUILD) or zfs ($ZFS_VERSION)"; exit 1
fi

KEY="${KABI}_${KPKG_VERSION}_zfs${ZFS_VERSION}_r${RECIPE_REV}"
KEY=${KEY//[^A-Za-z0-9._+-]/_}
OUT=$CACHE_ROOT/$KEY
if [ -f "$OUT/done" ]; then
  log "cache hit: $OUT"
  echo "$OUT"; exit 0
fi
log "building $KEY (kernel $KABI $KPKG_VERSION, zfs $ZFS_VERSION from $ZFS_SUITE)"

WORK=$CACHE_ROOT/work-$KEY
rm -rf "$WORK" "$OUT"
mkdir -p "$WORK/debs" "$WORK/src" "$OUT"
trap '[ -z "${MODULES_PID:-}" ] || kill "$MODULES_PID" 2>/dev/null; rm -rf "$WORK"' EXIT

# ------------------------------------------------------------ kernel modules
# Built in the background while mmdebstrap makes the guest root, which needs them only in its last step
# (guest-setup.sh): the compiler keeps the cores busy while mmdebstrap mostly downloads and unpacks.
build_modules() {
  ( cd "$WORK/debs" && apt-get "${APT_OPTS[@]}" -q download \
      "zfs-dkms=$ZFS_VERSION" "linux-headers-$KABI=$KPKG_VERSION" \
      "linux-headers-$KFLAVOURLESS-common=$KPKG_VERSION" "$KBUILD=$KPKG_VERSION" ) >&2
  mkdir -p "$OUT/modules"
  if [ "$RELEASE" = bookworm ]; then
    # the host is Debian 12 too: its gcc-12 is the compiler this kernel was built with
    for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$WORK/src"; done
    HDR=$WORK/src/usr/src/linux-headers-$KABI
    COMMON=$WORK/src/usr/src/linux-headers-$KFLAVOURLESS-common
    # The flavour's Makefile includes the -common tree by its absolute /usr/src path.
    sed -i "s#/usr/src/linux-headers-$KFLAVOURLESS-common#$COMMON#g" "$HDR/Makefile"
    ZSRC=$WORK/src/usr/src/zfs-$ZFS_UPSTREAM
    log "building spl.ko/zfs.ko from $ZSRC"
    ( cd "$ZSRC" \
      && ./configure --with-config=kernel --with-linux="$COMMON" --with-linux-obj="$HDR" >"$WORK/configure.log" 2>&1 \
      && make -j"$JOBS" >"$WORK/make.log" 2>&1 ) || { tail -n 40 "$WORK"/configure.log "$WORK"/make.log >&2; exit 1; }
    find "$ZSRC/module" -name '*.ko' -exec cp {} "$OUT/modules/" \;
  else
    # A newer release's kernel wants its own compiler (gcc-14 on Debian 13): build in a root of that
    # release with its compiler and this kernel's headers unpacked at their real paths. It depends on
    # the kernel only, so it is cached per kernel ABI and version and reused across zfs versions.
    BROOT=$CACHE_ROOT/buildroot-${RELEASE}_${KABI}_${KPKG_VERSION}_r${RECIPE_REV}
    BROOT=${BROOT//[^A-Za-z0-9._+\/-]/_}
    if [ ! -f "$BROOT/done" ]; then
      log "mmdebstrap $RELEASE build root $BROOT"
      rm -rf "$BROOT"
      mkdir -p "$BROOT"
      mmdebstrap --variant=minbase --mode=root --aptopt='APT::Install-Recommends "false"' --keyring="$KEYRING" \
        --include=gcc,gcc-14,make,libc6-dev,libelf-dev,dwarves,bc,kmod \
        "$RELEASE" "$BROOT/root" "${SOURCES[@]}" >"$WORK/buildroot.log" 2>&1 \
        || { tail -n 40 "$WORK/buildroot.log" >&2; exit 1; }
      for deb in "$WORK"/debs/linux-*.deb; do dpkg-deb -x "$deb" "$BROOT/root"; done
      touch "$BROOT/done"
    fi
    BUILD=$BROOT/root/build
    rm -rf "$BUILD"
    mkdir -p "$BUILD"
    dpkg-deb -x "$WORK"/debs/zfs-dkms_*.deb "$BUILD"
    ZSRC=/build/usr/src/zfs-$ZFS_UPSTREAM
    log "building spl.ko/zfs.ko from $ZSRC in $BROOT"
    chroot "$BROOT/root" /bin/sh -ec "cd $ZSRC
      ./configure --with-config=kernel --with-linux=/usr/src/linux-headers-$KFLAVOURLESS-common \
        --with-linux-obj=/usr/src/linux-headers-$KABI >/build/configure.log 2>&1
      make -j$JOBS >/build/make.log 2>&1" || { tail -n 40 "$BUILD"/configure.log "$BUILD"/make.log >&2; exit 1; }
    find "$BROOT/root$ZSRC/module" -name '*.ko' -exec cp {} "$OUT/modules/" \;
    rm -rf "$BUILD"
  fi
  if [ ! -f "$OUT/modules/zfs.ko" ] || [ ! -f "$OUT/modules/spl.ko" ]; then log "zfs.ko/spl.ko missing after build"; exit 1; fi
}
# (not called as a condition: that would switch off errexit inside it)
( trap '[ -e "$WORK/modules.ok" ] || touch "$WORK/modules.failed"' EXIT; build_modules; touch "$WORK/modules.ok" ) &
MODULES_PID=$!

# ------------------------------------------------------------------ root fs
ROOT=$WORK/root
mkdir -p "$WORK/prefs"
# Pin the zfs userland and its libraries to one suite, or apt mixes library versions.
cat > "$WORK/prefs/zfs.pref" <<EOF
Package: zfsutils-linux libzfs* libzpool* libnvpair* libuutil* zfs-zed
Pin: release n=$ZFS_SUITE
Pin-Priority: 990
EOF
PACKAGES=systemd,systemd-sysv,udev,dbus,kmod,iproute2,openssh-server,openssh-client,python3,python3-paramiko
PACKAGES+=,mbuffer,zstd,lz4,pv,sanoid,sudo,procps,less,e2fsprogs,util-linux,coreutils,findutils,acct,time
PACKAGES+=,linux-image-$KABI,initramfs-tools,zfsutils-linux
log "mmdebstrap guest root"
mmdebstrap --variant=minbase --mode=root --aptopt='APT::Install-Recommends "false"' \
  --keyring="$KEYRING" \
  --setup-hook="mkdir -p \"\$1/etc/apt/preferences.d\" && cp $WORK/prefs/zfs.pref \"\$1/etc/apt/preferences.d/\"" \
  --include="$PACKAGES" \
  --customize-hook="until [ -e $WORK/modules.ok ]; do [ ! -e $WORK/modules.failed ] && kill -0 $MODULES_PID 2>/dev/null || [ -e $WORK/modules.ok ] || exit 1; sleep 1; done" \
  --customize-hook="$(dirname "$0")/guest-setup.sh \"\$1\" $KABI $OUT/modules" \
  "$RELEASE" "$ROOT" "${SOURCES[@]}" >"$WORK/mmdebstrap.log" 2>&1 \
  || { [ -e "$WORK/modules.failed" ] || tail -n 40 "$WORK/mmdebstrap.log" >&2; exit 1; }
wait "$MODULES_PID" || exit 1
MODULES_PID=

cp "$ROOT/boot/vmlinuz-$KABI" "$OUT/vmlinuz"
cp "$ROOT/boot/initrd.img-$KABI" "$OUT/initrd.img"
cp "$ROOT/etc/ssh/ssh_host_ed25519_key.pub" "$OUT/host_ed25519_key.pub"
# shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
chroot "$ROOT" dpkg-query -W -f '${Package}\t${Version}\n' > "$OUT/packages.tsv"
log "making ext4 image"
mkfs.ext4 -q -F -L guestroot -d "$ROOT" "$OUT/rootfs.ext4" 3G
cat > "$OUT/build.env" <<EOF
KABI=$KABI
KPKG_VERSION=$KPKG_VERSION
ZFS_SERIES=$ZFS_SERIES
ZFS_VERSION=$ZFS_VERSION
RECIPE_REV=$RECIPE_REV
EOF
touch "$OUT/done"
log "done: $OUT"
echo "$OUT"
