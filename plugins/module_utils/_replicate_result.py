# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What a replication run did (or, in check mode, would do), and its rendering to the module's result dicts.

The rendered shape is the module's documented RETURN: keep keys and values as they are.
"""

from __future__ import annotations

import dataclasses
import typing as t

from ._replicate_plan import Action, Conflict, DatasetPlan, Step
from ._replicate_steps import AbortResume, DatasetRun, EnsureParent, Protection, RunStep, Stream
from ._types import ZfsCommandError


class ReplicationError(Exception):
    """A run failed; carries the per-dataset results so far and the failed command, if any."""

    def __init__(self, msg: str, results: list[dict[str, t.Any]] | None = None, error: ZfsCommandError | None = None,
                 conflicts: t.Sequence[Conflict] = ()) -> None:
        super().__init__(msg)
        self.msg = msg
        self.results = results or []
        self.error = error
        self.conflicts = tuple(conflicts)

    def as_dict(self) -> dict[str, t.Any]:
        out: dict[str, t.Any] = {'msg': self.msg, 'datasets': self.results}
        if self.error is not None:
            out.update(self.error.as_dict())
        return out


@dataclasses.dataclass(frozen=True)
class StepOutcome:
    """What one executed step did."""

    step: RunStep
    bytes: int = 0
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class StreamRan:
    step: Step
    bytes: int
    seconds: float

    def render(self) -> dict[str, t.Any]:
        return {**self.step.as_dict(), 'bytes': self.bytes, 'seconds': self.seconds}


@dataclasses.dataclass(frozen=True)
class StreamEstimate:
    """A planned stream and what ``zfs send -nvP`` says it would carry (None: it could not tell)."""

    step: Step
    estimated_bytes: int | None

    def render(self) -> dict[str, t.Any]:
        return {**self.step.as_dict(), 'estimated_bytes': self.estimated_bytes}


@dataclasses.dataclass
class DatasetResult:
    """One dataset's result; filled in as its steps run, rendered at the end (also of a failed run)."""

    plan: DatasetPlan  # the latest plan: source, target, from, to, rollback, notes
    action: Action
    streams: list[StreamRan | StreamEstimate] = dataclasses.field(default_factory=list)
    extra_notes: list[str] = dataclasses.field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    rate: int | None = None
    estimated_bytes: int | None = None
    created_parents: list[str] = dataclasses.field(default_factory=list)
    aborted_resume: bool = False
    protection: Protection = Protection()
    changed: bool = False

    @classmethod
    def start(cls, plan: DatasetPlan) -> DatasetResult:
        return cls(plan, plan.action)

    @classmethod
    def from_run(cls, run: DatasetRun, estimates: t.Sequence[int | None], extra_notes: t.Sequence[str] = (), *,
                 final: bool = True) -> DatasetResult:
        """The result check mode reports: *run* rendered, with ``zfs send -nvP``'s size of each stream."""
        plan = run.plan
        res = cls(plan, plan.action, extra_notes=list(extra_notes))
        sizes = iter(estimates)
        total: int | None = 0
        for step in run.steps:
            if isinstance(step, AbortResume):
                res.aborted_resume = True
            elif isinstance(step, EnsureParent):
                res.created_parents.extend(step.create)
            elif isinstance(step, Stream):
                size = next(sizes, None)
                res.streams.append(StreamEstimate(step.step, size))
                total = None if size is None or total is None else total + size
        res.estimated_bytes = total
        if final:
            res.protect(run.protection)
        return res

    def record(self, outcome: StepOutcome) -> None:
        step = outcome.step
        if isinstance(step, AbortResume):
            self.aborted_resume = True
        elif isinstance(step, EnsureParent):
            self.created_parents.extend(step.create)
        elif isinstance(step, Stream):
            self.bytes += outcome.bytes
            self.seconds = round(self.seconds + outcome.seconds, 3)
            self.streams.append(StreamRan(step.step, outcome.bytes, round(outcome.seconds, 3)))

    def finish(self, plan: DatasetPlan, action: Action) -> None:
        """The streams are through: report the last plan under the first action that did something."""
        self.plan = plan
        self.action = action
        if self.seconds:
            self.rate = int(self.bytes / self.seconds)

    def protect(self, protection: Protection) -> None:
        """The chain is protected (or, in check mode, planned): the result is final."""
        self.protection = protection
        self.changed = bool(self.streams and self.action != 'none' or self.aborted_resume or self.created_parents
                            or protection.held or protection.released or protection.bookmarked
                            or protection.destroyed_bookmarks or protection.pruned)

    def render(self) -> dict[str, t.Any]:
        out = self.plan.as_dict()
        del out['abort_resume']
        prot = self.protection
        out.update({
            'action': self.action, 'steps': [s.render() for s in self.streams], 'notes': out['notes'] + self.extra_notes,
            'bytes': self.bytes, 'seconds': self.seconds, 'rate': self.rate, 'estimated_bytes': self.estimated_bytes,
            'created_parents': list(self.created_parents), 'aborted_resume': self.aborted_resume,
            'held': list(prot.held), 'released': list(prot.released), 'bookmarked': prot.bookmarked,
            'destroyed_bookmarks': list(prot.destroyed_bookmarks), 'pruned': list(prot.pruned), 'changed': self.changed,
        })
        return out


@dataclasses.dataclass
class RunResult:
    mode: str
    transport: str
    source_host: str | None
    target_host: str | None
    hold_tag: str
    datasets: list[DatasetResult] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def render(self) -> dict[str, t.Any]:
        return {
            'changed': any(d.changed for d in self.datasets),
            'mode': self.mode,
            'transport': self.transport,
            'source_host': self.source_host,
            'target_host': self.target_host,
            'hold_tag': self.hold_tag,
            'datasets': [d.render() for d in self.datasets],
            'warnings': list(self.warnings),
        }


def render_all(results: t.Iterable[DatasetResult]) -> list[dict[str, t.Any]]:
    return [r.render() for r in results]
