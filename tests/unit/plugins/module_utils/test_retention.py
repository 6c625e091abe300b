# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._retention import (
    PLANNED_TXG,
    clock_jump,
    managed,
    newest_first,
    prune_label,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import Snapshot

NOW = 1_715_000_000


def snap(txg: int, label: str = 'daily', *, held: int = 0, clones: tuple[str, ...] = (), name: str | None = None,
         creation: int | None = None) -> Snapshot:
    # names deliberately do not follow txg order: retention must go by createtxg
    name = name or f'zfs-auto-snap_{label}-2024-01-{(40 - txg) % 28 + 1:02d}-{txg % 24:02d}00'
    return Snapshot('tank/a', name, guid=txg * 7, createtxg=txg, creation=creation if creation is not None else NOW - 1000 + txg,
                    userrefs=held, clones=clones)


def names(snaps: tuple[Snapshot, ...] | list[Snapshot]) -> list[int]:
    return sorted(s.createtxg for s in snaps)


@pytest.mark.parametrize('txgs, keep, destroyed', [
    ([], 3, []),
    ([1], 1, []),
    ([1, 2, 3], 3, []),
    ([1, 2, 3], 5, []),
    ([1, 2, 3, 4, 5], 3, [1, 2]),
    ([5, 3, 1, 4, 2], 3, [1, 2]),
    ([1, 2, 3, 4, 5], 1, [1, 2, 3, 4]),
    # keep below 1 still keeps the newest
    ([1, 2, 3], 0, [1, 2]),
    ([1, 2, 3], -5, [1, 2]),
])
def test_keep_newest_by_createtxg(txgs: list[int], keep: int, destroyed: list[int]) -> None:
    decision = prune_label([snap(t) for t in txgs], keep)
    assert names(decision.destroy) == destroyed
    assert len(decision.kept) == len(txgs) - len(destroyed)


@pytest.mark.parametrize('specs, keep, destroyed, skipped', [
    # a held snapshot beyond the window stays, and does not count toward keep
    ({1: 'held', 2: '', 3: '', 4: '', 5: ''}, 3, [2], [1]),
    ({1: 'clone', 2: 'held', 3: '', 4: ''}, 1, [3], [1, 2]),
    # inside the window: nothing to report
    ({1: '', 2: 'held', 3: 'clone'}, 2, [1], []),
    ({1: 'held', 2: 'held'}, 1, [], [1]),
])
def test_held_and_cloned_never_destroyed(specs: dict[int, str], keep: int, destroyed: list[int], skipped: list[int]) -> None:
    snaps = [snap(t, held=1 if kind == 'held' else 0, clones=('tank/clone',) if kind == 'clone' else ()) for t, kind in specs.items()]
    decision = prune_label(snaps, keep)
    assert names(decision.destroy) == destroyed
    assert sorted(s.createtxg for s, reason in decision.skipped) == skipped
    reasons = {s.createtxg: r for s, r in decision.skipped}
    for t, kind in specs.items():
        if t in reasons:
            assert ('held' in reasons[t]) if kind == 'held' else ('clones' in reasons[t])


def test_planned_snapshot_counts_toward_keep() -> None:
    planned = Snapshot('tank/a', 'zfs-auto-snap_daily-2024-05-06-1234', guid=0, createtxg=PLANNED_TXG, creation=NOW)
    decision = prune_label([snap(1), snap(2), snap(3), planned], 3)
    assert names(decision.destroy) == [1]
    assert planned in decision.kept


def test_managed_filters_labels_foreign_and_bookmarks() -> None:
    snaps = [
        snap(1, 'daily'),
        snap(2, 'hourly'),
        snap(3, name='manual'),
        snap(4, name='other_daily-2024-01-01-0000'),
        Snapshot('tank/a', 'zfs-auto-snap_daily-2024-01-01-0000', guid=9, createtxg=5, creation=NOW, is_bookmark=True),
    ]
    assert names(managed(snaps, 'zfs-auto-snap', '_', 'daily')) == [1]
    assert names(managed(snaps, 'zfs-auto-snap', '_')) == [1, 2]
    assert names(managed(snaps, 'other', '_', 'daily')) == [4]


def test_newest_first_orders_by_createtxg_not_name() -> None:
    a = snap(1, name='zfs-auto-snap_daily-2030-01-01-0000')
    b = snap(2, name='zfs-auto-snap_daily-2020-01-01-0000')
    assert newest_first([a, b]) == [b, a]


@pytest.mark.parametrize('creations, jumped', [
    ([NOW - 100, NOW - 50], None),
    ([NOW - 100, NOW + 100], None),  # within tolerance
    ([NOW - 100, NOW + 3600], NOW + 3600),
    ([NOW + 7200, NOW + 3600], NOW + 7200),
])
def test_clock_jump(creations: list[int], jumped: int | None) -> None:
    snaps = [snap(i + 1, creation=c) for i, c in enumerate(creations)]
    found = clock_jump(snaps, NOW)
    assert (found.creation if found else None) == jumped


def test_clock_jump_ignores_planned() -> None:
    planned = Snapshot('tank/a', 'x', guid=0, createtxg=PLANNED_TXG, creation=NOW + 99999)
    assert clock_jump([planned], NOW) is None
