# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Replication: list both sides once, plan every dataset, then stream, protect and prune.

Everything is planned before anything changes, so a diverged dataset fails the
run with nothing touched. Datasets then go parents first, one stream per step.
After the streams (also when one of them failed, and at least once a minute
during a long run) each new common snapshot is held on both sides before the
previous one is released, so no pruner can break the chain. The holds of those
datasets go in one ``zfs hold`` per side: on a tree of hundreds of datasets,
processes per dataset are what a run costs.

This module lists, locks and glues: the decisions are in ``_replicate_plan``
and ``_replicate_steps``, the actions in ``_replicate_exec``, the result in
``_replicate_result``. Check mode renders the plan and runs nothing.
"""

from __future__ import annotations

import dataclasses
import re
import time
import typing as t

from ._lock import locked
from ._replicate_exec import Executor, run_steps
from ._replicate_options import ReplicateParams
from ._replicate_plan import (
    DatasetPlan, MissingPool, Selection, TooManyRounds, hold_tag, map_targets, outer_roots, plan_dataset,
    select_datasets, target_for,
)
from ._replicate_result import DatasetResult, ReplicationError, RunResult, StepOutcome, render_all
from ._replicate_steps import (
    Protection, Replicated, batched, missing_parents, plan_protection, plan_run, predicted_target,
    replans_after, stream_steps,
)
from ._transport import Transport, which_argv
from ._transport_factory import make_transport
from ._types import Dataset, Interrupted, Snapshot, ValidationError, ZfsCommandError
from ._zfs import Zfs
from ._zfs_parse import is_stale_token_error, parse_send_size

__all__ = ['MAX_REPLANS', 'PROTECT_INTERVAL', 'ReplicateParams', 'ReplicationError', 'replicate', 'run_replicate']

# rounds of re-planning one dataset after a resume or an aborted receive
MAX_REPLANS = 3
# seconds a replicated dataset may wait for the batched hold of its new base
PROTECT_INTERVAL = 60.0
_LOCK_UNSAFE_RE = re.compile(r'[^A-Za-z0-9_.:+-]')
_RESUME_NOTE = 'more steps may follow once the interrupted stream is finished'


def _lock_key(kind: str, host: str | None, name: str) -> str:
    key = f'replicate-{kind}.{host or "local"}.{name.replace("/", "+")}'
    return _LOCK_UNSAFE_RE.sub('_', key)[:200]


def _group(snaps: t.Iterable[Snapshot]) -> dict[str, list[Snapshot]]:
    out: dict[str, list[Snapshot]] = {}
    for snap in snaps:
        out.setdefault(snap.dataset, []).append(snap)
    return out


def _changed(res: t.Mapping[str, t.Any]) -> bool:
    """Whether a rendered dataset result (also a partial one of a failed run) changed anything."""
    if res.get('changed'):
        return True
    if 'bytes' not in res:
        # a bare plan: nothing ran
        return False
    return bool(res.get('changed') or res.get('steps') and res.get('action') != 'none' or any(
        res.get(k) for k in ('aborted_resume', 'created_parents', 'held', 'released', 'bookmarked', 'destroyed_bookmarks', 'pruned')))


def _missing(exc: ZfsCommandError) -> bool:
    return 'does not exist' in exc.stderr


@dataclasses.dataclass
class _Done:
    """A dataset whose streams are through (or, in check mode, planned); its chain is protected with the others'."""

    plan: DatasetPlan
    src_snaps: list[Snapshot]
    # None: the target changed, list it again
    tgt_snaps: list[Snapshot] | None


