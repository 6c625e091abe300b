# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""zfs_autosnap through real ansible-playbook runs on real OpenZFS."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import re

import pytest

from playbook import run_play

GUEST = 'zfsguest'
MODULE = 'pyzfsautosnap.zfs.zfs_autosnap'


def snapshots(bed, root: str) -> dict[str, dict[str, int]]:
    out = bed.ssh(GUEST, ['zfs', 'list', '-H', '-p', '-t', 'snapshot', '-o', 'name,createtxg,userrefs', '-r', root]).stdout
    result = {}
    for line in out.splitlines():
        name, txg, refs = line.split('\t')
        result[name] = {'createtxg': int(txg), 'userrefs': int(refs)}
    return result


def autosnap(bed, check: bool = False, diff: bool = False, **params):
    return run_play(bed, GUEST, [{MODULE: params}], check=check, diff=diff).result


def make_tree(bed, root: str) -> None:
    bed.sh(GUEST, f'''
        zfs create {root}/a
        zfs create {root}/a/deep
        zfs create {root}/b
        zfs create -V 8M {root}/vol
        zfs create {root}/nosnap
        zfs set com.sun:auto-snapshot=false {root}/nosnap
        zfs create {root}/nodaily
        zfs set com.sun:auto-snapshot:daily=false {root}/nodaily
    ''')


def without_minute(full_name: str) -> str:
    return re.sub(r'-\d{4}$', '', full_name)


def old_daily(day: int) -> str:
    return f'zfs-auto-snap_daily-2026-10-{day:02d}-0000'


@pytest.mark.smoke
def test_first_run_creates_atomically_second_run_is_noop(bed, dataset):
    make_tree(bed, dataset)
    for _attempt in range(3):
        day = dt.datetime.now(dt.timezone.utc).date()
        first = autosnap(bed, roots=[dataset], label='daily', keep=3)
        second = autosnap(bed, roots=[dataset], label='daily', keep=3)
        if dt.datetime.now(dt.timezone.utc).date() == day:
            break
    assert not first.get('failed'), first
    assert first['changed'] is True
    expected = {f'{dataset}{child}' for child in ('', '/a', '/a/deep', '/b', '/vol')}
    assert {name.split('@')[0] for name in first['created']} == expected
    name = first['created'][0].split('@')[1]
    # like the script, the name carries the UTC time of the run
    assert re.fullmatch(f'zfs-auto-snap_daily-{day:%Y-%m-%d}-[0-2][0-9][0-5][0-9]', name), name
    # one `zfs snapshot` call: every new snapshot was born in the same transaction group
    snaps = snapshots(bed, dataset)
    assert len({snaps[n]['createtxg'] for n in first['created']}) == 1
    assert f'{dataset}/nosnap@{name}' not in snaps and f'{dataset}/nodaily@{name}' not in snaps
    assert second['changed'] is False, second
    assert second['created'] == [] and second['destroyed'] == []
    assert snapshots(bed, dataset) == snaps


def test_check_mode_predicts_the_real_run_exactly(bed, dataset):
    make_tree(bed, dataset)
    bed.sh(GUEST, ' && '.join(f'zfs snapshot -r {dataset}@{old_daily(d)}' for d in range(1, 6)))
    before = snapshots(bed, dataset)
    predicted = autosnap(bed, check=True, diff=True, roots=[dataset], policy={'daily': 2, 'weekly': 1})
    assert snapshots(bed, dataset) == before, 'check mode changed the pool'
    assert predicted['changed'] is True
    assert predicted['created'] and predicted['destroyed']
    assert predicted['diff']['before'] != predicted['diff']['after']
    real = autosnap(bed, roots=[dataset], policy={'daily': 2, 'weekly': 1})
    # names carry the minute of the run, which may tick between the two runs
    assert sorted(map(without_minute, real['created'])) == sorted(map(without_minute, predicted['created']))
    assert sorted(real['destroyed']) == sorted(predicted['destroyed'])
    after = snapshots(bed, dataset)
    assert not set(real['destroyed']) & set(after)
    assert set(real['created']) <= set(after)


