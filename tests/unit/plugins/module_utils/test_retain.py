# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A backup server's own retention: decided by arrival on its clock, never steered by what a client sends."""

from __future__ import annotations

import io
import json
import os

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _cli
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._retain import run_retain
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._retain_options import normalise
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._retain_plan import Received, plan_retain
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import Snapshot, ValidationError
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import STAMP_PROPERTY, CommandResult, Zfs

DAY = 86400
NOW = 1_800_000_000
DS = 'zfsbackups/c1/tank/home'


def daily(day: int, txg: int, stamp: int | str | None, **kw) -> Received:
    """A daily snapshot named for *day*, arrived *txg*-th, with an arrival stamp (None: none)."""
    name = f'zfs-auto-snap_daily-2026-11-{day:02d}-0000'
    return Received(Snapshot(DS, name, guid=txg, createtxg=txg, creation=0, **kw),
                    '-' if stamp is None else str(stamp))


def names(snaps):
    return sorted(s.name[len('zfs-auto-snap_daily-2026-11-'):][:2] for s in snaps)


def plan(items, keep=3):
    return plan_retain(items, {'daily': keep}, NOW, prefix='zfs-auto-snap', sep='_')


CASES = [
    # (id, items, keep, destroyed days, stamped days)
    ('old beyond the newest and the window go', [daily(d, d, NOW - (11 - d) * DAY) for d in range(1, 11)], 3,
     ['01', '02', '03', '04', '05', '06', '07'], []),
    ('inside the window stays though not among the newest',
     [daily(d, d, NOW - DAY) for d in range(1, 11)], 3, [], []),
    # the eviction attack: 100 fresh snapshots arrive; what arrived before them inside the window stays
    ('a flood of fresh snapshots evicts nothing inside the window',
     [daily(1, 1, NOW - 2 * DAY), daily(2, 2, NOW - DAY)] + [daily(3 + i % 20, 10 + i, NOW) for i in range(100)], 3,
     [], []),
    # ... and names or creation times chosen by the client do not matter: arrival order and time do
    ('a client-chosen old name arriving now is kept',
     [daily(1, 50, NOW), daily(20, 1, NOW - 20 * DAY), daily(21, 2, NOW - 19 * DAY), daily(22, 3, NOW - 18 * DAY),
      daily(23, 4, NOW - 17 * DAY)], 3, ['20', '21'], []),
    ('the newest of a label is kept whatever its age (a client that stopped sending)',
     [daily(1, 1, NOW - 400 * DAY)], 1, [], []),
    ('unstamped snapshots count as arriving now and are stamped',
     [daily(d, d, None) for d in range(1, 6)], 1, [], ['01', '02', '03', '04', '05']),
    ('held and cloned are kept and reported',
     [daily(1, 1, NOW - 50 * DAY, userrefs=1), daily(2, 2, NOW - 50 * DAY, clones=('zfsbackups/x',)),
      daily(3, 3, NOW - 50 * DAY), daily(4, 4, NOW)], 1, ['03'], []),
    ('a stamp in the future stops the whole label', [daily(1, 1, NOW - 50 * DAY), daily(2, 2, NOW + 3600)], 1, [], []),
    ('an unreadable stamp is treated as none', [daily(1, 1, 'soon'), daily(2, 2, NOW)], 1, [], ['01']),
]


