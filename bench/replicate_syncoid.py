# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""zfs_replicate's engine side by side with syncoid, in one OpenZFS guest, as ratios.

    python bench/replicate_syncoid.py [--datasets 200] [--rounds 1] [--size-mib 1024] [--big-rounds 3] [--zfs 2.3]

Both tools push from pool tank over ssh to root@localhost into pool zfsbackups (the same guest, so
the same ssh, the same cipher and the same CPUs), each into a root of its own whose mountpoint is
none, so neither mounts what it receives. Both send uncompressed (syncoid ``--compress=none``, ours
``compression: none``); syncoid runs with ``--quiet``, which leaves pv out of its pipeline, and its
default mbuffer on both ends, ours with its default mbuffer on the receiving end. Ours runs through
the plain CLI entry point, installed like the client role does.

many: tank/b and DATASETS datasets below it get a first snapshot, which each tool replicates in full
(reported, not the target); then, ROUNDS times, every dataset gets a small write and one new
snapshot, and each tool's incremental run is timed (the order alternates between rounds).

big: tank/big gets SIZE MiB of random data and one snapshot; BIG_ROUNDS times (the order alternating),
each tool's full send is timed into a fresh target, with the ARC of tank dropped (export and import)
before each; the medians are compared.

Snapshots carry zfs-auto-snap names so ours selects them; syncoid runs with ``--no-sync-snap`` and
sends the same snapshots. Reported: wall time in the guest, the processes each run spawned and the
CPU they used (process accounting: all, zfs, ssh, and the commands that used the most CPU), ratios
ours/syncoid (below 1 is faster), and a check that both targets hold the source's snapshots (by
guid).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import sys
import time
import typing as t

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'tests', 'testbed'))
sys.path.insert(0, HERE)

from autosnap import ENGINE_DIR, guest, install_engine  # noqa: E402
from vm import Testbed  # noqa: E402

FIRST_DAY = dt.date(2026, 1, 1)
TARGET = 'root@localhost'


def snapname(day: int) -> str:
    return f'zfs-auto-snap_daily-{FIRST_DAY + dt.timedelta(days=day):%Y-%m-%d}-0000'


def syncoid_cmd(source: str, target: str, recursive: bool) -> str:
    flags = '--no-privilege-elevation --no-sync-snap --quiet --compress=none' + (' --recursive' if recursive else '')
    return f'syncoid {flags} {source} {TARGET}:{target}'


def ours_cmd(source: str, recursive: bool) -> str:
    flags = '--recursive ' if recursive else ''
    return (f'cd {ENGINE_DIR} && python3 -m pyzfsautosnap._cli replicate {source} {flags}--target-root zfsbackups/ours '
            '--target-layout basename --target-host localhost --ssh-user root')