class _Sides:
    """The two ends of one run and the read-only questions the planner needs answered."""

    def __init__(self, p: ReplicateParams, src_t: Transport, dst_t: Transport) -> None:
        self.p = p
        self.src_t = src_t
        self.dst_t = dst_t
        self.src = Zfs(src_t.runner())
        self.dst = Zfs(dst_t.runner())
        self.selection = Selection(p.prefix, p.separator, tuple(p.labels), p.include_foreign)
        self.roots = outer_roots(p.datasets, p.recursive)
        self.tag = hold_tag(p.target_id or p.default_target_id())
        # the timeout counts from the start of the run, listings included
        self.deadline = time.monotonic() + p.timeout if p.timeout else None
        # target datasets that exist, or will once the steps planned so far ran
        self.known_targets: set[str] = set()

    def check_features(self) -> None:
        for side, zfs, transport in (('source', self.src, self.src_t), ('target', self.dst, self.dst_t)):
            features = zfs.features
            if features.legacy or not features.resume:
                raise ValidationError(f'zfs on the {side} ({transport.describe()}, version {features.version or "unknown"}) '
                                      'lacks resumable send/receive; replication needs OpenZFS 0.8 or later')

    def check_tools(self) -> list[str]:
        """Refuse before anything changes when a program of the pipeline is missing; returns warnings."""
        p = self.p
        comp = p.compression if p.compression != 'none' and p.mode != 'local' else None
        need: dict[str, list[str]] = {'source': [], 'target': []}
        if comp:
            need['source'].append(comp)
            need['target'].append(comp)
        if p.source_mbuffer:
            need['source'].append('mbuffer')
        if p.mbuffer:
            need['target'].append('mbuffer')
        missing = []
        for side, transport in (('source', self.src_t), ('target', self.dst_t)):
            for tool in dict.fromkeys(need[side]):
                if transport.runner().run(which_argv(tool), check=False).rc != 0:
                    missing.append(f'{tool} on the {side} ({transport.describe()})')
        if missing:
            raise ValidationError(f'missing program(s): {", ".join(missing)}. Install them, or turn them off '
                                  '(mbuffer: false, source_mbuffer: false, compression: none)')
        if p.compression != 'none' and p.mode == 'local':
            return ['compression only applies over the network; ignored for a local replication']
        return []

    def target_datasets(self, names: t.Sequence[str], recursive: bool) -> list[Dataset]:
        def listing(roots: t.Sequence[str]) -> list[Dataset]:
            return self.dst.list_datasets(roots, recursive=recursive, with_written=True, with_resume_token=True)
        try:
            return listing(names)
        except ZfsCommandError as exc:
            if not _missing(exc):
                raise
            if len(names) == 1:
                return []  # the one name that was asked for is missing: asking again would say the same
        found: list[Dataset] = []
        for name in names:
            try:
                found.extend(listing([name]))
            except ZfsCommandError as exc:
                if not _missing(exc):
                    raise
        return found

    def remember(self, names: t.Iterable[str]) -> None:
        for name in names:
            parts = name.split('/')
            self.known_targets.update('/'.join(parts[:i]) for i in range(1, len(parts) + 1))

    def plan(self, ds: Dataset, target: str, src_snaps: t.Sequence[Snapshot], tgt: Dataset | None,
             tgt_snaps: t.Sequence[Snapshot], *, stale: bool = False) -> DatasetPlan:
        return plan_dataset(ds, target, src_snaps, tgt, tgt_snaps, selection=self.selection,
                            force_rollback=self.p.force_rollback, stale_token=stale)

    def relist(self, ds: Dataset, target: str) -> tuple[list[Snapshot], Dataset | None, list[Snapshot]]:
        src_snaps = self.src.list_snapshots([ds.name], recursive=False, bookmarks=True)
        found = self.target_datasets([target], recursive=False)
        tgt = found[0] if found else None
        tgt_snaps = self.dst.list_snapshots([target], recursive=False) if tgt else []
        return src_snaps, tgt, tgt_snaps

    def token_is_stale(self, plan: DatasetPlan) -> bool:
        res = self.src.send_estimate(plan.steps[0].send_args(), False)
        if res.rc == 0:
            return False
        if is_stale_token_error(res.stderr):
            return True
        raise ReplicationError(f'{plan.source}: cannot check the resume token of {plan.target}',
                               error=ZfsCommandError(res.argv, res.rc, res.stdout, res.stderr, stage='send'))

    def parents(self, plan: DatasetPlan) -> tuple[str, ...]:
        """The target's ancestors to create; from here on they and the target count as present."""
        parent = plan.target.rsplit('/', 1)[0]
        missing = missing_parents(plan.target, self.known_targets, self.dst.exists)
        if missing is None:
            pool = plan.target.split('/', 1)[0]
            conflict = MissingPool(f'target pool {pool} does not exist')
            raise ReplicationError(str(conflict), conflicts=[conflict])
        self.remember([parent])
        return missing

    def estimate(self, plan: DatasetPlan) -> list[int | None]:
        """What ``zfs send -nvP`` says each stream of *plan* would carry; None where it cannot tell."""
        out: list[int | None] = []
        for step in plan.steps:
            res = self.src.send_estimate(step.send_args(), plan.raw)
            out.append(parse_send_size(res.stdout + '\n' + res.stderr) if res.rc == 0 else None)
        return out

    def tagged(self, zfs: Zfs, snaps: t.Iterable[Snapshot]) -> dict[str, list[str]]:
        """Snapshots carrying this target's hold tag, by dataset: one ``zfs holds`` for the whole batch."""
        candidates = [s.full_name for s in snaps if not s.is_bookmark and s.held]
        tagged: dict[str, list[str]] = {}
        if candidates:
            for name, tags in zfs.holds(candidates).items():
                if self.tag in tags:
                    tagged.setdefault(name.split('@', 1)[0], []).append(name)
        return tagged

    def protections(self, done: t.Sequence[_Done]) -> list[Protection]:
        """Plan the protection of *done* from fresh listings of what changed (the dynamic rule)."""
        relist = [d.plan.target for d in done if d.tgt_snaps is None]
        if relist:
            arrived = _group(self.dst.list_snapshots(relist, recursive=False))
            for d in done:
                if d.tgt_snaps is None:
                    d.tgt_snaps = arrived.get(d.plan.target, [])
        items = [d for d in done if d.plan.common_after is not None]
        src_tagged = self.tagged(self.src, (s for d in items for s in d.src_snaps if s.dataset == d.plan.source))
        dst_tagged = self.tagged(self.dst, (s for d in items for s in d.tgt_snaps or () if s.dataset == d.plan.target))
        return [plan_protection(Replicated(d.plan.source, d.plan.target, d.plan.common_after, tuple(d.src_snaps),
                                           tuple(d.tgt_snaps or ())),
                                self.tag, src_tagged.get(d.plan.source, []), dst_tagged.get(d.plan.target, []),
                                source_bookmark=self.p.source_bookmark, retention=self.p.target_retention or {},
                                selection=self.selection)
                for d in done]


