# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Two hosts: snapshots on ``client``, pushed to and pulled by ``target`` over the guests' private link."""

from __future__ import annotations

import pytest

from playbook import run_play

AUTOSNAP = 'pyzfsautosnap.zfs.zfs_autosnap'
REPLICATE = 'pyzfsautosnap.zfs.zfs_replicate'


def guids(pair, host: str, root: str) -> dict[str, int]:
    out = pair.ssh(host, ['zfs', 'list', '-H', '-p', '-t', 'snapshot', '-o', 'name,guid', '-r', root]).stdout
    return {line.split('\t')[0][len(root):]: int(line.split('\t')[1]) for line in out.splitlines()}


@pytest.mark.smoke
def test_client_snapshots_push_and_pull_to_target(pair):
    pair.sh('client', '''
        zfs create -p tank/srv/www
        head -c 4M /dev/urandom > /tank/srv/www/index.bin
        zfs create -p tank/srv/db
    ''')
    snap = run_play(pair, 'client', [{AUTOSNAP: {'roots': ['tank/srv'], 'policy': {'hourly': 4, 'daily': 7}}}]).result
    assert not snap.get('failed') and snap['changed'], snap
    push = run_play(pair, 'client', [{REPLICATE: {'datasets': ['tank/srv'], 'recursive': True, 'target_host': 'target',
                                                  'target_root': 'zfsbackups/client', 'compression': 'zstd'}}]).result
    assert not push.get('failed'), push
    assert {d['action'] for d in push['datasets']} == {'full'}
    assert guids(pair, 'target', 'zfsbackups/client/tank/srv') == guids(pair, 'client', 'tank/srv')

    # pull: the target fetches, so a compromised client holds no key to the backups
    pair.sh('client', 'echo more >> /tank/srv/www/index.bin; zfs snapshot -r tank/srv@zfs-auto-snap_hourly-2030-01-01-0000')
    pull = run_play(pair, 'target', [{REPLICATE: {'datasets': ['tank/srv'], 'recursive': True, 'source_host': 'client',
                                                  'target_root': 'zfsbackups/client'}}]).result
    assert not pull.get('failed'), pull
    assert pull['mode'] == 'pull'
    assert {d['action'] for d in pull['datasets']} == {'incremental'}
    assert guids(pair, 'target', 'zfsbackups/client/tank/srv') == guids(pair, 'client', 'tank/srv')