def log(msg: str) -> None:
    print(f'[bench {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


# lastcomm: command, flags (may be blank), user, tty, CPU seconds
_ACCT_RE = re.compile(r'^(\S+)\s+(?:[SFCDX]+\s+)?\S+\s+\S+\s+([0-9.]+) secs')


def timed(bed: Testbed, command: str) -> dict[str, t.Any]:
    """Wall seconds of *command* in the guest, the processes it spawned (with their CPU), and its output."""
    log(command.rsplit(' && ', maxsplit=1)[-1][:100])
    out = guest(bed, f'''
        : > /var/log/account/pacct; accton /var/log/account/pacct >/dev/null
        s=$(date +%s.%N); {command} >/tmp/bench.out 2>&1 || {{ accton off >/dev/null; cat /tmp/bench.out >&2; exit 1; }}; e=$(date +%s.%N)
        accton off >/dev/null
        echo "$s $e"
    ''').split()[-2:]
    seconds = float(out[1]) - float(out[0])
    log(f'  {seconds:.1f} s')
    by_command: dict[str, list[t.Any]] = {}
    for line in guest(bed, 'lastcomm -f /var/log/account/pacct').splitlines():
        match = _ACCT_RE.match(line)
        if match:
            entry = by_command.setdefault(match.group(1), [0, 0.0])
            entry[0] += 1
            entry[1] += float(match.group(2))
    top = sorted(by_command.items(), key=lambda item: -item[1][1])[:8]
    return {'seconds': round(seconds, 2), 'processes': sum(n for n, _cpu in by_command.values()),
            'zfs_processes': by_command.get('zfs', [0])[0], 'ssh_processes': by_command.get('ssh', [0])[0],
            'cpu_seconds': round(sum(cpu for _n, cpu in by_command.values()), 2),
            'top_cpu': {name: {'processes': n, 'cpu_seconds': round(cpu, 2)} for name, (n, cpu) in top},
            'output': guest(bed, 'cat /tmp/bench.out')}


def check_ours(result: dict[str, t.Any]) -> dict[str, t.Any]:
    """Our CLI prints its result as JSON; a run that reports a failure is not a measurement."""
    data = json.loads(result.pop('output'))
    if data.get('failed'):
        raise SystemExit(f'ours failed: {data.get("msg")}')
    result['bytes'] = sum(d.get('bytes', 0) for d in data.get('datasets', []))
    result['datasets'] = len(data.get('datasets', []))
    return result


def check_syncoid(result: dict[str, t.Any]) -> dict[str, t.Any]:
    text = result.pop('output').strip()
    if text:
        result['messages'] = text.splitlines()[-5:]
    return result


def snapshots_by_guid(bed: Testbed, root: str) -> set[tuple[str, str, str]]:
    """(dataset below *root*, snapshot name, guid) of every snapshot under *root*."""
    out = guest(bed, f'zfs list -H -p -t snapshot -o name,guid -r {root}')
    found = set()
    for line in out.splitlines():
        name, guid = line.split('\t')
        dataset, snap = name.split('@', 1)
        found.add((dataset[len(root):], snap, guid))
    return found


def compare_trees(bed: Testbed, source: str, targets: t.Mapping[str, str]) -> dict[str, t.Any]:
    want = snapshots_by_guid(bed, source)
    out: dict[str, t.Any] = {'source_snapshots': len(want)}
    for tool, root in targets.items():
        got = snapshots_by_guid(bed, root)
        out[tool] = {'snapshots': len(got), 'missing': len(want - got), 'extra': len(got - want)}
    return out


def ratio(ours: float, theirs: float) -> float:
    return round(ours / theirs, 3) if theirs else float('nan')


def bench_many(bed: Testbed, datasets: int, rounds: int) -> dict[str, t.Any]:
    report: dict[str, t.Any] = {'datasets': datasets + 1, 'rounds': rounds,
                                'note': 'tank/b and its DATASETS children: every dataset gets one new snapshot per round'}
    t0 = time.monotonic()
    log(f'creating tank/b and {datasets} datasets below it')
    guest(bed, f'''
        zfs create -o mountpoint=/tank/b tank/b
        i=0; while [ $i -lt {datasets} ]; do zfs create tank/b/d$i; i=$((i+1)); done
        for d in $(zfs list -H -o mountpoint -r tank/b); do head -c 65536 /dev/urandom > $d/f0; done
        zfs snapshot -r tank/b@{snapname(0)}
    ''')
    report['setup_seconds'] = round(time.monotonic() - t0, 1)
    report['initial_full'] = {'syncoid': check_syncoid(timed(bed, syncoid_cmd('tank/b', 'zfsbackups/syncoid/b', True))),
                              'ours': check_ours(timed(bed, ours_cmd('tank/b', True)))}
    samples: dict[str, list[dict[str, t.Any]]] = {'syncoid': [], 'ours': []}
    for day in range(1, rounds + 1):
        guest(bed, f'''
            for d in $(zfs list -H -o mountpoint -r tank/b); do head -c 16384 /dev/urandom > $d/f{day}; done
            zfs snapshot -r tank/b@{snapname(day)}
        ''')
        order = ('syncoid', 'ours') if day % 2 else ('ours', 'syncoid')
        for tool in order:
            if tool == 'syncoid':
                samples[tool].append(check_syncoid(timed(bed, syncoid_cmd('tank/b', 'zfsbackups/syncoid/b', True))))
            else:
                samples[tool].append(check_ours(timed(bed, ours_cmd('tank/b', True))))
    syncoid_s = statistics.median(s['seconds'] for s in samples['syncoid'])
    ours_s = statistics.median(s['seconds'] for s in samples['ours'])
    report['incremental'] = {'syncoid_median_seconds': syncoid_s, 'ours_median_seconds': ours_s,
                             'ratio': ratio(ours_s, syncoid_s), 'target': '<= 0.3', 'runs': samples}
    report['trees'] = compare_trees(bed, 'tank/b', {'syncoid': 'zfsbackups/syncoid/b', 'ours': 'zfsbackups/ours/b'})
    return report


def drop_cache(bed: Testbed) -> None:
    guest(bed, 'zpool sync; zpool export tank; zpool import -d /dev tank')


def bench_big(bed: Testbed, size_mib: int, rounds: int) -> dict[str, t.Any]:
    report: dict[str, t.Any] = {'size_mib': size_mib, 'rounds': rounds}
    t0 = time.monotonic()
    log(f'writing {size_mib} MiB of random data to tank/big')
    guest(bed, f'''
        zfs create -o mountpoint=/tank/big tank/big
        head -c {size_mib}M /dev/urandom > /tank/big/data
        zfs snapshot tank/big@{snapname(0)}
    ''')
    report['setup_seconds'] = round(time.monotonic() - t0, 1)
    report['referenced_bytes'] = int(guest(bed, f'zfs get -H -p -o value referenced tank/big@{snapname(0)}'))
    samples: dict[str, list[dict[str, t.Any]]] = {'syncoid': [], 'ours': []}
    for run in range(rounds):
        for tool in (('syncoid', 'ours') if run % 2 == 0 else ('ours', 'syncoid')):
            target = f'zfsbackups/{tool}/big'
            if run:
                # a fresh full send each time; ours held the replica's snapshot, so release it first
                guest(bed, f'zfs list -H -o name -t snapshot -r {target} | while read -r snap; do zfs holds -H "$snap"; done | '
                           'while read -r snap tag _rest; do zfs release "$tag" "$snap"; done; '
                           f'zfs destroy -r {target}')
            drop_cache(bed)
            if tool == 'syncoid':
                res = check_syncoid(timed(bed, syncoid_cmd('tank/big', target, False)))
            else:
                res = check_ours(timed(bed, ours_cmd('tank/big', False)))
            res['mib_per_s'] = round(report['referenced_bytes'] / 1048576 / res['seconds'], 1)
            samples[tool].append(res)
    syncoid_s = statistics.median(s['seconds'] for s in samples['syncoid'])
    ours_s = statistics.median(s['seconds'] for s in samples['ours'])
    report['full'] = {'syncoid_median_seconds': syncoid_s, 'ours_median_seconds': ours_s,
                      'ratio': ratio(ours_s, syncoid_s), 'target': '<= 1.0', 'runs': samples}
    report['trees'] = compare_trees(bed, 'tank/big', {'syncoid': 'zfsbackups/syncoid/big', 'ours': 'zfsbackups/ours/big'})
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--datasets', type=int, default=200, help='datasets below tank/b (0 skips the many-datasets part)')
    parser.add_argument('--rounds', type=int, default=1, help='timed incremental runs of each tool; the median is reported')
    parser.add_argument('--size-mib', type=int, default=1024, help='random data in the big dataset (0 skips that part)')
    parser.add_argument('--big-rounds', type=int, default=3, help='timed full sends of the big dataset per tool; the median is reported')
    parser.add_argument('--zfs', dest='series', default=os.environ.get('ZFS_SERIES', '2.3'))
    parser.add_argument('--memory-mb', type=int, default=4096)
    args = parser.parse_args()
    report: dict[str, t.Any] = {'date': dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'), 'series': args.series,
                                'shape': 'one guest; both tools push over ssh to root@localhost'}
    started = time.monotonic()
    with Testbed('single', args.series, memory_mb=args.memory_mb) as bed:
        report['accel'] = bed.accel
        report['guest_cpus'] = int(guest(bed, 'nproc'))
        report['zfs_version'] = guest(bed, 'zfs version | head -n1').strip()
        report['syncoid_version'] = guest(bed, 'dpkg-query -W -f "\\${Version}" sanoid')
        install_engine(bed)
        guest(bed, 'ssh -o BatchMode=yes root@localhost true; zfs create -o mountpoint=none zfsbackups/syncoid; '
                   'zfs create -o mountpoint=none zfsbackups/ours')
        report['cipher'] = guest(bed, "ssh -v -o BatchMode=yes root@localhost true 2>&1 | "
                                      "sed -n 's/.*kex: client->server cipher: \\([^ ]*\\).*/\\1/p'").strip()
        if args.datasets:
            report['many'] = bench_many(bed, args.datasets, args.rounds)
        if args.size_mib:
            report['big'] = bench_big(bed, args.size_mib, args.big_rounds)
    report['bench_seconds'] = round(time.monotonic() - started, 1)
    os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
    path = os.path.join(HERE, 'results', f'replicate_syncoid-zfs{args.series}-{args.datasets}ds-{args.size_mib}MiB.json')
    with open(path, 'w') as fh:
        json.dump(report, fh, indent=2)
    print(json.dumps(report, indent=2))
    for part in ('many', 'big'):
        for tool, tree in report.get(part, {}).get('trees', {}).items():
            if isinstance(tree, dict) and tree['missing']:
                print(f'warning: {part}: {tool} target lacks {tree["missing"]} source snapshots', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
