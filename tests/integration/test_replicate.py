# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""zfs_replicate through real ansible-playbook runs on real OpenZFS: local, push, pull, both transports."""

from __future__ import annotations

import threading
import time

import pytest

from playbook import run_play

GUEST = 'zfsguest'
REPLICATE = 'pyzfsautosnap.zfs.zfs_replicate'
AUTOSNAP = 'pyzfsautosnap.zfs.zfs_autosnap'


def snap_guids(bed, root: str, host: str = GUEST, recursive: bool = True) -> dict[str, int]:
    """Snapshots under *root* (or of *root* alone) by name relative to it, with their guids."""
    depth = ['-r'] if recursive else ['-d', '1']
    res = bed.ssh(host, ['zfs', 'list', '-H', '-p', '-t', 'snapshot', '-o', 'name,guid', *depth, root], check=False)
    if res.returncode:
        return {}
    return {line.split('\t')[0][len(root):]: int(line.split('\t')[1]) for line in res.stdout.splitlines()}


def checksums(bed, dataset: str, host: str = GUEST) -> str:
    """Checksums of the files of a replica's newest snapshot (or a source dataset), by path."""
    return bed.sh(host, f'''
        ds={dataset}
        if [ "$(zfs get -H -o value mounted $ds)" = no ]; then zfs mount $ds 2>/dev/null || true; fi
        cd "$(zfs get -H -o value mountpoint $ds)" && find . -xdev -type f | sort | xargs -r sha256sum
    ''').stdout


def holds(bed, names: list[str], host: str = GUEST) -> dict[str, list[str]]:
    res = bed.ssh(host, ['zfs', 'holds', '-H', *names])
    out: dict[str, list[str]] = {n: [] for n in names}
    for line in res.stdout.splitlines():
        name, tag = line.split('\t')[:2]
        out[name].append(tag)
    return out


def replicate(bed, check: bool = False, host: str = GUEST, **params):
    return run_play(bed, host, [{REPLICATE: params}], check=check).result


def seed(bed, root: str, days=(1, 2), megabytes: int = 2, host: str = GUEST) -> None:
    bed.sh(host, f'''
        zfs create -p {root}/data/child
        head -c {megabytes}M /dev/urandom > /{root}/data/a.bin
        head -c 1M /dev/urandom > /{root}/data/child/b.bin
        for d in {' '.join(f'{d:02d}' for d in days)}; do
          echo "$d" >> /{root}/data/log.txt
          zfs snapshot -r {root}/data@zfs-auto-snap_daily-2026-11-$d-0000
        done
    ''')


def target_root(dataset: str) -> str:
    return 'zfsbackups/' + dataset.split('/', 1)[1]


@pytest.mark.smoke
def test_local_full_then_incremental_then_noop(bed, dataset):
    seed(bed, dataset)
    troot = target_root(dataset)
    replica = f'{troot}/{dataset}/data'
    params = {'datasets': [f'{dataset}/data'], 'recursive': True, 'target_root': troot}

    plan = replicate(bed, check=True, **params)
    assert not plan.get('failed'), plan
    assert [d['action'] for d in plan['datasets']] == ['full', 'full']
    assert snap_guids(bed, troot) == {}, 'check mode received something'

    full = replicate(bed, **params)
    assert not full.get('failed'), full
    assert full['changed'] is True
    assert [d['action'] for d in full['datasets']] == ['full', 'full']
    assert snap_guids(bed, replica) == snap_guids(bed, f'{dataset}/data')
    assert bed.ssh(GUEST, ['zfs', 'get', '-H', '-o', 'value', 'readonly', replica]).stdout.strip() == 'on'
    newest = 'zfs-auto-snap_daily-2026-11-02-0000'
    tag = full['hold_tag']
    assert tag in holds(bed, [f'{dataset}/data@{newest}'])[f'{dataset}/data@{newest}']
    assert tag in holds(bed, [f'{replica}@{newest}'])[f'{replica}@{newest}']

    bed.sh(GUEST, f'echo 03 >> /{dataset}/data/log.txt; zfs snapshot -r {dataset}/data@zfs-auto-snap_daily-2026-11-03-0000')
    incr = replicate(bed, **params)
    assert not incr.get('failed'), incr
    assert [d['action'] for d in incr['datasets']] == ['incremental', 'incremental']
    assert incr['datasets'][0]['from'].endswith(newest)
    assert snap_guids(bed, replica) == snap_guids(bed, f'{dataset}/data')
    # the hold moved to the new base on both sides
    old = holds(bed, [f'{dataset}/data@{newest}', f'{replica}@{newest}'])
    assert all(tag not in tags for tags in old.values()), old
    assert checksums(bed, f'{dataset}/data') == checksums(bed, replica)

    again = replicate(bed, **params)
    assert again['changed'] is False, again
    assert [d['action'] for d in again['datasets']] == ['none', 'none']


