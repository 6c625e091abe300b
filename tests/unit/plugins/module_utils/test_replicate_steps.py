# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The run of one dataset as steps: listings in, the ordered step list out."""

from __future__ import annotations

import typing as t

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._replicate_plan import (
    Conflict, Diverged, NameClash, NoCommonSnapshot, NotAReplica, Selection, bookmark_suffix,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._replicate_result import DatasetResult
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._replicate_steps import (
    AbortResume, Bookmark, DestroyBookmark, EnsureParent, Hold, Protection, Prune, Release, Replicated, RunStep, Stream,
    batched, missing_parents, plan_protection, plan_run, predicted_target, replans_after,
)
from ansible_collections.pyzfsautosnap.zfs.tests.unit.plugins.module_utils.test_replicate_plan import (
    SOURCE, SOURCE_MANAGED, T_D1, T_D2, T_DS, T_DS_TOKEN, T_DS_WRITTEN, T_H1, T_H1_OTHER, T_H2, T_OWN, T_UNRELATED, TARGET,
    alias, plan, render, snaps,
)

TAG = 'pyzfsautosnap:backup:c1'
SUFFIX = bookmark_suffix(TAG)
PARENTS = ('zfsbackups/c1', 'zfsbackups/c1/tank')
D1, D2 = 'zfs-auto-snap_daily-2024-05-01-0000', 'zfs-auto-snap_daily-2024-05-02-0000'
H1 = 'zfs-auto-snap_hourly-2024-05-01-0100'
CONFLICTS = (NotAReplica, NoCommonSnapshot, NameClash, Diverged)


def short(step: RunStep) -> str:
    if isinstance(step, AbortResume):
        return 'abort'
    if isinstance(step, EnsureParent):
        return 'parents ' + ','.join(step.create)
    if isinstance(step, Stream):
        return 'stream ' + render(step.step)
    if isinstance(step, (Hold, Release)):
        return f'{step.kind} {step.side} ' + ','.join(alias(n) for n in step.names)
    if isinstance(step, Bookmark):
        return f'bookmark {alias(step.snapshot)} {step.bookmark.split("#")[1].replace(SUFFIX, "+ours")}'
    if isinstance(step, DestroyBookmark):
        return 'destroy_bookmark ' + step.name.split('#')[1].replace(SUFFIX, '+ours')
    assert isinstance(step, Prune)
    return 'prune ' + ','.join(alias('x@' + n) for n in step.names)


def whole_run(source: str, target_ds: str | None, target: str, *, parents: tuple[str, ...] = (), tagged: tuple[str, ...] = (),
              bookmark: bool = False, retention: t.Mapping[str, int] | None = None, **kwargs: t.Any) -> list[RunStep]:
    """What check mode plans for one dataset: the streams, then protection from the listings they would leave."""
    p = plan(source, target_ds, target, **kwargs)
    assert p.conflict is None
    src, tgt = snaps(source), snaps(target)
    done = Replicated(p.source, p.target, p.common_after, tuple(src), tuple(predicted_target(p, src, tgt)))
    protection = plan_protection(done, TAG, [f'tank/data@{n}' for n in tagged], [f'{TARGET}@{n}' for n in tagged],
                                 source_bookmark=bookmark, retention=retention or {}, selection=Selection())
    return list(plan_run(p, parents, protection).steps)


@pytest.mark.parametrize('source, target_ds, target, kwargs, expected', [
    pytest.param(SOURCE_MANAGED, None, '', {'parents': PARENTS, 'bookmark': True}, [
        'parents zfsbackups/c1,zfsbackups/c1/tank', 'stream full D1', 'stream -I D1 D2',
        'hold source D2', 'hold target D2', f'bookmark D2 {D2}+ours',
    ], id='first run'),
    pytest.param(SOURCE_MANAGED, T_DS, T_D1, {'tagged': (D1,), 'retention': {'hourly': 1}}, [
        'parents ', 'stream -I D1 D2', 'hold source D2', 'hold target D2', 'release source D1', 'release target D1',
        'prune H1',
    ], id='incremental moves the hold, prunes the target'),
    pytest.param(SOURCE_MANAGED, T_DS_TOKEN, T_D1, {'stale_token': True, 'tagged': (D1,)}, [
        'abort', 'parents ', 'stream -I D1 D2', 'hold source D2', 'hold target D2', 'release source D1', 'release target D1',
    ], id='stale token aborted first'),
    pytest.param(SOURCE, T_DS_TOKEN, T_D1, {'tagged': (D1,)}, ['parents ', 'stream resume'],
                 id='resume: nothing protected before the re-plan'),
    pytest.param(SOURCE, T_DS, T_D1 + T_H1 + T_H2 + T_D2, {'tagged': (D2,)}, [], id='up to date'),
    pytest.param(SOURCE, T_DS, T_D1 + T_H1 + T_H2 + T_D2, {}, ['hold source D2', 'hold target D2'],
                 id='up to date, hold missing'),
    pytest.param(SOURCE_MANAGED, T_DS, T_D1 + T_OWN, {'force_rollback': True, 'tagged': (D1,)}, [
        'parents ', 'stream -I D1 D2 -F', 'hold source D2', 'hold target D2', 'release source D1', 'release target D1',
    ], id='rolled back'),
])
def test_whole_run(source: str, target_ds: str | None, target: str, kwargs: dict[str, t.Any], expected: list[str]) -> None:
    steps = whole_run(source, target_ds, target, **kwargs)
    assert [short(s) for s in steps] == expected
    # the dynamic rule: only an abort or a resumed stream ends a round early
    assert [replans_after(s) for s in steps] == [short(s) in ('abort', 'stream resume') for s in steps]


@pytest.mark.parametrize('listings, kwargs, kind, message', [
    pytest.param((SOURCE_MANAGED, T_DS, T_D1 + T_OWN), {}, Diverged, 'newer than the last common snapshot', id='newer on target'),
    pytest.param((SOURCE_MANAGED, T_DS_WRITTEN, T_D1), {}, Diverged, 'modified since its last snapshot', id='written'),
    pytest.param((SOURCE_MANAGED, T_DS, T_D1 + T_H1_OTHER), {}, Diverged, 'has diverged', id='same name, after the common one'),
    pytest.param((SOURCE_MANAGED, T_DS, T_UNRELATED), {}, NotAReplica, 'none of them exists on tank/data', id='not a replica'),
    pytest.param((SOURCE_MANAGED, T_DS, T_UNRELATED), {'force_rollback': True}, NotAReplica, 'rolling back cannot fix',
                 id='not a replica, force'),
    pytest.param((SOURCE_MANAGED, T_DS, ''), {}, NoCommonSnapshot, 'exists but has no snapshot', id='no common snapshot'),
    pytest.param((SOURCE_MANAGED, T_DS,
                  f'{TARGET}@zfs-auto-snap_hourly-2024-05-01-0200\t4343434343434343434\t40\t1714500000\t0\t\n' + T_D1),
                 {'force_rollback': True}, NameClash, 'guids differ', id='name clash'),
])
def test_conflicts(listings: tuple[str, str, str], kwargs: dict[str, t.Any], kind: type[Conflict], message: str) -> None:
    p = plan(*listings, **kwargs)
    assert isinstance(p.conflict, Conflict)
    assert isinstance(p.conflict, kind) and [k for k in CONFLICTS if isinstance(p.conflict, k)] == [kind]
    assert message in str(p.conflict) and p.error == str(p.conflict) == p.conflict.message
    assert p.steps == () and plan_run(p).steps == ()


def test_no_conflict_no_error() -> None:
    p = plan(SOURCE_MANAGED, T_DS, T_D1)
    assert p.conflict is None and p.error is None


@pytest.mark.parametrize('known, existing, expected', [
    ({'zfsbackups/c1/tank'}, set(), ()),
    (set(), {'zfsbackups/c1/tank'}, ()),
    (set(), {'zfsbackups'}, ('zfsbackups/c1', 'zfsbackups/c1/tank')),
    ({'zfsbackups'}, set(), ('zfsbackups/c1', 'zfsbackups/c1/tank')),
    (set(), set(), None),
])
def test_missing_parents(known: set[str], existing: set[str], expected: tuple[str, ...] | None) -> None:
    asked: list[str] = []

    def exists(name: str) -> bool:
        asked.append(name)
        return name in existing

    assert missing_parents(TARGET, known, exists) == expected
    # known names are never looked up
    assert not set(asked) & known


def test_batched_holds_before_releases_across_datasets() -> None:
    a = Protection(held=('a@2', 't/a@2'), released=('a@1',), steps=(
        Hold('source', TAG, ('a@2',)), Hold('target', TAG, ('t/a@2',)), Release('source', TAG, ('a@1',)),
        Bookmark('a@2', 'a#2'), Prune('t/a', ('0',))))
    b = Protection(steps=(Hold('source', TAG, ('b@2',)), Release('target', TAG, ('t/b@1',)), DestroyBookmark('b#1')))
    assert batched([a, b]) == (
        Hold('source', TAG, ('a@2', 'b@2')), Hold('target', TAG, ('t/a@2',)),
        Release('source', TAG, ('a@1',)), Release('target', TAG, ('t/b@1',)),
        Bookmark('a@2', 'a#2'), Prune('t/a', ('0',)), DestroyBookmark('b#1'))
    assert batched([]) == ()


def test_prune_never_takes_the_common_snapshot() -> None:
    # retention alone would take H1 and H2 and keep only the newest hourly
    target = snaps(T_D1 + T_H1 + T_H2 + T_D2 + T_OWN)
    common = next(s for s in snaps(SOURCE) if s.name == H1)
    done = Replicated('tank/data', TARGET, common, tuple(snaps(SOURCE)), tuple(target))
    protection = plan_protection(done, TAG, [], [], source_bookmark=False, retention={'hourly': 1}, selection=Selection())
    assert protection.pruned == (f'{TARGET}@zfs-auto-snap_hourly-2024-05-01-0200',)
    assert [short(s) for s in protection.steps] == ['hold source H1', 'hold target H1', 'prune H2']


def test_bookmark_replaces_ours_only() -> None:
    source = SOURCE_MANAGED + f'tank/data#{D1}{SUFFIX}\t7366539146932519375\t1001\t1714521600\t-\t-\n'
    steps = whole_run(source, T_DS, T_D1, tagged=(D1,), bookmark=True)
    assert [short(s) for s in steps][-2:] == [f'bookmark D2 {D2}+ours', f'destroy_bookmark {D1}+ours']


def test_predicted_target_appends_arrivals_in_order() -> None:
    p = plan(SOURCE_MANAGED, T_DS, T_D1)
    predicted = predicted_target(p, snaps(SOURCE_MANAGED), snaps(T_D1))
    assert [alias('x@' + s.name) for s in predicted] == ['D1', 'H1', 'H2', 'D2']
    assert all(s.dataset == TARGET and s.userrefs == 0 for s in predicted[1:])
    assert [s.createtxg for s in predicted] == sorted(s.createtxg for s in predicted)


RESULT_KEYS = ['source', 'target', 'action', 'from', 'to', 'steps', 'rollback', 'notes', 'bytes', 'seconds', 'rate',
               'estimated_bytes', 'created_parents', 'aborted_resume', 'held', 'released', 'bookmarked',
               'destroyed_bookmarks', 'pruned', 'changed']


def test_check_mode_result_is_the_rendered_plan() -> None:
    p = plan(SOURCE_MANAGED, T_DS_TOKEN, T_D1, stale_token=True)
    run = plan_run(p, PARENTS, Protection(held=('x',)))
    res = DatasetResult.from_run(run, [4096]).render()
    assert list(res) == RESULT_KEYS
    assert res['aborted_resume'] and res['created_parents'] == list(PARENTS) and res['held'] == ['x']
    assert [s['estimated_bytes'] for s in res['steps']] == [4096] and res['estimated_bytes'] == 4096
    assert res['changed'] and res['bytes'] == 0 and res['rate'] is None
    unknown = DatasetResult.from_run(plan_run(plan(SOURCE, None, '')), [4096, None]).render()
    assert unknown['estimated_bytes'] is None
    nothing = DatasetResult.from_run(plan_run(plan(SOURCE, T_DS, T_D1 + T_H1 + T_H2 + T_D2)), []).render()
    assert nothing['estimated_bytes'] == 0 and not nothing['changed'] and nothing['steps'] == []
