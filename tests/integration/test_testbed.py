# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The test bed itself: real OpenZFS of the requested series, and a send|mbuffer|ssh|receive pipeline."""

from __future__ import annotations

import os

import pytest


@pytest.mark.smoke
def test_guest_runs_requested_openzfs(bed):
    out = bed.ssh('zfsguest', ['zfs', 'version']).stdout
    series = os.environ.get('ZFS_SERIES', '2.4')
    assert f'zfs-{series}.' in out, out
    assert f'zfs-kmod-{series}.' in out, out
    pools = bed.ssh('zfsguest', ['zpool', 'list', '-H', '-o', 'name']).stdout.split()
    assert pools == ['tank', 'zfsbackups']


def test_send_mbuffer_ssh_receive_preserves_guid_and_data(bed, dataset):
    target = 'zfsbackups/' + dataset.split('/', 1)[1]
    bed.sh('zfsguest', f'''
        zfs create {dataset}/child
        mp=$(zfs get -H -o value mountpoint {dataset})
        head -c 8M /dev/urandom > "$mp/a.bin"
        head -c 3M /dev/urandom > "$mp/child/b.bin"
        zfs snapshot -r {dataset}@one
        zfs send -R {dataset}@one | mbuffer -q -s 128k -m 64M \
          | ssh -o BatchMode=yes root@localhost zfs receive -s -u {target}
    ''')
    src = bed.ssh('zfsguest', ['zfs', 'get', '-Hp', '-r', '-t', 'snapshot', '-o', 'name,value', 'guid', dataset]).stdout
    dst = bed.ssh('zfsguest', ['zfs', 'get', '-Hp', '-r', '-t', 'snapshot', '-o', 'name,value', 'guid', target]).stdout

    def by_rel(text, root):
        return {line.split('\t')[0][len(root):]: line.split('\t')[1] for line in text.splitlines()}

    assert by_rel(src, dataset) == by_rel(dst, target)
    assert len(by_rel(src, dataset)) == 2
    sums = bed.sh('zfsguest', f'''
        zfs mount {target}; zfs mount {target}/child
        s=$(zfs get -H -o value mountpoint {dataset}); d=$(zfs get -H -o value mountpoint {target})
        (cd "$s" && sha256sum a.bin child/b.bin); echo ---; (cd "$d" && sha256sum a.bin child/b.bin)
    ''').stdout
    before, after = sums.split('---\n')
    assert before.strip() and before == after
