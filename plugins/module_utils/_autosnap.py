# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Run an autosnap: lock the pools, list once, plan, then create and prune in batches.

Per run the cost is one dataset listing, one snapshot listing, one
``zfs snapshot`` per pool and name and one ``zfs destroy`` per dataset with
something to prune (more only past the kernel's argument limit); retries
happen only when a destroy batch is refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t

from ._autosnap_plan import AutosnapConfig, Plan, build_plan, diff_text, make_config
from ._lock import DEFAULT_LOCK_DIR, DEFAULT_LOCK_TIMEOUT, LockTimeout, locked
from ._types import Dataset, Snapshot, ValidationError, ZfsCommandError
from ._validate import reject_shell_metachars, validate_pool_name
from ._zfs import CommandResult, Runner, Zfs
from . import _zfs_parse as parse
from ._selection import needs_sources, property_columns

__all__ = ['AutosnapConfig', 'LockTimeout', 'ValidationError', 'ZfsCommandError', 'make_config',
           'run_autosnap', 'autosnap', 'execute_plan', 'destroy_with_retry', 'list_state', 'utcnow']


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class _Recorder:
    """Passes calls through to the real runner and keeps each argv for the result."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.calls: list[list[str]] = []

    def run(self, argv: t.Sequence[str], *, check: bool = True) -> CommandResult:
        self.calls.append([str(a) for a in argv])
        return self.runner.run(argv, check=check)


class SnapshotBatchReport(t.TypedDict):
    pool: str
    label: str
    name: str
    snapshots: list[str]
    calls: int  # 0 in check mode


class DestroyBatchReport(t.TypedDict):
    dataset: str
    snapshots: list[str]


@dataclasses.dataclass
class Outcome:
    created: list[str] = dataclasses.field(default_factory=list)
    destroyed: list[str] = dataclasses.field(default_factory=list)
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
    errors: list[dict[str, t.Any]] = dataclasses.field(default_factory=list)
    snapshot_batches: list[SnapshotBatchReport] = dataclasses.field(default_factory=list)
    destroy_batches: list[DestroyBatchReport] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)


_T = t.TypeVar('_T')


def _unique_by(items: t.Iterable[_T], key: t.Callable[[_T], str]) -> list[_T]:
    # overlapping roots (tank and tank/home with -r) list the same dataset twice
    seen: set[str] = set()
    out: list[_T] = []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out


def list_state(zfs: Zfs, config: AutosnapConfig, roots: t.Sequence[str]) -> tuple[list[Dataset], list[Snapshot]]:
    """The run's two listings; a missing root becomes a ValidationError."""
    try:
        datasets = zfs.list_datasets(roots, config.recursive, user_props=property_columns(config.labels),
                                     with_written=config.skip_unchanged)
    except ZfsCommandError as exc:
        missing = parse.missing_datasets(exc.stderr)
        if missing:
            raise ValidationError(f'dataset does not exist: {", ".join(missing)}') from exc
        if parse.error_kind(exc.stderr) == 'missing':
            raise ValidationError(f'a root does not exist: {exc.stderr.strip()}') from exc
        raise
    datasets = _with_sources(zfs, _unique_by(datasets, lambda d: d.name), config.labels)
    snapshots = zfs.list_snapshots(roots, config.recursive)
    return datasets, _unique_by(snapshots, lambda s: s.full_name)


def _with_sources(zfs: Zfs, datasets: list[Dataset], labels: t.Sequence[str]) -> list[Dataset]:
    # where a property is set matters only when the two disagree: one more `zfs get`, and only then
    names = needs_sources(datasets, labels)
    if not names:
        return datasets
    sources = zfs.property_sources(names, property_columns(labels))
    return [dataclasses.replace(ds, sources=sources[ds.name]) if ds.name in sources else ds for ds in datasets]


def destroy_with_retry(zfs: Zfs, dataset: str, names: t.Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Destroy *names* of *dataset* in one call; when refused, drop the refused names and retry.

    ``zfs destroy ds@a,b,c`` is all-or-nothing, so one snapshot that became held
    or cloned since the listing would block the rest. Names zfs blames are set
    aside; when it blames none, the group is halved until each failure is
    pinned on one name.
    """
    destroyed: list[str] = []
    skipped: list[dict[str, str]] = []
    pending = zfs.destroy_batches(dataset, names)
    while pending:
        group = pending.pop(0)
        res = zfs.destroy_snapshots(dataset, group)
        if res.rc == 0:
            destroyed.extend(f'{dataset}@{n}' for n in group)
            continue
        blamed = parse.refused_snapshots(res.stderr, dataset, group)
        if blamed:
            skipped.extend({'name': f'{dataset}@{n}', 'reason': f'destroy refused: {blamed[n]}'} for n in group if n in blamed)
            rest = [n for n in group if n not in blamed]
            if rest:
                pending.insert(0, rest)
        elif len(group) == 1:
            reason = res.stderr.strip() or f'zfs destroy exited with rc {res.rc}'
            skipped.append({'name': f'{dataset}@{group[0]}', 'reason': f'destroy refused: {reason}'})
        else:
            mid = len(group) // 2
            pending[:0] = [group[:mid], group[mid:]]
    return destroyed, skipped


def _create(zfs: Zfs, plan: Plan, out: Outcome) -> set[tuple[str, str]]:
    """Run the snapshot batches; returns (dataset, label) pairs whose snapshot was not made."""
    failed: set[tuple[str, str]] = set()
    multi = zfs.features.multi_snapshot
    for batch in plan.creates:
        full = batch.full_names
        # split here rather than inside Zfs.snapshot so a failure maps to exactly the names not made
        chunks = zfs.snapshot_batches(full) if multi else [full]
        if len(chunks) > 1:
            out.warnings.append(f'{batch.pool}: {len(full)} {batch.label} snapshots were split into {len(chunks)} '
                                'calls to stay under the argument limit, so they are not all of one transaction group')
        calls = 0
        for chunk in chunks:
            calls += 1 if multi else len(chunk)
            try:
                zfs.snapshot(chunk)
                out.created.extend(chunk)
                continue
            except ZfsCommandError as exc:
                out.errors.append(exc.as_dict())
                made: list[str] = []
                # without multi_snapshot Zfs.snapshot goes name by name and stops at the failing one
                if not multi and exc.cmd and exc.cmd[-1] in chunk:
                    made = chunk[:chunk.index(exc.cmd[-1])]
                out.created.extend(made)
                for name in chunk[len(made):]:
                    failed.add((name.split('@', 1)[0], batch.label))
                    out.skipped.append({'name': name, 'reason': f'snapshot failed: {exc.stderr.strip()}'})
        out.snapshot_batches.append({'pool': batch.pool, 'label': batch.label, 'name': batch.name,
                                     'snapshots': full, 'calls': calls})
    return failed


def _prune(zfs: Zfs, plan: Plan, out: Outcome, failed: set[tuple[str, str]]) -> None:
    for batch in plan.destroys:
        names = []
        for name, label in zip(batch.names, batch.labels):
            if (batch.dataset, label) in failed:
                # the plan counted the new snapshot toward keep; without it we would keep one too few
                out.skipped.append({'name': f'{batch.dataset}@{name}',
                                    'reason': f'not pruned: the new {label} snapshot of {batch.dataset} was not created'})
            else:
                names.append(name)
        if not names:
            continue
        for chunk in zfs.destroy_batches(batch.dataset, names):
            try:
                done, refused = destroy_with_retry(zfs, batch.dataset, chunk)
            except ZfsCommandError as exc:
                # a destroy that could not even run (transport, argv) costs this chunk, not the run
                out.errors.append(exc.as_dict())
                out.skipped.extend({'name': f'{batch.dataset}@{n}', 'reason': f'destroy failed: {exc.stderr.strip()}'}
                                   for n in chunk)
                continue
            out.destroyed.extend(done)
            out.skipped.extend(refused)
        out.destroy_batches.append({'dataset': batch.dataset, 'snapshots': [f'{batch.dataset}@{n}' for n in names]})


def execute_plan(plan: Plan, zfs: Zfs) -> Outcome:
    """Create first, then prune, so new snapshots exist before older ones go."""
    out = Outcome()
    failed = _create(zfs, plan, out)
    _prune(zfs, plan, out, failed)
    return out


def _planned_outcome(plan: Plan) -> Outcome:
    out = Outcome(created=plan.created, destroyed=plan.destroyed)
    out.snapshot_batches = [{'pool': b.pool, 'label': b.label, 'name': b.name, 'snapshots': b.full_names, 'calls': 0}
                            for b in plan.creates]
    out.destroy_batches = [{'dataset': b.dataset, 'snapshots': b.full_names} for b in plan.destroys]
    return out


def _label_counts(plan: Plan, out: Outcome) -> dict[str, dict[str, int]]:
    labels = {label: dict(counts, created=0, destroyed=0) for label, counts in plan.labels.items()}
    created = set(out.created)
    for batch in plan.creates:
        labels[batch.label]['created'] += sum(1 for n in batch.full_names if n in created)
    destroyed = set(out.destroyed)
    for doomed in plan.destroys:
        for name, label in zip(doomed.names, doomed.labels):
            if f'{doomed.dataset}@{name}' in destroyed:
                labels[label]['destroyed'] += 1
    return labels


def _refusal_warning(out: Outcome) -> list[str]:
    # refusals are not failures (a hold may be replication at work), but must not go unnoticed
    refused = [s['name'] for s in out.skipped if s['reason'].startswith('destroy refused')]
    if not refused:
        return []
    return [f'{len(refused)} snapshot(s) could not be destroyed and were left in place, e.g. {refused[0]}; see skipped']


def _empty_result(config: AutosnapConfig) -> dict[str, t.Any]:
    return {'changed': False, 'created': [], 'destroyed': [], 'skipped': [], 'excluded': [], 'datasets': [],
            'labels': {label: {'keep': keep, 'datasets': 0, 'created': 0, 'destroyed': 0}
                       for label, keep in config.policy.items()},
            'snapshot_batches': [], 'destroy_batches': [], 'warnings': [], 'commands': []}


def run_autosnap(config: AutosnapConfig, runner: Runner, *, check_mode: bool = False, diff: bool = False,
                 now: dt.datetime | None = None, zfs_path: str = 'zfs', lock_dir: str = DEFAULT_LOCK_DIR,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> dict[str, t.Any]:
    """Take due snapshots and prune old ones under *config*; returns the result dict.

    Raises ValidationError (bad input, missing root), LockTimeout, or
    ZfsCommandError when a listing fails. Failures while changing things do
    not raise: the result then has ``failed: True``, ``msg`` and ``errors``.
    Check mode takes no lock and runs only the listings.
    """
    reject_shell_metachars(zfs_path, 'zfs_path')
    recorder = _Recorder(runner)
    zfs = Zfs(recorder, zfs_path)
    roots = list(config.roots)
    if not roots:
        roots = [validate_pool_name(p) for p in zfs.pools()]
        if not roots:
            result = _empty_result(config)
            result['warnings'].append('no imported pools')
            result['commands'] = recorder.calls
            return result
    pools = sorted({root.split('/', 1)[0] for root in roots})

    lock = locked([], lock_dir, lock_timeout) if check_mode else locked(pools, lock_dir, lock_timeout)
    with lock:
        # read the clock after waiting for the lock: the wait may cross a slot boundary
        when = now or utcnow()
        datasets, snapshots = list_state(zfs, config, roots)
        plan = build_plan(config, datasets, snapshots, when)
        out = _planned_outcome(plan) if check_mode else execute_plan(plan, zfs)

    result = _empty_result(config)
    result.update({
        'changed': bool(out.created or out.destroyed),
        'created': out.created,
        'destroyed': out.destroyed,
        'skipped': plan.skipped + out.skipped,
        'excluded': plan.excluded,
        'datasets': plan.datasets,
        'labels': _label_counts(plan, out),
        'snapshot_batches': out.snapshot_batches,
        'destroy_batches': out.destroy_batches,
        'warnings': plan.warnings + zfs.warnings + out.warnings + _refusal_warning(out),
        'commands': recorder.calls,
    })
    if diff:
        gone = set(out.destroyed)
        after = [n for n in plan.before if n not in gone] + out.created
        result['diff'] = {'before': diff_text(plan.before), 'after': diff_text(after)}
    if out.errors:
        result['failed'] = True
        result['errors'] = out.errors
        result['msg'] = (f'{len(out.errors)} zfs command(s) failed; the rest of the run went ahead: '
                         + '; '.join(f'{" ".join(e["cmd"])}: {e["stderr"].strip()}' for e in out.errors))
    return result


def autosnap(runner: Runner, *, check_mode: bool = False, diff: bool = False, now: dt.datetime | None = None,
             zfs_path: str = 'zfs', lock_dir: str = DEFAULT_LOCK_DIR, lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
             **options: t.Any) -> dict[str, t.Any]:
    """Convenience: validate *options* (the arguments of make_config) and run."""
    return run_autosnap(make_config(**options), runner, check_mode=check_mode, diff=diff, now=now,
                        zfs_path=zfs_path, lock_dir=lock_dir, lock_timeout=lock_timeout)
