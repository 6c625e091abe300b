# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The run of one dataset as data: ordered steps an executor carries out one by one. Pure: no I/O.

A dataset's run is, in this order: discard an interrupted receive that cannot
be resumed, create the missing parents of the target, the streams, then the
protection of the new common snapshot: holds on both sides, releases of the
old ones, the source bookmark, the target prune.

One dynamic rule covers what only a finished step can tell: after an aborted
receive or a resumed stream (:func:`replans_after`) the remaining steps are
not run; the dataset is planned again from fresh listings, at most
``MAX_REPLANS`` rounds. The protection steps are likewise planned from fresh
listings once the streams are through (in check mode, from the listings the
streams would leave, :func:`predicted_target`). Across datasets the holds and
releases of one batch go in one command per side (:func:`batched`), every
hold before any release.
"""

from __future__ import annotations

import dataclasses
import typing as t

from ._replicate_plan import (
    DatasetPlan, Selection, Step, plan_bookmark, plan_holds, plan_target_prune,
)
from ._types import Snapshot

Side = t.Literal['source', 'target']
StepKind = t.Literal['abort_resume', 'ensure_parent', 'stream', 'hold', 'release', 'bookmark', 'destroy_bookmark', 'prune']
# zfs create -o for the parents the engine makes: never mounted, never auto-snapshotted


@dataclasses.dataclass(frozen=True)
class AbortResume:
    """``zfs receive -A``: discard the partial state of a receive that cannot be resumed."""

    target: str
    kind: t.Literal['abort_resume'] = dataclasses.field(default='abort_resume', init=False)


@dataclasses.dataclass(frozen=True)
class EnsureParent:
    """Create the missing ancestors of *target* (outermost first) before its first stream."""

    target: str
    create: tuple[str, ...] = ()
    kind: t.Literal['ensure_parent'] = dataclasses.field(default='ensure_parent', init=False)


@dataclasses.dataclass(frozen=True)
class Stream:
    """One ``zfs send | zfs receive`` of *step*."""

    source: str
    target: str
    step: Step
    raw: bool = False
    filesystem: bool = True
    kind: t.Literal['stream'] = dataclasses.field(default='stream', init=False)


@dataclasses.dataclass(frozen=True)
class Hold:
    side: Side
    tag: str
    names: tuple[str, ...]
    kind: t.Literal['hold'] = dataclasses.field(default='hold', init=False)


@dataclasses.dataclass(frozen=True)
class Release:
    side: Side
    tag: str
    names: tuple[str, ...]
    kind: t.Literal['release'] = dataclasses.field(default='release', init=False)


@dataclasses.dataclass(frozen=True)
class Bookmark:
    snapshot: str
    bookmark: str
    kind: t.Literal['bookmark'] = dataclasses.field(default='bookmark', init=False)


@dataclasses.dataclass(frozen=True)
class DestroyBookmark:
    name: str
    kind: t.Literal['destroy_bookmark'] = dataclasses.field(default='destroy_bookmark', init=False)


@dataclasses.dataclass(frozen=True)
class Prune:
    """Destroy replica snapshots (names without the dataset) of *target*; a failure is a warning."""

    target: str
    names: tuple[str, ...]
    kind: t.Literal['prune'] = dataclasses.field(default='prune', init=False)


RunStep = t.Union[AbortResume, EnsureParent, Stream, Hold, Release, Bookmark, DestroyBookmark, Prune]


@dataclasses.dataclass(frozen=True)
class Protection:
    """How one dataset's new common snapshot is protected, and what gets cleaned up behind it."""

    held: tuple[str, ...] = ()
    released: tuple[str, ...] = ()
    bookmarked: str | None = None
    destroyed_bookmarks: tuple[str, ...] = ()
    pruned: tuple[str, ...] = ()
    steps: tuple[RunStep, ...] = ()


@dataclasses.dataclass(frozen=True)
class Replicated:
    """A dataset whose streams are through, with the listings of both sides after them."""

    source: str
    target: str
    common: Snapshot | None  # the common snapshot to protect (DatasetPlan.common_after)
    source_snaps: tuple[Snapshot, ...] = ()
    target_snaps: tuple[Snapshot, ...] = ()


@dataclasses.dataclass(frozen=True)
class DatasetRun:
    """Everything one dataset's run does, in order: what check mode reports."""

    plan: DatasetPlan
    steps: tuple[RunStep, ...]
    protection: Protection = Protection()


# ------------------------------------------------------------------ streams
def stream_steps(plan: DatasetPlan, parents: t.Sequence[str] = ()) -> tuple[RunStep, ...]:
    """Abort, parents and streams of *plan*; *parents*: the target's missing ancestors, outermost first."""
    steps: list[RunStep] = []
    if plan.abort_resume:
        steps.append(AbortResume(plan.target))
    if plan.steps:
        steps.append(EnsureParent(plan.target, tuple(parents)))
        steps.extend(Stream(plan.source, plan.target, s, raw=plan.raw, filesystem=plan.filesystem) for s in plan.steps)
    return tuple(steps)


