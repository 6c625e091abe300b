#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) pyzfsautosnap contributors
#
# mmdebstrap customize hook: turns the fresh root at $1 into a test guest.
#   guest-setup.sh ROOT KERNEL_ABI MODULE_DIR
set -euo pipefail
ROOT=$1 KABI=$2 MODS=$3

# OpenZFS modules built on the host for exactly this kernel; depmod needs the
# guest's kernel version, not the host's.
mkdir -p "$ROOT/lib/modules/$KABI/updates/zfs"
cp "$MODS"/*.ko "$ROOT/lib/modules/$KABI/updates/zfs/"
chroot "$ROOT" depmod -a "$KABI"
chroot "$ROOT" modinfo -k "$KABI" zfs >/dev/null
echo zfs > "$ROOT/etc/modules-load.d/zfs.conf"

echo zfsguest > "$ROOT/etc/hostname"
cat > "$ROOT/etc/hosts" <<'EOF'
127.0.0.1 localhost
169.254.77.1 client
169.254.77.2 target
EOF
echo '/dev/vda / ext4 rw,noatime 0 1' > "$ROOT/etc/fstab"

# eth0: QEMU user network (SSH from the host); eth1: the guest-to-guest link.
mkdir -p "$ROOT/etc/systemd/network"
cat > "$ROOT/etc/systemd/network/10-eth0.network" <<'EOF'
[Match]
Name=eth0
[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF

# Per-run settings arrive on the kernel command line, so the cached image never changes.
cat > "$ROOT/usr/local/sbin/testbed-boot" <<'EOF'
#!/bin/sh
set -eu
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    testbed.authkey=*) echo "${arg#testbed.authkey=}" | base64 -d >> /root/.ssh/authorized_keys ;;
    testbed.linkaddr=*) ip link set eth1 up && ip addr add "${arg#testbed.linkaddr=}" dev eth1 ;;
  esac
done
EOF
chmod 755 "$ROOT/usr/local/sbin/testbed-boot"
cat > "$ROOT/etc/systemd/system/testbed-boot.service" <<'EOF'
[Unit]
Description=Apply per-run test bed settings from the kernel command line
Before=ssh.service
After=systemd-udev-settle.service systemd-networkd.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/testbed-boot
RemainAfterExit=yes
[Install]
WantedBy=multi-user.target
EOF

# One root key shared by every guest of this image: guests reach each other and
# themselves over SSH; the host key is recorded for the same names.
mkdir -p "$ROOT/root/.ssh"
chmod 700 "$ROOT/root/.ssh"
rm -f "$ROOT/root/.ssh/id_ed25519" "$ROOT/root/.ssh/id_ed25519.pub"
ssh-keygen -q -t ed25519 -N '' -C testbed-guest -f "$ROOT/root/.ssh/id_ed25519"
cp "$ROOT/root/.ssh/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
chmod 600 "$ROOT/root/.ssh/authorized_keys"
hostkey=$(cut -d' ' -f1,2 "$ROOT/etc/ssh/ssh_host_ed25519_key.pub")
for h in localhost 127.0.0.1 client target 169.254.77.1 169.254.77.2 zfsguest; do
  echo "$h $hostkey"
done > "$ROOT/root/.ssh/known_hosts"
cat > "$ROOT/etc/ssh/sshd_config.d/testbed.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
MaxStartups 64:30:128
MaxSessions 64
EOF

chroot "$ROOT" systemctl enable systemd-networkd testbed-boot.service ssh >/dev/null 2>&1
for unit in zfs-load-module.service zfs.target; do
  chroot "$ROOT" systemctl enable "$unit" >/dev/null 2>&1 || true
done
# Nothing may snapshot, prune or scrub behind the tests' backs.
for unit in sanoid.timer sanoid-prune.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
            fstrim.timer zfs-scrub-monthly@.timer zfs-trim-monthly@.timer zfs-import-cache.service \
            zfs-import-scan.service zfs-mount.service zfs-zed.service acct.service; do
  chroot "$ROOT" systemctl disable "$unit" >/dev/null 2>&1 || true
  chroot "$ROOT" systemctl mask "$unit" >/dev/null 2>&1 || true
done
chroot "$ROOT" systemctl mask getty@tty1.service serial-getty@ttyS0.service >/dev/null 2>&1 || true