@pytest.mark.parametrize('items,keep,destroyed,stamped', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_retention_by_arrival(items, keep, destroyed, stamped):
    result = plan(items, keep)
    assert names(result.destroy) == destroyed
    assert names(result.stamp) == stamped


def test_held_cloned_and_future_say_why():
    result = plan([daily(1, 1, NOW - 50 * DAY, userrefs=2), daily(2, 2, NOW)], 1)
    assert [reason for _s, reason in result.skipped] == ['held (2 user reference(s))']
    future = plan([daily(1, 1, NOW - 50 * DAY), daily(2, 2, NOW + 3600)], 1)
    assert 'the clock went back' in future.skipped[0][1]


def test_only_managed_snapshots_of_the_policy_labels_are_touched():
    foreign = Received(Snapshot(DS, 'manual-backup', guid=1, createtxg=1, creation=0), str(NOW - 900 * DAY))
    other_label = Received(Snapshot(DS, 'zfs-auto-snap_hourly-2026-11-01-0100', guid=2, createtxg=2, creation=0), '-')
    old = Received(Snapshot(DS, 'zfs-auto-snap_hourly-2026-10-01-0100', guid=3, createtxg=3, creation=0), str(NOW - 900 * DAY))
    result = plan([foreign, other_label, old, daily(1, 4, NOW)], 1)
    assert result.destroy == ()
    # an unstamped snapshot of a label outside the policy is stamped all the same, so its window starts now
    assert [s.name for s in result.stamp] == [other_label.snapshot.name]


class Runner:
    """zfs on a backup server: a snapshot listing, a dataset listing (name, resume token), and what was run."""

    def __init__(self, listing: str, destroy_rc: int = 0, tokens: dict | None = None):
        self.listing = listing
        self.destroy_rc = destroy_rc
        self.tokens = tokens or {}
        self.calls = []

    def run(self, argv, *, check=True):
        argv = [str(a) for a in argv]
        self.calls.append(argv[1:])
        if argv[1] == 'version':
            return CommandResult(argv, 0, 'zfs-2.4.4-1\nzfs-kmod-2.4.4-1\n', '')
        if argv[1] == 'list' and 'snapshot' in argv:
            return CommandResult(argv, 0, self.listing, '')
        if argv[1] == 'list':
            rows = ''.join(f'{name}\tfilesystem\t{token}\n' for name, token in self.tokens.items())
            return CommandResult(argv, 0, rows or 'zfsbackups/c1\tfilesystem\t-\n', '')
        if argv[1] == 'destroy' and self.destroy_rc:
            return CommandResult(argv, 1, '', f"cannot destroy snapshot {argv[2].split(',')[0]}: dataset is busy\n")
        return CommandResult(argv, 0, '', '')

    def changes(self):
        return [c for c in self.calls if c[0] not in ('list', 'version')]


def listing(*items: Received) -> str:
    return ''.join(f'{i.snapshot.full_name}\t{i.snapshot.guid}\t{i.snapshot.createtxg}\t0\t{i.snapshot.userrefs}\t-\t'
                   f'{i.stamp}\n' for i in items)


def values(**kw):
    lock_dir = kw.pop('lock_dir')
    return normalise({'roots': ['zfsbackups/c1'], 'policy': {'daily': 1}, 'lock_dir': lock_dir,
                      'state_dir': os.path.join(lock_dir, 'state'), **kw})


def test_a_run_stamps_then_destroys_per_dataset(tmp_path):
    runner = Runner(listing(daily(1, 1, NOW - 90 * DAY), daily(2, 2, NOW - 80 * DAY), daily(3, 3, None),
                            daily(4, 4, NOW)))
    result = run_retain(values(lock_dir=str(tmp_path)), Zfs(runner), clock=lambda: NOW)
    assert result['destroyed'] == [f'{DS}@zfs-auto-snap_daily-2026-11-01-0000', f'{DS}@zfs-auto-snap_daily-2026-11-02-0000']
    assert runner.changes() == [
        ['set', f'{STAMP_PROPERTY}={NOW}', f'{DS}@zfs-auto-snap_daily-2026-11-03-0000'],
        ['destroy', f'{DS}@zfs-auto-snap_daily-2026-11-01-0000,zfs-auto-snap_daily-2026-11-02-0000']]
    assert result['changed'] is True and not result.get('failed')


def test_check_mode_reports_and_changes_nothing(tmp_path):
    runner = Runner(listing(daily(1, 1, NOW - 90 * DAY), daily(2, 2, None), daily(4, 4, NOW)))
    result = run_retain(values(lock_dir=str(tmp_path)), Zfs(runner), check_mode=True, clock=lambda: NOW)
    assert result['destroyed'] == [f'{DS}@zfs-auto-snap_daily-2026-11-01-0000']
    assert result['stamped'] == [f'{DS}@zfs-auto-snap_daily-2026-11-02-0000']
    assert runner.changes() == []


def test_more_than_the_cap_destroys_nothing_and_fails(tmp_path):
    runner = Runner(listing(*(daily(d, d, NOW - 90 * DAY) for d in range(1, 6)), daily(9, 9, NOW)))
    result = run_retain(values(lock_dir=str(tmp_path), max_destroy=4), Zfs(runner), clock=lambda: NOW)
    assert result['failed'] is True and result['destroyed'] == []
    assert 'would destroy 5 snapshots, more than max_destroy (4)' in result['msg']
    assert '--max-destroy 5' in result['msg']
    assert not [c for c in runner.changes() if c[0] == 'destroy']
    confirmed = run_retain(values(lock_dir=str(tmp_path), max_destroy=5), Zfs(runner), clock=lambda: NOW)
    assert len(confirmed['destroyed']) == 5


def test_a_refused_destroy_fails_the_run_loudly(tmp_path):
    runner = Runner(listing(daily(1, 1, NOW - 90 * DAY), daily(4, 4, NOW)), destroy_rc=1)
    result = run_retain(values(lock_dir=str(tmp_path)), Zfs(runner), clock=lambda: NOW)
    assert result['failed'] is True and result['destroyed'] == []
    assert 'dataset is busy' in result['msg']


@pytest.mark.parametrize('raw,message', [
    ({'roots': [], 'policy': {'daily': 1}}, 'roots'),
    ({'roots': ['zfsbackups/c1'], 'policy': {}}, 'empty policy'),
    ({'roots': ['zfsbackups/c1'], 'policy': {'daily': 0}}, 'keep of label'),
    ({'roots': ['zfsbackups/c1'], 'policy': {'daily': 1}, 'max_destroy': 0}, 'max_destroy'),
    ({'roots': ['zfsbackups/c1/../c2'], 'policy': {'daily': 1}}, 'not a valid dataset name'),
])
def test_bad_input_is_refused_before_anything_runs(raw, message):
    with pytest.raises(ValidationError, match=message):
        normalise(raw)


def test_without_a_policy_nothing_is_pruned_but_arrivals_are_stamped(tmp_path):
    runner = Runner(listing(daily(1, 1, NOW - 900 * DAY), daily(2, 2, None)))
    args = normalise({'roots': ['zfsbackups/c1'], 'lock_dir': str(tmp_path), 'state_dir': str(tmp_path)})
    result = run_retain(args, Zfs(runner), clock=lambda: NOW)
    assert result['destroyed'] == [] and result['stamped'] == [f'{DS}@zfs-auto-snap_daily-2026-11-02-0000']


def test_the_command_line(tmp_path, monkeypatch, capsys):
    runner = Runner(listing(daily(1, 1, NOW - 90 * DAY), daily(4, 4, NOW)))
    monkeypatch.setattr(_cli, 'LocalRunner', lambda: runner)
    monkeypatch.setattr('time.time', lambda: NOW)
    argv = ['retain', '--root', 'zfsbackups/c1', '--policy', 'daily=1', '--lock-dir', str(tmp_path), '--state-dir',
            str(tmp_path), '--json']
    assert _cli.main(argv, stderr=io.StringIO()) == 0
    assert json.loads(capsys.readouterr().out)['destroyed'] == [f'{DS}@zfs-auto-snap_daily-2026-11-01-0000']
    assert _cli.main(['retain', '--root', 'zfsbackups/c1', '--policy', 'daily=1', '--lock-dir', str(tmp_path),
                      '--state-dir', str(tmp_path), '--check']) == 0
    assert 'would destroy' in capsys.readouterr().out


def test_a_resumable_receive_nobody_continues_is_discarded_by_the_server(tmp_path):
    token = '1-e604ea4bf-e0-789c63a2'
    runner = Runner('', tokens={DS: token, 'zfsbackups/c1/other': '1-aaaa-bb-cc'})
    args = values(lock_dir=str(tmp_path), stale_resume_hours=24)
    first = run_retain(args, Zfs(runner), clock=lambda: NOW)
    assert first['aborted_resume'] == [] and runner.changes() == []
    # a day less a minute later nothing yet; the other one moved on (a push resumed it): its clock starts again
    runner.tokens['zfsbackups/c1/other'] = '1-aaaa-bb-dd'
    assert run_retain(args, Zfs(runner), clock=lambda: NOW + 24 * 3600 - 60)['aborted_resume'] == []
    check = run_retain(args, Zfs(runner), check_mode=True, clock=lambda: NOW + 24 * 3600)
    assert check['aborted_resume'] == [DS] and runner.changes() == []
    done = run_retain(args, Zfs(runner), clock=lambda: NOW + 24 * 3600)
    assert done['aborted_resume'] == [DS] and done['changed'] is True
    assert runner.changes() == [['receive', '-A', DS]]
    with open(os.path.join(str(tmp_path), 'state', 'resume-zfsbackups+c1.json'), encoding='utf-8') as fh:
        assert list(json.load(fh)) == ['zfsbackups/c1/other']


def test_an_unreadable_state_file_only_delays(tmp_path):
    runner = Runner('', tokens={DS: '1-e604ea4bf-e0-789c63a2'})
    args = values(lock_dir=str(tmp_path))
    os.makedirs(args['state_dir'])
    with open(os.path.join(args['state_dir'], 'resume-zfsbackups+c1.json'), 'w', encoding='utf-8') as fh:
        fh.write('{not json')
    assert run_retain(args, Zfs(runner), clock=lambda: NOW + 10 ** 6)['aborted_resume'] == []
    assert runner.changes() == []