def replans_after(step: RunStep) -> bool:
    """The dynamic rule: what follows an aborted receive or a resumed stream is planned again from fresh listings."""
    return isinstance(step, AbortResume) or isinstance(step, Stream) and step.step.kind == 'resume'


def missing_parents(target: str, known: t.Container[str], exists: t.Callable[[str], bool]) -> tuple[str, ...] | None:
    """Ancestors of *target* to create, outermost first; None when even the pool is missing.

    *known* names need no look-up; *exists* answers for the others (a listing, not a change).
    """
    missing: list[str] = []
    parent = target.rsplit('/', 1)[0]
    while parent not in known and not exists(parent):
        if '/' not in parent:
            return None
        missing.append(parent)
        parent = parent.rsplit('/', 1)[0]
    return tuple(reversed(missing))


def predicted_target(plan: DatasetPlan, src_snaps: t.Sequence[Snapshot], tgt_snaps: t.Sequence[Snapshot]) -> list[Snapshot]:
    """The target's snapshots once *plan*'s streams ran: the source's arrive, in order after the target's own."""
    by_name = {s.name: s for s in src_snaps if not s.is_bookmark}
    txg = max((s.createtxg for s in tgt_snaps), default=0)
    names = [n for step in plan.steps for n in step.arrives]
    arrivals = [dataclasses.replace(by_name[n], dataset=plan.target, createtxg=txg + i + 1, userrefs=0)
                for i, n in enumerate(names) if n in by_name]
    return [*tgt_snaps, *arrivals]


# ------------------------------------------------------------------ protecting the chain
def plan_protection(done: Replicated, tag: str, src_tagged: t.Sequence[str], dst_tagged: t.Sequence[str], *,
                    source_bookmark: bool, retention: t.Mapping[str, int], selection: Selection) -> Protection:
    """Hold the new common snapshot on both sides, release the old ones, bookmark it, prune the target.

    *src_tagged*/*dst_tagged*: the snapshots of this dataset now holding *tag*.
    The last common snapshot is never pruned (its guid is protected).
    """
    common = done.common
    if common is None:
        return Protection()
    target_copy = next((s for s in done.target_snaps if s.guid == common.guid and not s.is_bookmark), None)
    hold_s, release_s = plan_holds(tag, common.full_name if not common.is_bookmark else None, src_tagged)
    hold_d, release_d = plan_holds(tag, target_copy.full_name if target_copy else None, dst_tagged)
    holds: tuple[tuple[Side, list[str]], ...] = (('source', hold_s), ('target', hold_d))
    releases: tuple[tuple[Side, list[str]], ...] = (('source', release_s), ('target', release_d))
    steps: list[RunStep] = [*(Hold(side, tag, tuple(names)) for side, names in holds if names),
                            *(Release(side, tag, tuple(names)) for side, names in releases if names)]
    bookmarked = None
    destroyed: list[str] = []
    if source_bookmark:
        create, destroyed = plan_bookmark(done.source, done.source_snaps, common, tag)
        if create:
            bookmarked = create[1]
            steps.append(Bookmark(*create))
        steps.extend(DestroyBookmark(name) for name in destroyed)
    pruned: list[Snapshot] = []
    if retention:
        pruned = plan_target_prune(done.target_snaps, retention, selection, {common.guid})
        if pruned:
            steps.append(Prune(done.target, tuple(s.name for s in pruned)))
    return Protection(held=(*hold_s, *hold_d), released=(*release_s, *release_d), bookmarked=bookmarked,
                      destroyed_bookmarks=tuple(destroyed), pruned=tuple(s.full_name for s in pruned), steps=tuple(steps))


def batched(protections: t.Iterable[Protection]) -> tuple[RunStep, ...]:
    """The protection steps of many datasets: one hold per side, then one release per side, then the rest in order.

    Every new base is held on both sides before any old one is let go.
    """
    holds: dict[Side, list[str]] = {'source': [], 'target': []}
    releases: dict[Side, list[str]] = {'source': [], 'target': []}
    rest: list[RunStep] = []
    tag = ''
    for protection in protections:
        for step in protection.steps:
            if isinstance(step, Hold):
                holds[step.side].extend(step.names)
                tag = step.tag
            elif isinstance(step, Release):
                releases[step.side].extend(step.names)
                tag = step.tag
            else:
                rest.append(step)
    sides: tuple[Side, Side] = ('source', 'target')
    return (*(Hold(side, tag, tuple(holds[side])) for side in sides if holds[side]),
            *(Release(side, tag, tuple(releases[side])) for side in sides if releases[side]),
            *rest)


def plan_run(plan: DatasetPlan, parents: t.Sequence[str] = (), protection: Protection = Protection()) -> DatasetRun:
    """The whole run of one dataset as planned from the listings at hand."""
    return DatasetRun(plan, stream_steps(plan, parents) + protection.steps, protection)