# ------------------------------------------------------------------ a run
def _run(s: _Sides, check_mode: bool) -> dict[str, t.Any]:
    p = s.p
    s.check_features()
    listed = s.src.list_datasets(s.roots, recursive=p.recursive, user_props=('encryption',))
    pairs = select_datasets(listed, s.roots, p.recursive, p.exclude)
    targets = map_targets(pairs, p.target_root, p.target_layout)
    if check_mode:
        return _run_locked(s, pairs, targets, check_mode)
    keys = [_lock_key('source', p.source_host, ds.name) for ds, _root in pairs]
    keys += [_lock_key('target', p.target_host, name) for name in targets]
    with locked(keys, lock_dir=p.lock_dir, timeout=p.lock_timeout):
        return _run_locked(s, pairs, targets, check_mode)


_Item = t.Tuple[Dataset, DatasetPlan, t.List[Snapshot], t.List[Snapshot]]


def _run_locked(s: _Sides, pairs: list[tuple[Dataset, str]], targets: list[str], check_mode: bool) -> dict[str, t.Any]:
    p = s.p
    src_by_ds = _group(s.src.list_snapshots(s.roots, recursive=p.recursive, bookmarks=True))
    # the targets of the roots, even of excluded roots, cover every target listed below them
    roots = [target_for(root, root, p.target_root, p.target_layout) for root in s.roots]
    tgt_datasets = {d.name: d for d in s.target_datasets(roots, p.recursive)}
    s.remember(tgt_datasets)
    present = [r for r in roots if r in tgt_datasets]
    tgt_by_ds = _group(s.dst.list_snapshots(present, recursive=p.recursive)) if present else {}

    items: list[_Item] = []
    for (ds, _root), target in zip(pairs, targets):
        src_snaps, tgt_snaps = src_by_ds.get(ds.name, []), tgt_by_ds.get(target, [])
        plan = s.plan(ds, target, src_snaps, tgt_datasets.get(target), tgt_snaps)
        if plan.action == 'resume' and s.token_is_stale(plan):
            plan = s.plan(ds, target, src_snaps, tgt_datasets.get(target), tgt_snaps, stale=True)
        items.append((ds, plan, src_snaps, tgt_snaps))
    conflicts = [plan.conflict for _ds, plan, _s, _t in items if plan.conflict]
    if conflicts:
        raise ReplicationError('\n'.join(str(c) for c in conflicts), [plan.as_dict() for _ds, plan, _s, _t in items],
                               conflicts=conflicts)
    run = RunResult(p.mode, (s.dst_t if p.mode == 'push' else s.src_t).kind, p.source_host, p.target_host, s.tag)
    if any(plan.steps for _ds, plan, _s, _t in items):
        run.warnings.extend(s.check_tools())
    if check_mode:
        _check(s, items, run)
    else:
        _execute(s, items, run)
    run.warnings.extend(f'{plan.source}: {note}' for _ds, plan, _s, _t in items for note in plan.notes)
    return run.render()


