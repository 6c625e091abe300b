# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Fixtures that boot real OpenZFS guests (see tests/testbed/vm.py) and run playbooks against them."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'testbed'))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vm import Testbed  # noqa: E402


@pytest.fixture(scope='session')
def bed():
    """One guest, pools ``tank`` and ``zfsbackups``, SSH to itself; stopped at session end, also on Ctrl-C."""
    with Testbed('single') as testbed:
        version = testbed.ssh('zfsguest', ['zfs', 'version']).stdout.split()
        print(f"\n[testbed] guest zfsguest runs {' '.join(version)} ({testbed.accel})")
        yield testbed


@pytest.fixture(scope='module')
def pair():
    """Guests ``client`` (pool ``tank``) and ``target`` (pool ``zfsbackups``) on a private link."""
    with Testbed('pair') as testbed:
        for name in testbed.guests:
            version = testbed.ssh(name, ['zfs', 'version']).stdout.split()
            print(f"\n[testbed] guest {name} runs {' '.join(version)} ({testbed.accel})")
        yield testbed


@pytest.fixture
def dataset(bed, request):
    """A fresh dataset tree under tank for one test, destroyed afterwards with its replicas."""
    name = 'tank/' + request.node.name.replace('[', '_').replace(']', '').replace('-', '_')[:60]
    bed.ssh('zfsguest', ['zfs', 'create', '-p', name])
    yield name
    for root in (name, 'zfsbackups/' + name.split('/', 1)[1]):
        bed.sh('zfsguest', f'zfs list -H -o name {root} >/dev/null 2>&1 || exit 0; '
                           f'zfs list -H -t snapshot -o name -r {root} | while read -r s; do '
                           f'zfs holds -H "$s" | while read -r n tag rest; do zfs release "$tag" "$s"; done; done; '
                           f'zfs destroy -R -f {root}', check=False)
