# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The zfs choke point: argv it builds, batching, feature fallbacks, error reporting."""

from __future__ import annotations

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ZfsCommandError
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import (
    MAX_ARG_STRLEN, MAX_ARGV_BYTES, CommandResult, LocalRunner, Zfs, batch_by_size, destroy_batches)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._transport import remote_command


class ScriptedRunner:
    """Answers argv prefixes with canned (rc, stdout, stderr); records every call."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def run(self, argv, *, check=True):
        argv = list(argv)
        self.calls.append(argv)
        for prefix, (rc, out, err) in self.answers:
            if argv[:len(prefix)] == prefix:
                if check and rc:
                    raise ZfsCommandError(argv, rc, out, err)
                return CommandResult(argv, rc, out, err)
        raise AssertionError(f'unexpected command {argv}')


MODERN = [(['zfs', 'version'], (0, 'zfs-2.3.2-2\nzfs-kmod-2.3.2-2\n', ''))]
LEGACY = [
    (['zfs', 'version'], (2, '', "unrecognized command 'version'\nusage: zfs command args ...")),
    (['zfs', 'list', '-H', '-p'], (2, '', "invalid option 'p'\nusage:\n\tlist [-rH] ...")),
]


@pytest.mark.parametrize('items,limit,expected', [
    ([], 100, []),
    (['a', 'b', 'c'], 100, [['a', 'b', 'c']]),
    (['aaaa', 'bbbb', 'cccc'], 4 + 5 + 4, [['aaaa'], ['bbbb'], ['cccc']]),
    (['aaaa', 'bbbb', 'cccc'], 4 + 10, [['aaaa', 'bbbb'], ['cccc']]),
    (['x' * 50], 10, [['x' * 50]]),  # a single oversize item still goes, alone
])
def test_batch_by_size(items, limit, expected):
    assert batch_by_size(items, ['zfs'], limit) == expected


def test_snapshot_is_one_call_per_batch_on_modern_zfs():
    runner = ScriptedRunner(MODERN + [(['zfs', 'snapshot'], (0, '', ''))])
    zfs = Zfs(runner)
    names = [f'tank/ds{i}@zfs-auto-snap_daily-2026-11-26-0000' for i in range(300)]
    batches = zfs.snapshot(names)
    assert batches == [names]
    snap_calls = [c for c in runner.calls if c[1] == 'snapshot']
    assert snap_calls == [['zfs', 'snapshot', *names]]
    assert zfs.warnings == []


def test_legacy_cli_snapshots_one_by_one_and_warns():
    runner = ScriptedRunner(LEGACY + [(['zfs', 'snapshot'], (0, '', ''))])
    zfs = Zfs(runner)
    assert zfs.features.legacy
    zfs.snapshot(['tank/a@s', 'tank/b@s'])
    assert [c for c in runner.calls if c[1] == 'snapshot'] == [['zfs', 'snapshot', 'tank/a@s'], ['zfs', 'snapshot', 'tank/b@s']]
    assert any('not atomic' in w for w in zfs.warnings)


def test_legacy_snapshot_listing_uses_get_per_dataset():
    get_out = ('tank/a@s1\tguid\t11\ntank/a@s1\tcreatetxg\t5\ntank/a@s1\tcreation\t1700000000\ntank/a@s1\tuserrefs\t0\n'
               'tank/a@s2\tguid\t12\ntank/a@s2\tcreatetxg\t6\ntank/a@s2\tcreation\t1700000100\ntank/a@s2\tuserrefs\t1\n')
    runner = ScriptedRunner(LEGACY + [
        (['zfs', 'list', '-H', '-t', 'snapshot', '-o', 'name'], (0, 'tank/a@s1\ntank/a@s2\n', '')),
        (['zfs', 'get', '-H', '-p'], (0, get_out, '')),
    ])
    snaps = Zfs(runner).list_snapshots(['tank'])
    assert [(s.full_name, s.guid, s.userrefs) for s in snaps] == [('tank/a@s1', 11, 0), ('tank/a@s2', 12, 1)]
    assert len([c for c in runner.calls if c[1] == 'get']) == 1


def test_listing_argv_is_one_call_with_parsable_columns():
    runner = ScriptedRunner(MODERN + [(['zfs', 'list'], (0, '', ''))])
    zfs = Zfs(runner)
    zfs.list_snapshots(['tank/a', 'tank/b'], bookmarks=True)
    assert runner.calls[-1] == ['zfs', 'list', '-H', '-p', '-t', 'snapshot,bookmark', '-o',
                                'name,guid,createtxg,creation,userrefs,clones', '-r', 'tank/a', 'tank/b']


@pytest.mark.parametrize('names', [['a', 'b@c'], ['a,b'], ['x/y'], [''], ['old%new'], ['a#b']])
def test_destroy_refuses_names_that_could_widen_the_batch(names):
    runner = ScriptedRunner(MODERN)
    with pytest.raises(ValueError):
        Zfs(runner).destroy_snapshots('tank/a', names)
    assert not [c for c in runner.calls if c[1] == 'destroy']


def test_destroy_is_one_call_never_recursive():
    runner = ScriptedRunner(MODERN + [(['zfs', 'destroy'], (0, '', ''))])
    Zfs(runner).destroy_snapshots('tank/a', ['s1', 's2', 's3'])
    assert runner.calls[-1] == ['zfs', 'destroy', 'tank/a@s1,s2,s3']


def test_failure_carries_command_rc_and_stderr():
    runner = ScriptedRunner(MODERN + [(['zfs', 'hold'], (1, '', "cannot hold snapshot 'tank/a@x': tag already exists on this dataset"))])
    with pytest.raises(ZfsCommandError) as info:
        Zfs(runner).hold('t', ['tank/a@x'])
    assert info.value.as_dict() == {'cmd': ['zfs', 'hold', 't', 'tank/a@x'], 'rc': 1, 'stdout': '',
                                    'stderr': "cannot hold snapshot 'tank/a@x': tag already exists on this dataset", 'stage': 'zfs'}


def test_local_runner_reports_missing_binary():
    with pytest.raises(ZfsCommandError) as info:
        LocalRunner().run(['/nonexistent/zfs', 'list'])
    assert info.value.rc == 127


def test_local_runner_uses_c_locale_and_argv_without_shell():
    runner = LocalRunner()
    res = runner.run(['printf', '%s|%s', '$(echo no)', 'a;b'])
    assert res.stdout == '$(echo no)|a;b'
    assert runner.env['LC_ALL'] == 'C'


@pytest.mark.parametrize('count,limit', [(0, 100), (1, 100), (7, 100), (7, 200), (5000, 64 * 1024)])
def test_destroy_batches_keep_order_and_stay_under_a_given_limit(count: int, limit: int) -> None:
    names = [f'zfs-auto-snap_frequent-2026-01-01-{i:04d}' for i in range(count)]
    groups = destroy_batches('tank/some/dataset', names, limit=limit)
    assert [n for g in groups for n in g] == names
    assert all(len(f'tank/some/dataset@{",".join(g)}'.encode()) <= limit for g in groups)
    assert all(groups)


def test_batches_fit_through_a_remote_shell() -> None:
    # over ssh the quoted command line is one argument of the remote shell, capped at 128 KiB by Linux
    names = [f"tank/with space/and'quote {i}@zfs-auto-snap_daily-2026-01-01-0000" for i in range(20000)]
    batches = batch_by_size(names, ['zfs', 'hold', 'pyzfsautosnap:zfsbackups'])
    assert len(batches) > 1 and [n for b in batches for n in b] == names
    for batch in batches:
        assert len(remote_command(['zfs', 'hold', 'pyzfsautosnap:zfsbackups', *batch]).encode()) < 128 * 1024


def test_zfs_argv_is_built_only_inside_zfs():
    # the choke point: callers get typed methods, never a way to pass raw zfs argv
    assert not hasattr(Zfs, 'run')


@pytest.mark.parametrize('count,length', [(1, 36), (3_400, 36), (5_000, 36), (5_000, 200), (40_000, 3)])
def test_destroy_batches_fit_one_argument_and_keep_every_name(count, length):
    names = [f'{i:0{length}d}' for i in range(count)]
    batches = destroy_batches('tank/some/dataset', names)
    assert [n for b in batches for n in b] == names
    for batch in batches:
        argument = 'tank/some/dataset@' + ','.join(batch)
        assert len(argument.encode('utf-8')) + 1 <= MAX_ARG_STRLEN
        assert len(' '.join(['zfs', 'destroy', argument]).encode('utf-8')) + 1 <= MAX_ARGV_BYTES
    # no more calls than the size needs
    total = len('tank/some/dataset@') + len(names) * (length + 1)
    assert len(batches) <= total // (MAX_ARGV_BYTES // 2) + 1


def test_destroy_batches_of_a_long_prune_run_in_separate_calls():
    names = [f'zfs-auto-snap_hourly-2024-{i:010d}' for i in range(5_000)]
    runner = ScriptedRunner(MODERN + [(['zfs', 'destroy'], (0, '', ''))])
    zfs = Zfs(runner)
    for batch in zfs.destroy_batches('tank', names):
        assert zfs.destroy_snapshots('tank', batch).rc == 0
    destroys = [c for c in runner.calls if c[1] == 'destroy']
    # 5,000 names of 36 bytes and their commas: three arguments of at most 64 KiB
    assert len(destroys) == 3
    assert [n for c in destroys for n in c[2].split('@', 1)[1].split(',')] == names
    assert all(len(c[2]) + 1 <= MAX_ARG_STRLEN for c in destroys)


def test_batches_count_the_quotes_a_remote_shell_needs():
    spaced = ['tank/with space@s'] * 3
    assert batch_by_size(spaced, ['zfs'], 4 + 3 * (len(spaced[0]) + 3)) == [spaced]
    assert batch_by_size(spaced, ['zfs'], 4 + 3 * (len(spaced[0]) + 1)) == [spaced[:2], spaced[2:]]
