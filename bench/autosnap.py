# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""zfs_autosnap's engine side by side with sanoid, in one OpenZFS guest, as ratios.

    python bench/autosnap.py [--datasets 500] [--snapshots 100] [--prune 10] [--zfs 2.3]

Both tools get an identical tree of DATASETS datasets, each with SNAPSHOTS daily snapshots in the
tool's own naming scheme, created with the guest clock set to each snapshot's day (sanoid ages
snapshots by their creation time, ours by name and createtxg). Each tool then takes one daily snapshot
of every dataset and prunes PRUNE+1 expired ones per dataset (keep = SNAPSHOTS - PRUNE). Only the tree
of the tool being measured is imported while it runs, since sanoid lists every pool. Reported: wall
time and the number of zfs processes (process accounting), then the no-op pass of our engine
(nothing due) against one bare ``zfs list -Hp -t snapshot -r`` of the same tree.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'tests', 'testbed'))

from vm import Testbed  # noqa: E402

GUEST = 'zfsguest'
ENGINE_DIR = '/usr/local/lib/pyzfsautosnap'
FIRST_DAY = dt.date(2026, 1, 1)


def install_engine(bed: Testbed) -> None:
    """Copy plugins/module_utils into the guest as a plain package, as the client role does."""
    tar = subprocess.run(['tar', '-C', os.path.join(REPO, 'plugins', 'module_utils'), '--exclude=__pycache__', '-cf', '-', '.'],
                         capture_output=True, check=True).stdout
    script = f'rm -rf {ENGINE_DIR} && mkdir -p {ENGINE_DIR}/pyzfsautosnap && tar -C {ENGINE_DIR}/pyzfsautosnap -xf -'
    subprocess.run(bed.ssh_argv(GUEST, ['sh', '-c', script]), input=tar, check=True)


def guest(bed: Testbed, script: str) -> str:
    return bed.sh(GUEST, script).stdout


