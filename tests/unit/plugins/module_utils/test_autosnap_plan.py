# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._autosnap_plan import build_plan, diff_text, make_config
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._naming import DEFAULT_POLICY, format_name
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import Dataset, Snapshot, ValidationError

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 5, 8, 12, 34, 17, tzinfo=UTC)  # a Wednesday
_txg = itertools.count(100)


def ds(name: str, written: int | None = 4096, props: dict[str, str] | None = None) -> Dataset:
    return Dataset(name, properties=props or {}, written=written)


def snap(dataset: str, label: str, when: dt.datetime, *, held: int = 0, clones: tuple[str, ...] = (),
         name: str | None = None) -> Snapshot:
    return Snapshot(dataset, name or format_name('zfs-auto-snap', '_', label, when), guid=next(_txg), createtxg=next(_txg),
                    creation=int(when.timestamp()), userrefs=held, clones=clones)


def cfg(**kwargs: object):
    kwargs.setdefault('all_pools', True)
    return make_config(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ due logic
@pytest.mark.parametrize('label, existing, due', [
    ('daily', None, True),
    ('daily', NOW.replace(hour=0, minute=0), False),
    ('daily', NOW - dt.timedelta(days=1), True),
    ('daily', NOW - dt.timedelta(days=30), True),
    ('hourly', NOW.replace(minute=0), False),
    ('hourly', NOW.replace(minute=0) - dt.timedelta(minutes=1), True),
    ('frequent', NOW.replace(minute=30), False),
    ('frequent', NOW.replace(minute=29), True),
    ('weekly', NOW - dt.timedelta(days=2), False),  # Monday of the same ISO week
    ('weekly', NOW - dt.timedelta(days=3), True),   # Sunday before
    ('monthly', NOW.replace(day=1, hour=0, minute=0), False),
    ('monthly', NOW.replace(day=1, hour=0, minute=0) - dt.timedelta(minutes=1), True),
    ('yearly', NOW.replace(month=1, day=1), False),
    # a snapshot named in a later slot (the clock went back) does not serve the current one
    ('daily', NOW + dt.timedelta(days=1), True),
])
def test_due(label: str, existing: dt.datetime | None, due: bool) -> None:
    snaps = [snap('tank', label, existing)] if existing else []
    plan = build_plan(cfg(label=label, keep=5), [ds('tank')], snaps, NOW)
    assert bool(plan.creates) is due


def test_script_made_snapshot_in_slot_counts() -> None:
    made_by_script = snap('tank', 'daily', NOW.replace(hour=0, minute=0))
    assert build_plan(cfg(label='daily', keep=5), [ds('tank')], [made_by_script], NOW).creates == []


def test_other_label_or_prefix_does_not_serve_slot() -> None:
    snaps = [snap('tank', 'hourly', NOW), snap('tank', 'daily', NOW, name=format_name('other', '_', 'daily', NOW))]
    plan = build_plan(cfg(label='daily', keep=5), [ds('tank')], snaps, NOW)
    assert plan.created == ['tank@zfs-auto-snap_daily-2024-05-08-1234']


def test_catch_up_takes_one_per_label_not_a_backfill() -> None:
    long_ago = NOW - dt.timedelta(days=400)
    snaps = [snap('tank', label, long_ago) for label in DEFAULT_POLICY]
    plan = build_plan(cfg(), [ds('tank')], snaps, NOW)
    assert sorted(plan.created) == sorted(f'tank@{format_name("zfs-auto-snap", "_", label, NOW)}' for label in DEFAULT_POLICY)


def test_existing_name_is_not_due() -> None:
    name = format_name('zfs-auto-snap', '_', 'daily', NOW)
    # same name, but a createtxg/creation that looks unrelated: the name alone must stop a second create
    odd = Snapshot('tank', name, guid=1, createtxg=1, creation=0)
    plan = build_plan(cfg(label='daily', keep=5), [ds('tank')], [odd], NOW)
    assert plan.creates == []


def test_snapshot_false_only_prunes() -> None:
    snaps = [snap('tank', 'daily', NOW - dt.timedelta(days=d)) for d in range(1, 6)]
    plan = build_plan(cfg(label='daily', keep=2, snapshot=False), [ds('tank')], snaps, NOW)
    assert plan.creates == []
    assert len(plan.destroyed) == 3


def test_prune_false_only_snapshots() -> None:
    snaps = [snap('tank', 'daily', NOW - dt.timedelta(days=d)) for d in range(1, 6)]
    plan = build_plan(cfg(label='daily', keep=2, prune=False), [ds('tank')], snaps, NOW)
    assert len(plan.created) == 1 and plan.destroys == []


# ---------------------------------------------------------------- batching
def test_one_batch_per_pool_and_name() -> None:
    datasets = [ds('tank'), ds('tank/a'), ds('tank/b'), ds('backup'), ds('backup/x')]
    plan = build_plan(cfg(policy={'hourly': 3, 'daily': 3}), datasets, [], NOW)
    assert [(b.label, b.pool, b.datasets) for b in plan.creates] == [
        ('hourly', 'backup', ['backup', 'backup/x']),
        ('hourly', 'tank', ['tank', 'tank/a', 'tank/b']),
        ('daily', 'backup', ['backup', 'backup/x']),
        ('daily', 'tank', ['tank', 'tank/a', 'tank/b']),
    ]


def test_destroys_grouped_per_dataset_across_labels() -> None:
    snaps = [snap('tank', label, NOW - dt.timedelta(days=40 * d)) for label in ('hourly', 'daily') for d in range(1, 4)]
    plan = build_plan(cfg(policy={'hourly': 1, 'daily': 1}), [ds('tank')], snaps, NOW)
    assert len(plan.destroys) == 1
    batch = plan.destroys[0]
    assert sorted(batch.labels) == ['daily'] * 3 + ['hourly'] * 3
    assert plan.labels['daily'] == {'keep': 1, 'datasets': 1, 'created': 1, 'destroyed': 3}


# ---------------------------------------------------------------- retention
def test_new_snapshot_counts_toward_keep() -> None:
    snaps = [snap('tank', 'daily', NOW - dt.timedelta(days=d)) for d in (3, 2, 1)]
    plan = build_plan(cfg(label='daily', keep=3), [ds('tank')], snaps, NOW)
    assert plan.destroyed == [snaps[0].full_name]


def test_foreign_and_other_labels_untouched() -> None:
    old = NOW - dt.timedelta(days=90)
    snaps = [
        snap('tank', 'daily', old, name='before-upgrade'),
        snap('tank', 'daily', old, name=format_name('other', '_', 'daily', old)),
        snap('tank', 'hourly', old),
        snap('tank', 'daily', old, name=format_name('zfs-auto-snap', '-', 'daily', old)),
        snap('tank', 'daily', old),
        snap('tank', 'daily', old + dt.timedelta(days=1)),
    ]
    plan = build_plan(cfg(label='daily', keep=1), [ds('tank')], snaps, NOW)
    assert plan.destroyed == [snaps[4].full_name, snaps[5].full_name]


def test_held_and_cloned_reported_as_skipped() -> None:
    snaps = [snap('tank', 'daily', NOW - dt.timedelta(days=5), held=1),
             snap('tank', 'daily', NOW - dt.timedelta(days=4), clones=('tank/clone',)),
             snap('tank', 'daily', NOW - dt.timedelta(days=3))]
    plan = build_plan(cfg(label='daily', keep=1), [ds('tank')], snaps, NOW)
    assert plan.destroyed == [snaps[2].full_name]
    assert {s['name'] for s in plan.skipped} == {snaps[0].full_name, snaps[1].full_name}


def test_clock_jump_freezes_pruning_of_that_dataset() -> None:
    future = snap('tank', 'daily', NOW + dt.timedelta(days=2))
    snaps = [snap('tank', 'daily', NOW - dt.timedelta(days=d)) for d in (3, 2, 1)] + [future]
    others = [snap('tank/b', 'daily', NOW - dt.timedelta(days=d)) for d in (3, 2, 1)]
    plan = build_plan(cfg(label='daily', keep=1), [ds('tank'), ds('tank/b')], snaps + others, NOW)
    assert all(not n.startswith('tank@') for n in plan.destroyed)
    assert len(plan.destroyed) == 3  # tank/b is pruned as usual
    assert any('clock went backwards' in w and 'tank@' in w for w in plan.warnings)
    assert 'tank@zfs-auto-snap_daily-2024-05-08-1234' in plan.created


# ------------------------------------------------------------ skip unchanged
def test_skip_unchanged() -> None:
    snaps = [snap('tank', 'daily', NOW - dt.timedelta(days=1)), snap('tank/b', 'daily', NOW - dt.timedelta(days=1))]
    datasets = [ds('tank', written=0), ds('tank/b', written=123), ds('tank/new', written=0)]
    plan = build_plan(cfg(label='daily', keep=5, skip_unchanged=True), datasets, snaps, NOW)
    # tank/new has no snapshot at all: written=0 cannot mean "unchanged since the last one"
    assert plan.created == ['tank/b@zfs-auto-snap_daily-2024-05-08-1234', 'tank/new@zfs-auto-snap_daily-2024-05-08-1234']
    assert plan.skipped == [{'name': 'tank@zfs-auto-snap_daily-2024-05-08-1234',
                             'reason': f'unchanged: nothing written since {snaps[0].full_name}'}]


def test_skip_unchanged_off_ignores_written() -> None:
    snaps = [snap('tank', 'daily', NOW - dt.timedelta(days=1))]
    plan = build_plan(cfg(label='daily', keep=5), [ds('tank', written=0)], snaps, NOW)
    assert len(plan.created) == 1


# ------------------------------------------------------------- selection, diff
def test_excluded_datasets_neither_snapshotted_nor_pruned() -> None:
    old = [snap('tank/tmp', 'daily', NOW - dt.timedelta(days=d)) for d in (3, 2, 1)]
    datasets = [ds('tank'), ds('tank/tmp', props={'com.sun:auto-snapshot': 'false'})]
    plan = build_plan(cfg(label='daily', keep=1), datasets, old, NOW)
    assert plan.datasets == ['tank']
    assert plan.destroys == []
    assert plan.excluded[0]['name'] == 'tank/tmp'


def test_diff_lists_managed_only() -> None:
    snaps = [snap('tank', 'daily', NOW - dt.timedelta(days=2)), snap('tank', 'daily', NOW, name='manual')]
    plan = build_plan(cfg(label='daily', keep=1), [ds('tank')], snaps, NOW)
    assert plan.before == [snaps[0].full_name]
    assert diff_text(plan.before) == snaps[0].full_name + '\n'
    assert diff_text([]) == ''


# -------------------------------------------------------------- validation
@pytest.mark.parametrize('kwargs, message', [
    ({'label': 'daily'}, 'together'),
    ({'keep': 3}, 'together'),
    ({'label': 'daily', 'keep': 3, 'policy': {'hourly': 1}}, 'not both'),
    ({'label': 'fortnightly', 'keep': 3}, 'unknown label'),
    ({'policy': {'daily': 0}}, '>= 1'),
    ({'policy': {'daily': -1}}, '>= 1'),
    ({'policy': {'daily': 1.5}}, 'integer'),
    ({'policy': {'daily': 'many'}}, 'integer'),
    ({'policy': {'daily': True}}, 'integer'),
    ({'policy': ['daily']}, 'mapping'),
    ({'roots': ['tank; rm -rf /']}, 'forbidden'),
    ({'roots': ['tank@snap']}, 'snapshot'),
    ({'roots': ['tank/']}, 'empty'),
    ({'prefix': 'a b'}, 'forbidden'),
    ({'prefix': 'a/b'}, "'/'"),
    ({'prefix': 'a,b'}, 'may only hold'),
    ({'prefix': ''}, 'non-empty'),
    ({'separator': '__'}, 'exactly one'),
    ({'frequent_minutes': 7}, 'divide 60'),
    ({'recursive': 'yes'}, 'true or false'),
    ({'exclude': ['']}, 'non-empty'),
])
def test_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_config(**kwargs)


def test_config_defaults_and_order() -> None:
    config = make_config(policy={'monthly': '2', 'hourly': 3}, roots=['tank', 'tank', 'backup'])
    assert list(config.policy.items()) == [('hourly', 3), ('monthly', 2)]
    assert config.roots == ('tank', 'backup')
    assert make_config(all_pools=True).policy == DEFAULT_POLICY
