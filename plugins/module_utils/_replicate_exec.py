# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Carries out planned replication steps, one at a time, through Zfs, the transports and the pipeline.

It decides nothing: what to run comes from the planner (``_replicate_steps``),
what it did goes back as a :class:`~._replicate_result.StepOutcome`.
"""

from __future__ import annotations

import time
import typing as t

from ._pipeline import mbuffer_argv, receiver_stages, run_pipeline, sender_stages
from ._replicate_options import ReplicateParams
from ._replicate_result import ReplicationError, StepOutcome
from ._replicate_steps import (
    AbortResume, Bookmark, DestroyBookmark, EnsureParent, Hold, Prune, Release, RunStep, Side, Stream,
)
from ._transport import Transport
from ._types import ZfsCommandError
from ._zfs import PARENT_PROPERTIES, Zfs, receive_argv, send_argv


class Executor:
    """Runs steps against the two sides of one replication."""

    def __init__(self, p: ReplicateParams, src_t: Transport, dst_t: Transport, *, src: Zfs, dst: Zfs,
                 deadline: float | None = None) -> None:
        self.p = p
        self.src_t = src_t
        self.dst_t = dst_t
        self.zfs: dict[Side, Zfs] = {'source': src, 'target': dst}
        self.deadline = deadline

    def run(self, step: RunStep) -> StepOutcome:
        if isinstance(step, Stream):
            return self.stream(step)
        if isinstance(step, EnsureParent):
            return self.ensure_parent(step)
        if isinstance(step, AbortResume):
            self.zfs['target'].receive_abort(step.target)
        elif isinstance(step, Hold):
            self.zfs[step.side].hold(step.tag, step.names)
        elif isinstance(step, Release):
            self.zfs[step.side].release(step.tag, step.names)
        elif isinstance(step, Bookmark):
            self.zfs['source'].bookmark(step.snapshot, step.bookmark)
        elif isinstance(step, DestroyBookmark):
            self.zfs['source'].destroy_bookmark(step.name)
        elif isinstance(step, Prune):
            return self.prune(step)
        return StepOutcome(step)

    def ensure_parent(self, step: EnsureParent) -> StepOutcome:
        for name in step.create:
            # one at a time: `create -p` ignores -o for the parents it makes, and an
            # unprivileged user on Linux cannot mount them
            self.zfs['target'].create_filesystem(name, PARENT_PROPERTIES)
        return StepOutcome(step)

    def prune(self, step: Prune) -> StepOutcome:
        dst = self.zfs['target']
        warnings = []
        for group in dst.destroy_batches(step.target, step.names):
            out = dst.destroy_snapshots(step.target, group)
            if out.rc != 0:
                # a replica that outlives its retention is no threat to the chain: warn, go on
                warnings.append(f'{step.target}: pruning failed: {out.stderr.strip()}')
        return StepOutcome(step, warnings=tuple(warnings))

    def stream(self, stream: Stream) -> StepOutcome:
        p = self.p
        step = stream.step
        remote = p.mode != 'local'
        comp = p.compression if remote and p.compression != 'none' else None
        src_mbuffer = mbuffer_argv(p.mbuffer_size, p.stall_timeout, p.rate_limit) if p.source_mbuffer else None
        dst_mbuffer = mbuffer_argv(p.mbuffer_size, p.stall_timeout, None if p.source_mbuffer else p.rate_limit) if p.mbuffer else None
        send = send_argv(step.send_args(), stream.raw)
        recv = receive_argv(stream.target, filesystem=stream.filesystem, rollback=step.rollback,
                            properties=p.receive_properties, exclude=p.receive_exclude_properties)
        producer = self.src_t.segment(sender_stages(send, mbuffer=src_mbuffer, compression=comp))
        consumer = self.dst_t.segment(receiver_stages(recv, mbuffer=dst_mbuffer, compression=comp))
        timeout = None
        if self.deadline is not None:
            timeout = self.deadline - time.monotonic()
            if timeout <= 0:
                raise ReplicationError(f'{stream.source}: the run timed out ({p.timeout} s) before {step.to or "resuming"}')
        try:
            out = run_pipeline(producer, consumer, timeout=timeout)
        except ZfsCommandError as exc:
            what = f'{step.base} -> {step.to}' if step.base else (step.to or 'resume')
            raise ReplicationError(f'{stream.source} -> {stream.target} ({step.kind} {what}): {exc.stage} failed: '
                                   f'{exc.stderr.strip() or "rc " + str(exc.rc)}', error=exc) from exc
        return StepOutcome(stream, bytes=out.bytes, seconds=out.seconds)


def run_steps(executor: Executor, steps: t.Iterable[RunStep], record: t.Callable[[StepOutcome], None]) -> None:
    """Run *steps* in order, each outcome recorded before the next step starts."""
    for step in steps:
        record(executor.run(step))