@pytest.mark.smoke
def test_pruning_spares_held_cloned_newest_and_foreign(bed, dataset):
    ds = f'{dataset}/data'
    bed.sh(GUEST, f'''
        zfs create {ds}
        for d in 01 02 03 04 05 06; do zfs snapshot {ds}@zfs-auto-snap_daily-2026-10-$d-0000; done
        zfs snapshot {ds}@manual-before-upgrade
        zfs snapshot {ds}@zfs-auto-snap-daily-2026-10-07-0000
        zfs snapshot {ds}@other_daily-2026-10-07-0000
        zfs hold keepme {ds}@zfs-auto-snap_daily-2026-10-01-0000
        zfs clone {ds}@zfs-auto-snap_daily-2026-10-02-0000 {dataset}/clone
    ''')
    # snapshot=false: the newest existing daily must survive even with keep 1
    result = autosnap(bed, roots=[ds], recursive=False, label='daily', keep=1, snapshot=False)
    assert not result.get('failed'), result
    left = set(snapshots(bed, ds))
    assert f'{ds}@zfs-auto-snap_daily-2026-10-06-0000' in left, 'newest of the label destroyed'
    assert f'{ds}@zfs-auto-snap_daily-2026-10-01-0000' in left, 'held snapshot destroyed'
    assert f'{ds}@zfs-auto-snap_daily-2026-10-02-0000' in left, 'cloned snapshot destroyed'
    for foreign in ('manual-before-upgrade', 'zfs-auto-snap-daily-2026-10-07-0000', 'other_daily-2026-10-07-0000'):
        assert f'{ds}@{foreign}' in left, f'foreign snapshot {foreign} destroyed'
    assert sorted(result['destroyed']) == [f'{ds}@zfs-auto-snap_daily-2026-10-{d}-0000' for d in ('03', '04', '05')]
    skipped = {s['name'] for s in result['skipped']}
    assert {f'{ds}@zfs-auto-snap_daily-2026-10-01-0000', f'{ds}@zfs-auto-snap_daily-2026-10-02-0000'} <= skipped


def test_snapshot_held_after_listing_is_skipped_and_rest_destroyed(bed, dataset):
    """A batch refused for one name still destroys the others (hold placed by another run)."""
    ds = f'{dataset}/busy'
    bed.sh(GUEST, f'zfs create {ds}; for d in 01 02 03 04; do zfs snapshot {ds}@zfs-auto-snap_daily-2026-10-$d-0000; done')
    # The hold is placed between the module's listing and its destroy by a zfs wrapper.
    bed.sh(GUEST, f'''cat > /usr/local/bin/zfs-holding <<'EOF'
#!/bin/sh
if [ "$1" = destroy ]; then zfs hold racing {ds}@zfs-auto-snap_daily-2026-10-02-0000 2>/dev/null; fi
exec zfs "$@"
EOF
chmod 755 /usr/local/bin/zfs-holding''')
    result = autosnap(bed, roots=[ds], label='daily', keep=1, snapshot=False, zfs_path='/usr/local/bin/zfs-holding')
    assert not result.get('failed'), result
    assert sorted(result['destroyed']) == [f'{ds}@zfs-auto-snap_daily-2026-10-01-0000', f'{ds}@zfs-auto-snap_daily-2026-10-03-0000']
    assert [s['name'] for s in result['skipped']] == [f'{ds}@zfs-auto-snap_daily-2026-10-02-0000']
    assert set(snapshots(bed, ds)) == {f'{ds}@zfs-auto-snap_daily-2026-10-02-0000', f'{ds}@zfs-auto-snap_daily-2026-10-04-0000'}
    bed.ssh(GUEST, ['zfs', 'release', 'racing', f'{ds}@zfs-auto-snap_daily-2026-10-02-0000'])


def test_snapshots_of_the_original_script_are_pruned_by_policy(bed, dataset):
    ds = f'{dataset}/legacy'
    hours = [f'zfs-auto-snap_hourly-2026-11-20-{h:02d}00' for h in range(8, 14)]
    frequent = [f'zfs-auto-snap_frequent-2026-11-20-13{m:02d}' for m in (0, 15, 30, 45)]
    bed.sh(GUEST, f'zfs create {ds}; ' + '; '.join(f'zfs snapshot {ds}@{n}' for n in hours + frequent))
    result = autosnap(bed, roots=[ds], policy={'hourly': 3, 'frequent': 2}, snapshot=False)
    assert not result.get('failed'), result
    expected = {f'{ds}@{n}' for n in hours[:3] + frequent[:2]}
    assert set(result['destroyed']) == expected
    assert set(snapshots(bed, ds)) == {f'{ds}@{n}' for n in hours[3:] + frequent[2:]}