# ------------------------------------------------------------------ check mode: the plan, rendered
def _check(s: _Sides, items: t.Sequence[_Item], run: RunResult) -> None:
    """Plan every dataset's whole run from the listings and what the streams would leave; run nothing."""
    planned: list[tuple[tuple[str, ...], list[int | None], _Done]] = []
    for _ds, plan, src_snaps, tgt_snaps in items:
        estimates = s.estimate(plan)
        try:
            parents = s.parents(plan) if plan.steps else ()
        except ReplicationError as exc:
            protections = s.protections([d for _p, _e, d in planned])
            exc.results = render_all(_planned(p, e, d.plan, protection) for (p, e, d), protection in zip(planned, protections))
            exc.results.append(_planned((), estimates, plan).render())
            raise
        if plan.steps:
            s.known_targets.add(plan.target)
        done = _Done(plan, src_snaps, predicted_target(plan, src_snaps, tgt_snaps))
        planned.append((parents, estimates, done))
    protections = s.protections([d for _p, _e, d in planned])
    for (parents, estimates, done), protection in zip(planned, protections):
        run.datasets.append(_planned(parents, estimates, done.plan, protection))


def _planned(parents: tuple[str, ...], estimates: list[int | None], plan: DatasetPlan,
             protection: Protection | None = None) -> DatasetResult:
    return DatasetResult.from_run(plan_run(plan, parents, protection or Protection()), estimates,
                                  [_RESUME_NOTE] if plan.action == 'resume' else [], final=protection is not None)


# ------------------------------------------------------------------ a real run
def _execute(s: _Sides, items: t.Sequence[_Item], run: RunResult) -> None:
    ex = Executor(s.p, s.src_t, s.dst_t, src=s.src, dst=s.dst, deadline=s.deadline)
    pending: list[tuple[DatasetResult, _Done]] = []
    since = time.monotonic()
    current: DatasetResult | None = None
    try:
        for item in items:
            current = DatasetResult.start(item[1])
            try:
                done = _dataset(s, ex, item, current)
            except Interrupted as exc:
                # the interrupted result names the dataset the signal stopped
                if exc.dataset is None:
                    exc.dataset = item[0].name
                raise
            run.datasets.append(current)
            pending.append((current, done))
            current = None
            # batched, but a new base waits at most PROTECT_INTERVAL for its hold, so a pruner
            # running alongside a long run cannot take it before it is protected
            if time.monotonic() - since >= PROTECT_INTERVAL:
                _protect(s, ex, pending, run)
                pending, since = [], time.monotonic()
    except (ReplicationError, ZfsCommandError) as exc:
        # what did arrive is protected all the same
        so_far = run.datasets + ([current] if current else [])
        try:
            _protect(s, ex, pending, run)
        except (ReplicationError, ZfsCommandError) as later:
            note = f'protecting the datasets replicated before that failed as well: {later}'
            if isinstance(exc, ReplicationError):
                exc.msg += f'; {note}'
                exc.args = (exc.msg,)
                exc.results = render_all(so_far)
                raise
            raise ReplicationError(f'{exc}; {note}', render_all(run.datasets), exc) from exc
        if isinstance(exc, ReplicationError):
            exc.results = render_all(so_far)
        raise
    _protect(s, ex, pending, run)