# Not in the smoke subset: the transports send the same commands whatever the series, and the pair's smoke
# test (test_pair.py) pushes and pulls over OpenSSH between two hosts on every series.
@pytest.mark.parametrize('transport,compression', [('openssh', 'zstd'), ('paramiko', 'lz4')])
def test_push_over_ssh(bed, dataset, transport, compression):
    seed(bed, dataset)
    troot = target_root(dataset)
    params = {'datasets': [f'{dataset}/data'], 'recursive': True, 'target_root': troot, 'target_host': 'localhost',
              'transport': transport, 'compression': compression}
    first = replicate(bed, **params)
    assert not first.get('failed'), first
    assert first['transport'] == transport and first['mode'] == 'push'
    assert snap_guids(bed, f'{troot}/{dataset}/data') == snap_guids(bed, f'{dataset}/data')
    assert replicate(bed, **params)['changed'] is False


def test_pull_from_source_host(bed, dataset):
    seed(bed, dataset)
    troot = target_root(dataset)
    params = {'datasets': [f'{dataset}/data'], 'recursive': True, 'target_root': troot, 'source_host': 'localhost'}
    result = replicate(bed, **params)
    assert not result.get('failed'), result
    assert result['mode'] == 'pull'
    assert snap_guids(bed, f'{troot}/{dataset}/data') == snap_guids(bed, f'{dataset}/data')


def test_unknown_host_key_is_rejected(bed, dataset):
    seed(bed, dataset, days=(1,))
    bed.sh(GUEST, ': > /tmp/empty_known_hosts')
    for transport in ('openssh', 'paramiko'):
        result = replicate(bed, datasets=[f'{dataset}/data'], target_root=target_root(dataset), target_host='localhost',
                           transport=transport, ssh_known_hosts_file='/tmp/empty_known_hosts')
        assert result.get('failed') is True, result
        assert snap_guids(bed, target_root(dataset)) == {}


def receive_progress(bed) -> tuple[int, int]:
    """(pid, bytes read so far) of the running `zfs receive`, or (0, 0) when none runs yet."""
    out = bed.sh(GUEST, '''
        for p in $(pgrep -x zfs); do
          if tr '\\0' ' ' < /proc/$p/cmdline | grep -q ' receive '; then
            echo "$p $(awk '/^rchar/ {print $2}' /proc/$p/io)"; exit 0
          fi
        done
        echo "0 0"
    ''').stdout.split()
    return int(out[0]), int(out[1] or 0)


@pytest.mark.smoke
def test_cut_stream_resumes_and_matches(bed, dataset):
    seed(bed, dataset, days=(1,), megabytes=12)
    troot = target_root(dataset)
    replica = f'{troot}/{dataset}/data'
    params = {'datasets': [f'{dataset}/data'], 'target_root': troot, 'target_host': 'localhost'}
    outcome: dict = {}
    # slow enough (12 MiB at 1 MiB/s) that the receiving side can be killed part way through
    runner = threading.Thread(target=lambda: outcome.update(replicate(bed, rate_limit='1M', timeout=600, **params)))
    runner.start()
    deadline = time.monotonic() + 300
    pid, done = 0, 0
    while time.monotonic() < deadline and runner.is_alive():
        pid, done = receive_progress(bed)
        if done > 4 << 20:
            break
        time.sleep(1)
    assert done > 4 << 20, f'the receive never made progress (pid {pid}, {done} bytes)'
    bed.ssh(GUEST, ['kill', '-9', str(pid)])
    runner.join(600)
    assert not runner.is_alive(), 'the run outlived its killed receiver'
    assert outcome.get('failed') is True, outcome
    assert 'receive' in outcome['msg'], outcome['msg']
    token = bed.ssh(GUEST, ['zfs', 'get', '-H', '-o', 'value', 'receive_resume_token', replica], check=False).stdout.strip()
    assert token not in ('', '-'), 'no resumable state left after the cut'
    assert bed.ssh(GUEST, ['pgrep', '-x', 'mbuffer'], check=False).returncode != 0, 'a pipeline stage outlived the run'
    resumed = replicate(bed, **params)
    assert not resumed.get('failed'), resumed
    assert resumed['datasets'][0]['action'] == 'resume'
    assert snap_guids(bed, replica, recursive=False) == snap_guids(bed, f'{dataset}/data', recursive=False)
    assert checksums(bed, f'{dataset}/data') == checksums(bed, replica)


def test_diverged_target_is_refused_until_rollback_is_asked_for(bed, dataset):
    seed(bed, dataset)
    troot = target_root(dataset)
    replica = f'{troot}/{dataset}/data'
    params = {'datasets': [f'{dataset}/data'], 'target_root': troot}
    assert not replicate(bed, **params).get('failed')
    bed.sh(GUEST, f'zfs snapshot {replica}@made-on-target; '
                  f'echo 03 >> /{dataset}/data/log.txt; zfs snapshot {dataset}/data@zfs-auto-snap_daily-2026-11-03-0000')
    before = snap_guids(bed, troot)
    refused = replicate(bed, **params)
    assert refused.get('failed') is True, refused
    assert 'diverged' in refused['msg'].lower()
    assert snap_guids(bed, troot) == before
    forced = replicate(bed, force_rollback=True, **params)
    assert not forced.get('failed'), forced
    assert snap_guids(bed, replica, recursive=False) == snap_guids(bed, f'{dataset}/data', recursive=False)


