# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Records real ``zfs`` output of one OpenZFS series for the parser unit tests.

    python tests/testbed/record_fixtures.py --zfs 2.3

Writes tests/unit/plugins/module_utils/fixtures/zfs-<series>/<name>.txt.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from vm import Testbed  # noqa: E402

OUT = os.path.join(os.path.dirname(HERE), 'unit', 'plugins', 'module_utils', 'fixtures')

SETUP = r'''
zfs create -p tank/data/home
zfs create tank/data/db
zfs create -V 16M tank/data/vol
zfs create tank/scratch
zfs set com.sun:auto-snapshot=false tank/scratch
zfs set com.sun:auto-snapshot:frequent=false tank/data/db
zfs set 'com.sun:auto-snapshot:daily=true' tank/data/home
echo hello > /tank/data/home/file
zfs snapshot -r tank/data@zfs-auto-snap_daily-2026-11-24-0000
zfs snapshot -r tank/data@zfs-auto-snap_hourly-2026-11-25-2300
zfs snapshot tank/data/home@manual
echo more >> /tank/data/home/file
zfs snapshot -r tank/data@zfs-auto-snap_daily-2026-11-25-0000
zfs hold keep tank/data/home@zfs-auto-snap_daily-2026-11-24-0000
zfs hold pyzfsautosnap:zfsbackups tank/data/home@zfs-auto-snap_daily-2026-11-25-0000
zfs clone tank/data/db@zfs-auto-snap_daily-2026-11-24-0000 tank/dbclone
zfs bookmark tank/data/home@zfs-auto-snap_daily-2026-11-25-0000 tank/data/home#zfs-auto-snap_daily-2026-11-25-0000
echo changed > /tank/data/home/new
'''

RECORD = {
    'version': ['zfs', 'version'],
    'list_datasets': ['zfs', 'list', '-H', '-p', '-t', 'filesystem,volume', '-o',
                      'name,type,written,receive_resume_token,com.sun:auto-snapshot,com.sun:auto-snapshot:daily,'
                      'com.sun:auto-snapshot:frequent', '-r', 'tank'],
    'list_snapshots': ['zfs', 'list', '-H', '-p', '-t', 'snapshot,bookmark', '-o',
                       'name,guid,createtxg,creation,userrefs,clones', '-r', 'tank'],
    'holds': ['zfs', 'holds', '-H', 'tank/data/home@zfs-auto-snap_daily-2026-11-24-0000',
              'tank/data/home@zfs-auto-snap_daily-2026-11-25-0000'],
    'send_estimate_incremental': ['zfs', 'send', '-nvP', '-I', 'tank/data/home@zfs-auto-snap_daily-2026-11-24-0000',
                                  'tank/data/home@zfs-auto-snap_daily-2026-11-25-0000'],
    'send_estimate_full': ['zfs', 'send', '-nvP', 'tank/data/home@zfs-auto-snap_daily-2026-11-24-0000'],
}

ERRORS = {
    'destroy_held': ['zfs', 'destroy', 'tank/data/home@zfs-auto-snap_daily-2026-11-24-0000,zfs-auto-snap_hourly-2026-11-25-2300'],
    'destroy_cloned': ['zfs', 'destroy', 'tank/data/db@zfs-auto-snap_daily-2026-11-24-0000'],
    'list_missing': ['zfs', 'list', '-H', '-o', 'name', 'tank/nonexistent'],
    'snapshot_existing': ['zfs', 'snapshot', 'tank/data@zfs-auto-snap_daily-2026-11-25-0000'],
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('--zfs', dest='series', default=os.environ.get('ZFS_SERIES', '2.4'))
    args = parser.parse_args()
    outdir = os.path.join(OUT, f'zfs-{args.series}')
    os.makedirs(outdir, exist_ok=True)
    with Testbed('single', args.series) as bed:
        bed.sh('zfsguest', SETUP)
        for name, argv in RECORD.items():
            res = bed.ssh('zfsguest', argv)
            with open(os.path.join(outdir, f'{name}.txt'), 'w') as fh:
                fh.write(res.stdout)
        for name, argv in ERRORS.items():
            res = bed.ssh('zfsguest', argv, check=False)
            with open(os.path.join(outdir, f'{name}.stderr.txt'), 'w') as fh:
                fh.write(f'rc={res.returncode}\n{res.stderr}')
        # the destroy above may have removed the unheld snapshot; that is recorded too
        res = bed.ssh('zfsguest', RECORD['list_snapshots'])
        with open(os.path.join(outdir, 'list_snapshots_after_destroy.txt'), 'w') as fh:
            fh.write(res.stdout)
    print(outdir)
    return 0


if __name__ == '__main__':
    sys.exit(main())
