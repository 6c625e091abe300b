# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import typing as t

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _zfs_parse as parse
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs_parse import is_stale_token_error, parse_send_size
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._replicate_plan import (
    DatasetPlan,
    Selection,
    Step,
    bookmark_suffix,
    common_snapshot,
    hold_tag,
    map_targets,
    outer_roots,
    plan_bookmark,
    plan_dataset,
    plan_holds,
    plan_target_prune,
    select_datasets,
    target_for,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import Dataset, Snapshot, ValidationError
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import SNAPSHOT_COLUMNS

DATASET_COLUMNS = ('name', 'type', 'written', 'receive_resume_token', 'encryption')
TARGET = 'zfsbackups/c1/tank/data'

# `zfs list -Hp -t snapshot,bookmark -o name,guid,createtxg,creation,userrefs,clones -d 1 tank/data`
SOURCE = (
    'tank/data@zfs-auto-snap_daily-2024-05-01-0000\t7366539146932519375\t1001\t1714521600\t1\t\n'
    'tank/data@zfs-auto-snap_hourly-2024-05-01-0100\t1862402279211716542\t1010\t1714525200\t0\t\n'
    'tank/data@before-upgrade\t11728937409237123406\t1020\t1714527000\t0\t\n'
    'tank/data@zfs-auto-snap_hourly-2024-05-01-0200\t5402384569121023471\t1030\t1714528800\t0\t\n'
    'tank/data@zfs-auto-snap_daily-2024-05-02-0000\t16417386214006420833\t1100\t1714608000\t0\t\n'
    'tank/data#zfs-auto-snap_daily-2024-05-01-0000\t7366539146932519375\t1001\t1714521600\t-\t-\n'
)
# the same history, but the first daily only survives as a bookmark
SOURCE_BOOKMARKED = '\n'.join(line for line in SOURCE.splitlines() if '@zfs-auto-snap_daily-2024-05-01' not in line) + '\n'
# only managed snapshots: -I can carry everything
SOURCE_MANAGED = '\n'.join(line for line in SOURCE.splitlines() if 'before-upgrade' not in line) + '\n'

ALIASES = {
    'zfs-auto-snap_daily-2024-05-01-0000': 'D1',
    'zfs-auto-snap_hourly-2024-05-01-0100': 'H1',
    'before-upgrade': 'M',
    'zfs-auto-snap_hourly-2024-05-01-0200': 'H2',
    'zfs-auto-snap_daily-2024-05-02-0000': 'D2',
}

# `zfs list -Hp -t snapshot -o ... -d 1 zfsbackups/c1/tank/data` (txgs are the target pool's own)
T_D1 = f'{TARGET}@zfs-auto-snap_daily-2024-05-01-0000\t7366539146932519375\t51\t1714521700\t1\t\n'
T_H1 = f'{TARGET}@zfs-auto-snap_hourly-2024-05-01-0100\t1862402279211716542\t60\t1714525300\t0\t\n'
T_H2 = f'{TARGET}@zfs-auto-snap_hourly-2024-05-01-0200\t5402384569121023471\t70\t1714528900\t0\t\n'
T_D2 = f'{TARGET}@zfs-auto-snap_daily-2024-05-02-0000\t16417386214006420833\t80\t1714608100\t1\t\n'
T_OWN = f'{TARGET}@zfs-auto-snap_hourly-2024-05-01-0500\t9912340000000000001\t90\t1714539600\t0\t\n'
# same name as the source's H1, different guid
T_H1_OTHER = f'{TARGET}@zfs-auto-snap_hourly-2024-05-01-0100\t4242424242424242424\t65\t1714525300\t0\t\n'
T_H2_OLD_OTHER = f'{TARGET}@zfs-auto-snap_hourly-2024-05-01-0200\t4343434343434343434\t40\t1714500000\t0\t\n'
T_UNRELATED = f'{TARGET}@zfs-auto-snap_daily-2024-04-01-0000\t8888888888888888888\t20\t1711929600\t0\t\n'

# `zfs list -Hp -t filesystem,volume -o name,type,written,receive_resume_token,encryption`
TOKEN = '1-e8f2c6a4d-c0-789c636064000310a500c4ec50360710e72765a526974030b0d1d1b3380d2e2c4'
T_DS = f'{TARGET}\tfilesystem\t0\t-\toff\n'
T_DS_WRITTEN = f'{TARGET}\tfilesystem\t1236992\t-\toff\n'
T_DS_TOKEN = f'{TARGET}\tfilesystem\t0\t{TOKEN}\toff\n'
SRC_DS = 'tank/data\tfilesystem\t8192\t-\toff\n'


def dataset(line: str) -> Dataset:
    return parse.datasets(line, DATASET_COLUMNS)[0]


def snaps(text: str) -> list[Snapshot]:
    return parse.snapshots(text, SNAPSHOT_COLUMNS)


def alias(name: str | None) -> str:
    if name is None:
        return ''
    sep = '#' if '#' in name else '@'
    short = ALIASES.get(name.split(sep, 1)[1], name)
    return ('#' if sep == '#' else '') + short


def render(step: Step) -> str:
    if step.kind == 'resume':
        return 'resume'
    if step.kind == 'full':
        return 'full ' + alias(step.to) + (' -F' if step.rollback else '')
    flag = '-I' if step.intermediates else '-i'
    return f'{flag} {alias(step.base)} {alias(step.to)}' + (' -F' if step.rollback else '')


def plan(source: str, target_ds: str | None, target: str, **kwargs: t.Any) -> DatasetPlan:
    selection = Selection(labels=tuple(kwargs.pop('labels', ())), include_foreign=kwargs.pop('include_foreign', False))
    return plan_dataset(dataset(SRC_DS), TARGET, snaps(source), dataset(target_ds) if target_ds else None, snaps(target),
                        selection=selection, **kwargs)


@pytest.mark.parametrize('source, target_ds, target, kwargs, expected', [
    pytest.param(SOURCE, T_DS, T_D1 + T_H1 + T_H2 + T_D2, {}, ('none', []), id='up to date'),
    pytest.param(SOURCE, None, '', {}, ('full', ['full D1', '-i D1 H1', '-i H1 H2', '-i H2 D2']), id='full, foreign stepped over'),
    pytest.param(SOURCE, None, '', {'include_foreign': True}, ('full', ['full D1', '-I D1 D2']), id='full, foreign included'),
    pytest.param(SOURCE_MANAGED, None, '', {}, ('full', ['full D1', '-I D1 D2']), id='full, all managed'),
    pytest.param(SOURCE_MANAGED, T_DS, T_D1, {}, ('incremental', ['-I D1 D2']), id='incremental'),
    pytest.param(SOURCE_MANAGED, T_DS, T_D1 + T_H1 + T_H2, {}, ('incremental', ['-i H2 D2']), id='incremental, one snapshot'),
    pytest.param(SOURCE, T_DS, T_D1, {}, ('incremental', ['-i D1 H1', '-i H1 H2', '-i H2 D2']), id='foreign excluded'),
    pytest.param(SOURCE, T_DS, T_D1, {'include_foreign': True}, ('incremental', ['-I D1 D2']), id='foreign included'),
    pytest.param(SOURCE, T_DS, T_D1, {'labels': ['daily']}, ('incremental', ['-i D1 D2']), id='label filter'),
    pytest.param(SOURCE, T_DS, T_D1 + T_H1, {'labels': ['hourly']}, ('incremental', ['-i H1 H2']), id='label filter, hourly'),
    pytest.param(SOURCE, None, '', {'labels': ['daily']}, ('full', ['full D1', '-i D1 D2']), id='label filter, full'),
    pytest.param(SOURCE_BOOKMARKED, T_DS, T_D1, {}, ('incremental', ['-i #D1 H1', '-i H1 H2', '-i H2 D2']),
                 id='bookmark source, foreign stepped over'),
    pytest.param(SOURCE_BOOKMARKED, T_DS, T_D1, {'include_foreign': True}, ('incremental', ['-i #D1 H1', '-I H1 D2']),
                 id='bookmark source, then -I'),
    pytest.param(SOURCE_BOOKMARKED, T_DS, T_D1, {'labels': ['daily']}, ('incremental', ['-i #D1 D2']), id='bookmark source, label'),
    pytest.param(SOURCE, T_DS_TOKEN, T_D1, {}, ('resume', ['resume']), id='resume'),
    pytest.param(SOURCE_MANAGED, T_DS_TOKEN, T_D1, {'stale_token': True}, ('incremental', ['-I D1 D2']), id='stale token'),
    pytest.param(SOURCE_MANAGED, T_DS_TOKEN, '', {'stale_token': True}, ('full', ['full D1', '-I D1 D2']),
                 id='stale token of a first full receive'),
    pytest.param(SOURCE_MANAGED, T_DS, T_D1 + T_OWN, {'force_rollback': True}, ('incremental', ['-I D1 D2 -F']),
                 id='diverged, rolled back'),
    pytest.param(SOURCE_MANAGED, T_DS_WRITTEN, T_D1, {'force_rollback': True}, ('incremental', ['-I D1 D2 -F']),
                 id='modified, rolled back'),
    pytest.param(SOURCE_MANAGED, T_DS, T_D1 + T_H1_OTHER, {'force_rollback': True}, ('incremental', ['-I D1 D2 -F']),
                 id='same name other guid, rolled back'),
    pytest.param(SOURCE_MANAGED, T_DS, '', {'force_rollback': True}, ('full', ['full D1 -F', '-I D1 D2']),
                 id='empty target overwritten'),
    # the common snapshot is newer than anything selected: nothing to do
    pytest.param(SOURCE, T_DS, T_D1 + T_H1 + T_H2 + T_D2, {'labels': ['hourly']}, ('none', []), id='label already there'),
])
def test_plan(source: str, target_ds: str | None, target: str, kwargs: dict, expected: tuple[str, list[str]]) -> None:
    action, steps = expected
    result = plan(source, target_ds, target, **kwargs)
    assert result.error is None
    assert result.action == action
    assert [render(s) for s in result.steps] == steps
    assert result.abort_resume == bool(kwargs.get('stale_token'))
    assert result.rollback == any(s.rollback for s in result.steps)


@pytest.mark.parametrize('source, target_ds, target, kwargs, message', [
    pytest.param(SOURCE_MANAGED, T_DS, T_D1 + T_OWN, {}, 'newer than the last common snapshot', id='target snapshot after common'),
    pytest.param(SOURCE_MANAGED, T_DS_WRITTEN, T_D1, {}, 'modified since its last snapshot (1236992 bytes', id='target written'),
    pytest.param(SOURCE_MANAGED, T_DS, T_D1 + T_H1_OTHER, {}, 'zfs-auto-snap_hourly-2024-05-01-0100', id='same name other guid'),
    pytest.param(SOURCE_MANAGED, T_DS, T_UNRELATED, {}, 'none of them exists on tank/data', id='no common snapshot'),
    pytest.param(SOURCE_MANAGED, T_DS, T_UNRELATED, {'force_rollback': True}, 'rolling back cannot fix', id='no common, force'),
    pytest.param(SOURCE_MANAGED, T_DS, '', {}, 'exists but has no snapshot', id='empty target'),
    pytest.param(SOURCE_MANAGED, T_DS, T_H2_OLD_OTHER + T_D1, {'force_rollback': True}, 'guids differ',
                 id='same name other guid before the common snapshot'),
])
def test_refuses(source: str, target_ds: str, target: str, kwargs: dict, message: str) -> None:
    result = plan(source, target_ds, target, **kwargs)
    assert result.error is not None and message in result.error
    assert result.steps == ()
    assert 'Nothing was changed' in result.error


def test_diverged_message_names_the_way_out() -> None:
    result = plan(SOURCE_MANAGED, T_DS, T_D1 + T_OWN)
    assert 'force_rollback: true' in t.cast(str, result.error)
    assert 'zfs-auto-snap_hourly-2024-05-01-0500' in t.cast(str, result.error)


def test_steps_send_args() -> None:
    result = plan(SOURCE_BOOKMARKED, T_DS, T_D1, include_foreign=True)
    assert [s.send_args() for s in result.steps] == [
        ['-i', 'tank/data#zfs-auto-snap_daily-2024-05-01-0000', 'tank/data@zfs-auto-snap_hourly-2024-05-01-0100'],
        ['-I', 'tank/data@zfs-auto-snap_hourly-2024-05-01-0100', 'tank/data@zfs-auto-snap_daily-2024-05-02-0000'],
    ]
    assert result.steps[1].arrives == ('before-upgrade', 'zfs-auto-snap_hourly-2024-05-01-0200', 'zfs-auto-snap_daily-2024-05-02-0000')
    resume = plan(SOURCE, T_DS_TOKEN, T_D1)
    assert resume.steps[0].send_args() == ['-t', TOKEN]
    full = plan(SOURCE_MANAGED, None, '')
    assert full.steps[0].send_args() == ['tank/data@zfs-auto-snap_daily-2024-05-01-0000']


def test_plan_reports_common_and_newest() -> None:
    result = plan(SOURCE_MANAGED, T_DS, T_D1)
    assert result.base is not None and result.base.name == 'zfs-auto-snap_daily-2024-05-01-0000'
    assert result.common_after is not None and result.common_after.name == 'zfs-auto-snap_daily-2024-05-02-0000'
    as_dict = result.as_dict()
    assert as_dict['from'] == 'tank/data@zfs-auto-snap_daily-2024-05-01-0000'
    assert as_dict['to'] == 'tank/data@zfs-auto-snap_daily-2024-05-02-0000'
    up_to_date = plan(SOURCE, T_DS, T_D1 + T_H1 + T_H2 + T_D2)
    assert up_to_date.common_after is not None and up_to_date.common_after.name == 'zfs-auto-snap_daily-2024-05-02-0000'
    assert plan(SOURCE, T_DS_TOKEN, T_D1).common_after is None


def test_nothing_selected() -> None:
    result = plan(SOURCE.replace('zfs-auto-snap', 'other'), None, '')
    assert result.action == 'none' and not result.steps
    assert any('no snapshot' in n for n in result.notes)


def test_up_to_date_but_target_modified_is_a_note_not_an_error() -> None:
    result = plan(SOURCE_MANAGED, T_DS_WRITTEN, T_D1 + T_H1 + T_H2 + T_D2)
    assert result.error is None and result.action == 'none'
    assert any('modified' in n for n in result.notes)


@pytest.mark.parametrize('line, raw, filesystem', [
    ('tank/data\tfilesystem\t0\t-\taes-256-gcm\n', True, True),
    ('tank/data\tfilesystem\t0\t-\toff\n', False, True),
    ('tank/vol\tvolume\t0\t-\toff\n', False, False),
])
def test_raw_and_type_follow_the_source(line: str, raw: bool, filesystem: bool) -> None:
    result = plan_dataset(dataset(line), TARGET, snaps(SOURCE_MANAGED), None, [], selection=Selection())
    assert (result.raw, result.filesystem) == (raw, filesystem)


def test_common_prefers_snapshot_over_its_bookmark() -> None:
    found = common_snapshot(snaps(SOURCE), {7366539146932519375})
    assert found is not None and not found.is_bookmark
    found = common_snapshot(snaps(SOURCE_BOOKMARKED), {7366539146932519375})
    assert found is not None and found.is_bookmark


@pytest.mark.parametrize('source, root, layout, expected', [
    ('tank/home/alice', 'tank/home', 'full', 'zfsbackups/c1/tank/home/alice'),
    ('tank', 'tank', 'full', 'zfsbackups/c1/tank'),
    ('tank/home/alice', 'tank/home', 'basename', 'zfsbackups/c1/home/alice'),
    ('tank/home', 'tank/home', 'basename', 'zfsbackups/c1/home'),
    ('tank', 'tank', 'basename', 'zfsbackups/c1/tank'),
])
def test_target_for(source: str, root: str, layout: str, expected: str) -> None:
    assert target_for(source, root, 'zfsbackups/c1', layout) == expected


def test_target_for_rejects_unknown_layout() -> None:
    with pytest.raises(ValidationError):
        target_for('tank/a', 'tank/a', 'b', 'flat')


LISTING = (
    'tank\tfilesystem\t0\t-\toff\n'
    'tank/home\tfilesystem\t0\t-\toff\n'
    'tank/home/alice\tfilesystem\t0\t-\toff\n'
    'tank/home/alice/cache\tfilesystem\t0\t-\toff\n'
    'tank/home-old\tfilesystem\t0\t-\toff\n'
    'tank/vm\tvolume\t0\t-\toff\n'
)


@pytest.mark.parametrize('roots, recursive, exclude, expected', [
    (['tank/home'], True, [], ['tank/home', 'tank/home/alice', 'tank/home/alice/cache']),
    (['tank/home'], False, [], ['tank/home']),
    (['tank'], True, ['tank/home/alice/*'], ['tank', 'tank/home', 'tank/home/alice', 'tank/home-old', 'tank/vm']),
    (['tank'], True, ['tank/home*'], ['tank', 'tank/vm']),
    (['tank/home/alice', 'tank/home'], True, [], ['tank/home', 'tank/home/alice', 'tank/home/alice/cache']),
])
def test_select_datasets_parents_first(roots: list[str], recursive: bool, exclude: list[str], expected: list[str]) -> None:
    listed = parse.datasets(LISTING, DATASET_COLUMNS)
    picked = select_datasets(reversed(listed), roots, recursive, exclude)
    assert [ds.name for ds, _root in picked] == expected
    # with overlapping roots the outermost one wins
    outermost = min(roots, key=len)
    assert all(root == outermost for _ds, root in picked)


def test_outer_roots() -> None:
    assert outer_roots(['tank/a', 'tank', 'tank/a', 'pool2'], True) == ['tank', 'pool2']
    assert outer_roots(['tank/a', 'tank', 'tank/a'], False) == ['tank/a', 'tank']


def test_map_targets_refuses_collisions() -> None:
    pairs = [(dataset('tank/data\tfilesystem\t0\t-\toff\n'), 'tank/data'),
             (dataset('pool2/data\tfilesystem\t0\t-\toff\n'), 'pool2/data')]
    assert map_targets(pairs, 'zfsbackups/c1', 'full') == ['zfsbackups/c1/tank/data', 'zfsbackups/c1/pool2/data']
    with pytest.raises(ValidationError, match='both replicate'):
        map_targets(pairs, 'zfsbackups/c1', 'basename')
    with pytest.raises(ValidationError, match='into itself'):
        map_targets(pairs[:1], 'tank/data/backup', 'full')


def test_hold_tag() -> None:
    assert hold_tag('backup1:zfsbackups/c1') == 'pyzfsautosnap:backup1:zfsbackups/c1'
    long_tag = hold_tag('h:' + 'x' * 300)
    assert len(long_tag) <= 255 and long_tag.startswith('pyzfsautosnap:')
    assert long_tag == hold_tag('h:' + 'x' * 300)


@pytest.mark.parametrize('keep, tagged, hold, release', [
    ('a@new', [], ['a@new'], []),
    ('a@new', ['a@old'], ['a@new'], ['a@old']),
    ('a@new', ['a@new'], [], []),
    ('a@new', ['a@new', 'a@old', 'a@older'], [], ['a@old', 'a@older']),
    (None, ['a@old'], [], ['a@old']),
])
def test_plan_holds(keep: str | None, tagged: list[str], hold: list[str], release: list[str]) -> None:
    assert plan_holds('pyzfsautosnap:t', keep, tagged) == (hold, release)


def test_plan_bookmark_keeps_one_per_target() -> None:
    tag = 'pyzfsautosnap:backup1:zfsbackups/c1'
    suffix = bookmark_suffix(tag)
    source = snaps(SOURCE_MANAGED + f'tank/data#zfs-auto-snap_hourly-2024-05-01-0100{suffix}\t1862402279211716542\t1010\t1714525200\t-\t-\n'
                   + 'tank/data#someone-elses\t1862402279211716542\t1010\t1714525200\t-\t-\n')
    common = next(s for s in source if s.name == 'zfs-auto-snap_daily-2024-05-02-0000')
    create, destroy = plan_bookmark('tank/data', source, common, tag)
    assert create == ('tank/data@zfs-auto-snap_daily-2024-05-02-0000', f'tank/data#zfs-auto-snap_daily-2024-05-02-0000{suffix}')
    assert destroy == [f'tank/data#zfs-auto-snap_hourly-2024-05-01-0100{suffix}']
    mark = next(s for s in source if s.is_bookmark and s.name.startswith('zfs-auto-snap_daily'))
    assert plan_bookmark('tank/data', source, mark, tag) == (None, [])


def test_target_prune_spares_common_foreign_and_held() -> None:
    target = snaps(
        f'{TARGET}@zfs-auto-snap_hourly-2024-05-01-0100\t11\t60\t1714525300\t0\t\n'
        f'{TARGET}@zfs-auto-snap_hourly-2024-05-01-0200\t12\t61\t1714528900\t1\t\n'
        f'{TARGET}@zfs-auto-snap_hourly-2024-05-01-0300\t13\t62\t1714532500\t0\t\n'
        f'{TARGET}@zfs-auto-snap_hourly-2024-05-01-0400\t14\t63\t1714536100\t0\t\n'
        f'{TARGET}@before-upgrade\t15\t64\t1714536200\t0\t\n'
        f'{TARGET}@zfs-auto-snap_daily-2024-05-01-0000\t16\t65\t1714536300\t0\t\n'
        f'{TARGET}@zfs-auto-snap_hourly-2024-05-01-0500\t17\t66\t1714539700\t0\t\n'
    )
    doomed = plan_target_prune(target, {'hourly': 2}, Selection(), protect_guids={13})
    assert [s.name for s in doomed] == ['zfs-auto-snap_hourly-2024-05-01-0100']


@pytest.mark.parametrize('output, size', [
    ('full\ttank/data@zfs-auto-snap_daily-2024-05-01-0000\t1234567\nsize\t1234567\n', 1234567),
    ('incremental\tzfs-auto-snap_daily-2024-05-01-0000\ttank/data@zfs-auto-snap_hourly-2024-05-01-0100\t4096\n'
     'incremental\tzfs-auto-snap_hourly-2024-05-01-0100\ttank/data@zfs-auto-snap_daily-2024-05-02-0000\t81920\n'
     'size\t86016\n', 86016),
    ('resume token contents:\nnvlist version: 0\n\tobject = 0x2\n\toffset = 0x1a000\n'
     'full\ttank/data@zfs-auto-snap_daily-2024-05-01-0000\t9000\nsize\t9000\n', 9000),
    ('', None),
])
def test_parse_send_size(output: str, size: int | None) -> None:
    assert parse_send_size(output) == size


@pytest.mark.parametrize('stderr, stale', [
    ("cannot resume send: 'tank/data@zfs-auto-snap_daily-2024-05-01-0000' used in the initial send no longer exists\n", True),
    ('cannot resume send: incremental source 0x66393ab5f3c1a4d3 no longer exists\n', True),
    ('resume token is corrupt\n', True),
    ("cannot send 'tank/data': permission denied\n", False),
])
def test_stale_token_errors(stderr: str, stale: bool) -> None:
    assert is_stale_token_error(stderr) is stale