def _dataset(s: _Sides, ex: Executor, item: _Item, result: DatasetResult) -> _Done:
    """Run one dataset's streams; after a resume or an abort, re-plan it from fresh listings."""
    ds, plan, src_snaps, tgt_snaps = item
    first_action = plan.action
    for _round in range(MAX_REPLANS):
        # what follows an abort is re-planned anyway: no look-ups for its parents
        parents = s.parents(plan) if plan.steps and not plan.abort_resume else ()
        replan = False
        for step in stream_steps(plan, parents):
            result.record(ex.run(step))
            if replans_after(step):
                replan = True
                break
        if plan.steps and not plan.abort_resume:
            s.known_targets.add(plan.target)
        if not replan:
            break
        src_snaps, tgt, tgt_snaps = s.relist(ds, plan.target)
        plan = s.plan(ds, plan.target, src_snaps, tgt, tgt_snaps)
        if plan.conflict:
            raise ReplicationError(str(plan.conflict), conflicts=[plan.conflict])
        first_action = first_action if first_action != 'none' else plan.action
    else:
        conflict = TooManyRounds(f'{plan.source}: the target still needs work after {MAX_REPLANS} rounds')
        raise ReplicationError(str(conflict), conflicts=[conflict])
    result.finish(plan, first_action)
    return _Done(plan, src_snaps, None if result.streams or result.aborted_resume else tgt_snaps)


def _protect(s: _Sides, ex: Executor, pending: t.Sequence[tuple[DatasetResult, _Done]], run: RunResult) -> None:
    protections = s.protections([done for _result, done in pending])

    def record(outcome: StepOutcome) -> None:
        run.warnings.extend(outcome.warnings)

    # every new base is protected on both sides before any old one is let go
    run_steps(ex, batched(protections), record)
    for (result, _done), protection in zip(pending, protections):
        result.protect(protection)


def replicate(params: ReplicateParams | t.Mapping[str, t.Any], *, check_mode: bool = False,
              transport_factory: t.Callable[..., Transport] | None = None) -> dict[str, t.Any]:
    """Replicate per *params*; returns the result dict, raises ValidationError/ReplicationError/ZfsCommandError."""
    p = params if isinstance(params, ReplicateParams) else ReplicateParams.from_mapping(params)
    p.validated()
    factory = transport_factory or make_transport
    src_t = factory(p.source_host, p.transport, p.ssh_options())
    dst_t = factory(p.target_host, p.transport, p.ssh_options())
    with src_t, dst_t:
        return _run(_Sides(p, src_t, dst_t), check_mode)


def run_replicate(params: ReplicateParams | t.Mapping[str, t.Any], *, check_mode: bool = False) -> dict[str, t.Any]:
    """Replicate per *params*; a run that fails is a result too: ``failed: true`` with ``msg`` and details.

    LockTimeout is not caught: the command line reports it with its own exit status.
    """
    try:
        return replicate(params, check_mode=check_mode)
    except ReplicationError as exc:
        return {'failed': True, 'changed': any(_changed(r) for r in exc.results), **exc.as_dict()}
    except ZfsCommandError as exc:
        return {'failed': True, 'changed': False, 'msg': str(exc), **exc.as_dict()}
    except (ValidationError, OSError) as exc:
        return {'failed': True, 'changed': False, 'msg': str(exc)}