def log(msg: str) -> None:
    print(f'[bench {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


def write_file(bed: Testbed, path: str, text: str) -> None:
    subprocess.run(bed.ssh_argv(GUEST, ['sh', '-c', f'cat > {path}']), input=text.encode('utf-8'), check=True)


def timed(bed: Testbed, command: str) -> tuple[float, int]:
    """Wall seconds of *command* in the guest and the zfs processes it spawned."""
    out = guest(bed, f'''
        : > /var/log/account/pacct; accton /var/log/account/pacct >/dev/null
        s=$(date +%s.%N); {command} >/tmp/bench.out 2>&1 || {{ cat /tmp/bench.out >&2; exit 1; }}; e=$(date +%s.%N)
        accton off >/dev/null
        echo "$s $e $(lastcomm -f /var/log/account/pacct --command zfs | wc -l)"
    ''').split()
    return float(out[1]) - float(out[0]), int(out[2])


def build_trees(bed: Testbed, datasets: int, snapshots: int) -> None:
    guest(bed, f'''
        for pool in tank zfsbackups; do
          i=0; while [ $i -lt {datasets} ]; do zfs create $pool/bench/d$i; i=$((i+1)); done
        done
    ''')
    days = [FIRST_DAY + dt.timedelta(days=j) for j in range(snapshots)]
    lines = []
    for day in days:
        lines.append(f'date -s "{day:%Y-%m-%d} 00:00:00" >/dev/null')
        lines.append(f'zfs snapshot -r tank/bench@zfs-auto-snap_daily-{day:%Y-%m-%d}-0000')
        lines.append(f'zfs snapshot -r zfsbackups/bench@autosnap_{day:%Y-%m-%d}_00:00:00_daily')
    lines.append(f'date -s @{int(time.time())} >/dev/null')
    guest(bed, '\n'.join(lines))


SANOID_CONF = '''[zfsbackups/bench]
    use_template = bench
    recursive = yes

[template_bench]
    frequently = 0
    hourly = 0
    daily = {keep}
    weekly = 0
    monthly = 0
    yearly = 0
    autosnap = yes
    autoprune = yes
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--datasets', type=int, default=500)
    parser.add_argument('--snapshots', type=int, default=100)
    parser.add_argument('--prune', type=int, default=10, help='expired snapshots per dataset beyond the new one')
    parser.add_argument('--repeat', type=int, default=5, help='runs of each no-op measurement')
    parser.add_argument('--zfs', dest='series', default=os.environ.get('ZFS_SERIES', '2.3'))
    args = parser.parse_args()
    keep = args.snapshots - args.prune
    report: dict[str, object] = {'datasets': args.datasets, 'snapshots_per_dataset': args.snapshots, 'keep': keep,
                                 'series': args.series}
    with Testbed('single', args.series, memory_mb=4096) as bed:
        report['accel'] = bed.accel
        report['zfs_version'] = guest(bed, 'zfs version | head -n1').strip()
        install_engine(bed)
        report['sanoid_version'] = guest(bed, 'dpkg-query -W -f "\\${Version}" sanoid')
        guest(bed, 'zfs create -o mountpoint=none tank/bench && zfs create -o mountpoint=none zfsbackups/bench')
        guest(bed, 'mkdir -p /etc/sanoid-bench /var/cache/sanoid; rm -f /var/cache/sanoid/snapshots.txt; '
                   'cp /usr/share/sanoid/sanoid.defaults.conf /etc/sanoid-bench/')
        # sanoid counts the snapshots it had before this run's, so it keeps one fewer here to prune as
        # many as ours (a `--readonly` run to check the file first would leave it pruning nothing)
        write_file(bed, '/etc/sanoid-bench/sanoid.conf', SANOID_CONF.format(keep=keep - 1))
        log(f'creating {args.datasets} datasets with {args.snapshots} snapshots each, in both pools')
        t0 = time.monotonic()
        build_trees(bed, args.datasets, args.snapshots)
        report['setup_seconds'] = round(time.monotonic() - t0, 1)
        log(f'setup took {report["setup_seconds"]} s')
        ours_cmd = (f'cd {ENGINE_DIR} && python3 -m pyzfsautosnap._cli autosnap --root tank/bench --label daily --keep {keep}')

        guest(bed, 'zpool export zfsbackups')
        log('ours: take + prune')
        ours_time, ours_procs = timed(bed, ours_cmd)
        log(f'  {ours_time:.1f} s, {ours_procs} zfs processes')
        guest(bed, 'zpool import -d /dev zfsbackups && zpool export tank')
        log('sanoid: take + prune')
        sanoid_time, sanoid_procs = timed(bed, 'sanoid --configdir=/etc/sanoid-bench --cron --force-update')
        log(f'  {sanoid_time:.1f} s, {sanoid_procs} zfs processes')
        guest(bed, 'zpool import -d /dev tank')
        counts = guest(bed, 'zfs list -H -t snapshot -o name -r tank/bench | wc -l; zfs list -H -t snapshot -o name -r zfsbackups/bench | wc -l').split()
        report['snapshots_left'] = {'ours': int(counts[0]), 'sanoid': int(counts[1])}
        report['take_prune'] = {'ours_seconds': round(ours_time, 2), 'sanoid_seconds': round(sanoid_time, 2),
                                'ratio': round(ours_time / sanoid_time, 3),
                                'ours_zfs_processes': ours_procs, 'sanoid_zfs_processes': sanoid_procs}

        noop, bare = [], []
        for _round in range(args.repeat):
            log('no-op pass and bare listing')
            noop.append(timed(bed, ours_cmd)[0])
            bare.append(timed(bed, 'zfs list -Hp -t snapshot -r tank/bench >/dev/null')[0])
            log(f'  {noop[-1]:.1f} s and {bare[-1]:.1f} s')
        report['noop'] = {'ours_median_seconds': round(statistics.median(noop), 2),
                          'bare_list_median_seconds': round(statistics.median(bare), 2),
                          'ratio': round(statistics.median(noop) / statistics.median(bare), 3)}
    os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
    path = os.path.join(HERE, 'results', f'autosnap-zfs{args.series}.json')
    with open(path, 'w') as fh:
        json.dump(report, fh, indent=2)
    print(json.dumps(report, indent=2))
    expected = args.datasets + 1
    want = expected * (keep)
    if report['snapshots_left'] != {'ours': want, 'sanoid': want}:
        print(f'warning: expected {want} snapshots left in each tree, got {report["snapshots_left"]}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