def test_target_retention_and_source_pruning_keep_the_chain(bed, dataset):
    seed(bed, dataset, days=(1, 2, 3, 4))
    troot = target_root(dataset)
    replica = f'{troot}/{dataset}/data'
    params = {'datasets': [f'{dataset}/data'], 'target_root': troot, 'target_retention': {'daily': 2}}
    first = replicate(bed, **params)
    assert not first.get('failed'), first
    assert sorted(snap_guids(bed, replica)) == ['@zfs-auto-snap_daily-2026-11-03-0000', '@zfs-auto-snap_daily-2026-11-04-0000']
    # the source prunes hard; the held common snapshot must survive it
    pruned = run_play(bed, GUEST, [{AUTOSNAP: {'roots': [f'{dataset}/data'], 'recursive': False, 'label': 'daily', 'keep': 1}}]).result
    assert not pruned.get('failed'), pruned
    common = f'{dataset}/data@zfs-auto-snap_daily-2026-11-04-0000'
    assert '@zfs-auto-snap_daily-2026-11-04-0000' in snap_guids(bed, f'{dataset}/data')
    assert common not in pruned['destroyed']
    again = replicate(bed, **params)
    assert not again.get('failed'), again
    assert again['datasets'][0]['action'] == 'incremental'
    # the common snapshot (the newest) is never pruned on the target
    assert '@' + again['datasets'][0]['to'].split('@')[1] in snap_guids(bed, replica)
    assert len(snap_guids(bed, replica)) <= 2


def test_non_root_receive_user(bed, dataset):
    seed(bed, dataset)
    troot = target_root(dataset)
    bed.sh(GUEST, f'''
        id zfsrecv >/dev/null 2>&1 || useradd -m -s /bin/sh zfsrecv
        install -d -m 700 -o zfsrecv -g zfsrecv ~zfsrecv/.ssh
        install -m 600 -o zfsrecv -g zfsrecv /root/.ssh/id_ed25519.pub ~zfsrecv/.ssh/authorized_keys
        zfs create -p -o canmount=off {troot}
        zfs allow -u zfsrecv create,mount,receive,hold,release,userprop,readonly,canmount,destroy {troot}
    ''')
    params = {'datasets': [f'{dataset}/data'], 'recursive': True, 'target_root': troot, 'target_host': 'localhost',
              'ssh_user': 'zfsrecv'}
    result = replicate(bed, **params)
    assert not result.get('failed'), result
    assert snap_guids(bed, f'{troot}/{dataset}/data') == snap_guids(bed, f'{dataset}/data')
    bed.sh(GUEST, f'echo 03 >> /{dataset}/data/log.txt; zfs snapshot -r {dataset}/data@zfs-auto-snap_daily-2026-11-03-0000')
    incr = replicate(bed, **params)
    assert not incr.get('failed'), incr
    assert {d['action'] for d in incr['datasets']} == {'incremental'}


@pytest.mark.requires_zfs('receive:append')
def test_receive_append_user_replicates_but_cannot_roll_back(bed, dataset):
    """The append-only delegation of docs/permissions.md: new snapshots arrive, history cannot be rolled back."""
    seed(bed, dataset)
    troot = target_root(dataset)
    replica = f'{troot}/{dataset}/data'
    bed.sh(GUEST, f'''
        id zfsappend >/dev/null 2>&1 || useradd -m -s /bin/sh zfsappend
        install -d -m 700 -o zfsappend -g zfsappend ~zfsappend/.ssh
        install -m 600 -o zfsappend -g zfsappend /root/.ssh/id_ed25519.pub ~zfsappend/.ssh/authorized_keys
        zfs create -p -o canmount=off {troot}
        zfs allow -u zfsappend create,mount,receive:append,readonly,canmount,userprop,hold,release {troot}
    ''')
    params = {'datasets': [f'{dataset}/data'], 'recursive': True, 'target_root': troot, 'target_host': 'localhost',
              'ssh_user': 'zfsappend'}
    full = replicate(bed, **params)
    assert not full.get('failed'), full
    assert snap_guids(bed, replica) == snap_guids(bed, f'{dataset}/data')
    bed.sh(GUEST, f'echo 03 >> /{dataset}/data/log.txt; zfs snapshot -r {dataset}/data@zfs-auto-snap_daily-2026-11-03-0000')
    incr = replicate(bed, **params)
    assert not incr.get('failed'), incr
    assert {d['action'] for d in incr['datasets']} == {'incremental'}
    assert snap_guids(bed, replica) == snap_guids(bed, f'{dataset}/data')

    bed.sh(GUEST, f'zfs snapshot {replica}@made-on-target; '
                  f'echo 04 >> /{dataset}/data/log.txt; zfs snapshot -r {dataset}/data@zfs-auto-snap_daily-2026-11-04-0000')
    before = snap_guids(bed, troot)
    forced = replicate(bed, force_rollback=True, **params)
    assert forced.get('failed') is True, forced
    assert snap_guids(bed, troot) == before
