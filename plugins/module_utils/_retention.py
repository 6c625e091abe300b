# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which managed snapshots of one dataset and label to destroy. Pure: no I/O, no clock."""

from __future__ import annotations

import dataclasses
import typing as t

from ._naming import parse_name
from ._types import Snapshot

# Snapshots planned in this run sort after every existing one: they are the newest.
PLANNED_TXG = 2 ** 63 - 1

# Seconds a snapshot's creation may lie ahead of our clock before we call it a
# clock jump: listing happens after `now` is read, and another host may drift.
CLOCK_TOLERANCE = 300


@dataclasses.dataclass(frozen=True)
class PruneDecision:
    destroy: tuple[Snapshot, ...] = ()
    kept: tuple[Snapshot, ...] = ()
    skipped: tuple[tuple[Snapshot, str], ...] = ()


def managed(snapshots: t.Iterable[Snapshot], prefix: str, sep: str, label: str | None = None) -> list[Snapshot]:
    """Snapshots (not bookmarks) carrying our name format, of *label* when given."""
    out = []
    for snap in snapshots:
        if snap.is_bookmark:
            continue
        parsed = parse_name(snap.name, prefix, sep)
        if parsed is not None and (label is None or parsed.label == label):
            out.append(snap)
    return out


def newest_first(snapshots: t.Iterable[Snapshot]) -> list[Snapshot]:
    # createtxg orders snapshots of one dataset exactly; names and clocks can lie
    return sorted(snapshots, key=lambda s: (s.createtxg, s.name), reverse=True)


def prune_label(managed_of_label: t.Sequence[Snapshot], keep: int) -> PruneDecision:
    """Keep the newest *keep* snapshots; of the rest destroy those neither held nor cloned.

    *managed_of_label* must hold only managed snapshots of one label on one
    dataset, including those created in this run. Held and cloned snapshots
    beyond the window are reported, not counted toward *keep*: they stay anyway,
    and counting them would keep fewer ordinary snapshots than asked for.
    """
    ordered = newest_first(managed_of_label)
    # the newest snapshot of a label is never destroyed, whatever keep says
    window = max(keep, 1)
    kept = list(ordered[:window])
    destroy: list[Snapshot] = []
    skipped: list[tuple[Snapshot, str]] = []
    for snap in ordered[window:]:
        if snap.held:
            skipped.append((snap, f'held ({snap.userrefs} user reference(s))'))
            kept.append(snap)
        elif snap.clones:
            skipped.append((snap, f'has clones: {", ".join(snap.clones)}'))
            kept.append(snap)
        else:
            destroy.append(snap)
    return PruneDecision(tuple(destroy), tuple(kept), tuple(skipped))


def clock_jump(managed_snapshots: t.Iterable[Snapshot], now_epoch: int, tolerance: int = CLOCK_TOLERANCE) -> Snapshot | None:
    """A managed snapshot created 'in the future': the clock went backwards, so ages are unreliable."""
    future = [s for s in managed_snapshots if s.createtxg != PLANNED_TXG and s.creation > now_epoch + tolerance]
    return max(future, key=lambda s: s.creation) if future else None
