# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""`make demo`: boot an OpenZFS guest and show the collection at work on it."""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'testbed'))

from vm import Testbed  # noqa: E402


def banner(text: str) -> None:
    print(f'\n=== {text}', flush=True)


def main() -> int:
    series = os.environ.get('ZFS_SERIES', '2.3')
    with Testbed('single', series) as bed:
        guest = next(iter(bed.guests))
        banner(f'guest {guest} ({bed.accel}); OpenZFS:')
        print(bed.ssh(guest, ['zfs', 'version']).stdout, end='')
        banner('pools')
        print(bed.ssh(guest, ['zpool', 'list']).stdout, end='')
        playbook = os.path.join(HERE, 'playbook.yml')
        if os.path.exists(playbook):
            banner(f'ansible-playbook {os.path.relpath(playbook)}')
            rc = subprocess.call(['ansible-playbook', '-i', bed.inventory, playbook], stdin=subprocess.DEVNULL,
                                 env=dict(os.environ, **bed.ansible_env()))
            if rc:
                return rc
            banner('snapshots on the guest afterwards')
            print(bed.ssh(guest, ['zfs', 'list', '-t', 'snapshot', '-o', 'name,used,userrefs', '-r', 'tank', 'zfsbackups']).stdout, end='')
    return 0


if __name__ == '__main__':
    sys.exit(main())