def test_skip_unchanged(bed, dataset):
    ds = f'{dataset}/quiet'
    bed.sh(GUEST, f'zfs create {ds}; zfs snapshot {ds}@{old_daily(1)}')
    quiet = autosnap(bed, roots=[ds], label='daily', keep=5, skip_unchanged=True)
    assert quiet['changed'] is False and quiet['created'] == []
    assert [s['name'] for s in quiet['skipped']] and ds in quiet['skipped'][0]['name']
    bed.sh(GUEST, f'head -c 200k /dev/urandom > $(zfs get -H -o value mountpoint {ds})/f; sync')
    busy = autosnap(bed, roots=[ds], label='daily', keep=5, skip_unchanged=True)
    assert busy['changed'] is True and len(busy['created']) == 1


def test_concurrent_runs_serialise_on_the_pool_lock(bed, dataset):
    make_tree(bed, dataset)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(autosnap, bed, roots=[dataset], label='hourly', keep=2) for _run in range(2)]
        results = [f.result() for f in futures]
    assert not any(r.get('failed') for r in results), results
    created = [n for r in results for n in r['created']]
    assert len(created) == len(set(created)) == 6  # every dataset but nosnap
    assert sorted(r['changed'] for r in results) == [False, True]


def test_lock_timeout_fails_clearly_and_changes_nothing(bed, dataset):
    make_tree(bed, dataset)
    before = snapshots(bed, dataset)
    # hold the pool lock from outside for longer than the module waits
    bed.ssh(GUEST, ['sh', '-c', 'flock /run/lock/pyzfsautosnap.tank.lock sleep 30 >/dev/null 2>&1 &'])
    result = autosnap(bed, roots=[dataset], label='daily', keep=1, lock_timeout=3)
    assert result.get('failed') is True
    assert 'lock' in result['msg'].lower() and 'tank' in result['msg']
    assert snapshots(bed, dataset) == before


BAD_INPUT = [
    ({'roots': ['{ds}/no such']}, 'forbidden'),
    ({'roots': ['{ds};touch /tmp/pwned']}, ''),
    ({'roots': ['{ds}$(touch /tmp/pwned)']}, ''),
    ({'roots': ['{ds}/missing']}, 'does not exist'),
    ({'roots': ['nosuchpool']}, 'does not exist'),
    ({'label': 'fortnightly', 'keep': 1}, ''),
    ({'label': 'daily', 'keep': -1}, 'keep'),
    ({'label': 'daily', 'keep': 'many'}, ''),
    ({'policy': {'daily': 0}}, 'keep'),
    ({'policy': {'daily': 'x'}}, ''),
    ({'policy': {'sometimes': 3}}, 'label'),
    ({'prefix': 'snap;rm -rf /', 'label': 'daily', 'keep': 1}, 'prefix'),
    ({'prefix': 'a@b', 'label': 'daily', 'keep': 1}, 'prefix'),
    ({'separator': ' ', 'label': 'daily', 'keep': 1}, 'separator'),
    ({'frequent_minutes': 7, 'label': 'frequent', 'keep': 1}, 'frequent_minutes'),
]


def test_bad_input_fails_before_any_change(bed, dataset):
    """Every class of bad input, each as its own task of one play, fails clearly and changes nothing."""
    make_tree(bed, dataset)
    before = snapshots(bed, dataset)
    tasks = []
    for given, _needle in BAD_INPUT:
        params = {k: ([v.format(ds=dataset) for v in val] if k == 'roots' else val) for k, val in given.items()}
        params.setdefault('roots', [dataset])
        if 'label' not in params and 'policy' not in params:
            params['policy'] = {'daily': 1}
        tasks.append({MODULE: params})
    results = run_play(bed, GUEST, tasks).results
    for (params, needle), result in zip(BAD_INPUT, results):
        assert result.get('failed') is True, (params, result)
        assert needle.lower() in result['msg'].lower(), (params, result['msg'])
    assert snapshots(bed, dataset) == before
    assert bed.ssh(GUEST, ['test', '-e', '/tmp/pwned'], check=False).returncode != 0
