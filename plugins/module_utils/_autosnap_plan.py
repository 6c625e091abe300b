# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The autosnap plan: what to create and destroy, decided from one listing of each kind.

Check mode reports this plan and the executor runs this same plan, so what
check mode shows is what a real run does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t

from . import _naming as naming
from ._retention import PLANNED_TXG, clock_jump, managed, newest_first, prune_label
from ._selection import select
from ._types import Dataset, Snapshot, ValidationError
from ._validate import unique, validate_dataset_name, validate_int


@dataclasses.dataclass(frozen=True)
class AutosnapConfig:
    policy: t.Mapping[str, int]
    roots: tuple[str, ...] = ()  # empty: every imported pool; make_config gives that only for all_pools=True
    recursive: bool = True
    exclude: tuple[str, ...] = ()
    prefix: str = naming.DEFAULT_PREFIX
    separator: str = naming.DEFAULT_SEPARATOR
    frequent_minutes: int = naming.DEFAULT_FREQUENT_MINUTES
    default_exclude: bool = False
    skip_unchanged: bool = False
    prune: bool = True
    snapshot: bool = True

    @property
    def labels(self) -> list[str]:
        return list(self.policy)


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f'{what} must be true or false, got {value!r}')
    return value


NO_ROOTS = ('give the datasets to snapshot in roots, or set all_pools to snapshot every imported pool')
EMPTY_POLICY = ('an empty policy would take and prune nothing; give labels with keep counts, '
                'or leave policy out for the zfs-auto-snapshot defaults')


def make_config(*, roots: t.Sequence[str] | None = None, all_pools: bool = False, recursive: bool = True,
                exclude: t.Sequence[str] | None = None, label: str | None = None, keep: int | None = None,
                policy: t.Mapping[str, t.Any] | None = None, prefix: str = naming.DEFAULT_PREFIX,
                separator: str = naming.DEFAULT_SEPARATOR, frequent_minutes: int = naming.DEFAULT_FREQUENT_MINUTES,
                default_exclude: bool = False, skip_unchanged: bool = False, prune: bool = True,
                snapshot: bool = True) -> AutosnapConfig:
    """Validate user input into a config; raises ValidationError before anything runs.

    An empty value never stands for "everything": ``roots=[]`` and ``policy={}``
    are refused, and every imported pool is taken only with ``all_pools=True``.
    """
    if label is not None or keep is not None:
        if policy is not None:
            raise ValidationError('give either label and keep, or policy, not both')
        if label is None or keep is None:
            raise ValidationError('label and keep must be given together')
        policy = {label: keep}
    elif policy is None:
        policy = dict(naming.DEFAULT_POLICY)
    if not isinstance(policy, t.Mapping):
        raise ValidationError(f'policy must be a mapping of label to keep, got {policy!r}')
    if not policy:
        raise ValidationError(f'policy must not be empty: {EMPTY_POLICY}')
    checked: dict[str, int] = {}
    for name, count in policy.items():
        naming.validate_label(name)
        # keep >= 1 like the script's --keep: the newest snapshot of a label always stays,
        # so 0 could not be honoured; drop a label from the policy to stop taking it
        checked[name] = validate_int(count, f'keep of label {name!r}', 1)
    ordered = {name: checked[name] for name in naming.LABELS if name in checked}
    patterns = list(exclude or ())
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern or any(ord(c) < 32 for c in pattern):
            raise ValidationError(f'exclude pattern {pattern!r} must be a non-empty printable string')
    config = AutosnapConfig(
        policy=ordered,
        roots=(),
        recursive=_bool(recursive, 'recursive'),
        exclude=tuple(patterns),
        prefix=naming.validate_prefix(prefix),
        separator=naming.validate_separator(separator),
        frequent_minutes=naming.validate_frequent_minutes(frequent_minutes),
        default_exclude=_bool(default_exclude, 'default_exclude'),
        skip_unchanged=_bool(skip_unchanged, 'skip_unchanged'),
        prune=_bool(prune, 'prune'),
        snapshot=_bool(snapshot, 'snapshot'),
    )
    # roots last: the other messages do not depend on them
    if _bool(all_pools, 'all_pools'):
        if roots is not None:
            raise ValidationError('give roots or all_pools, not both')
        # AutosnapConfig's empty roots: every imported pool, decided at run time
        return config
    if roots is None:
        raise ValidationError(f'roots is required: {NO_ROOTS}')
    if isinstance(roots, str) or not isinstance(roots, t.Sequence):
        raise ValidationError(f'roots must be a list of dataset names, got {roots!r}')
    if not roots:
        raise ValidationError(f'roots must not be empty: {NO_ROOTS}')
    checked_roots = unique(validate_dataset_name(r, 'root') for r in roots)
    return dataclasses.replace(config, roots=tuple(checked_roots))


@dataclasses.dataclass
class CreateBatch:
    """One ``zfs snapshot`` of every due dataset of one pool under one name: one transaction group."""

    pool: str
    label: str
    name: str
    datasets: list[str]

    @property
    def full_names(self) -> list[str]:
        return [f'{ds}@{self.name}' for ds in self.datasets]


@dataclasses.dataclass
class DestroyBatch:
    """One ``zfs destroy ds@a,b,c`` per dataset; labels kept to count and to undo on failed creates."""

    dataset: str
    names: list[str]
    labels: list[str]

    @property
    def full_names(self) -> list[str]:
        return [f'{self.dataset}@{n}' for n in self.names]


@dataclasses.dataclass
class Plan:
    now: dt.datetime
    datasets: list[str] = dataclasses.field(default_factory=list)
    creates: list[CreateBatch] = dataclasses.field(default_factory=list)
    destroys: list[DestroyBatch] = dataclasses.field(default_factory=list)
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
    excluded: list[dict[str, str]] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    before: list[str] = dataclasses.field(default_factory=list)
    labels: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    @property
    def created(self) -> list[str]:
        return [n for b in self.creates for n in b.full_names]

    @property
    def destroyed(self) -> list[str]:
        return [n for b in self.destroys for n in b.full_names]


def _due(config: AutosnapConfig, label: str, now: dt.datetime, mine: list[Snapshot], *, name: str,
         names_here: set[str]) -> bool:
    if name in names_here:
        # the clock moved back onto an existing name: that slot is already served
        return False
    current = naming.slot_start(label, now, config.frequent_minutes)
    for snap in mine:
        parsed = naming.parse_name(snap.name, config.prefix, config.separator)
        if parsed and naming.slot_start(label, parsed.when, config.frequent_minutes) == current:
            return False
    return True


def build_plan(config: AutosnapConfig, datasets: t.Sequence[Dataset], snapshots: t.Sequence[Snapshot],
               now: dt.datetime) -> Plan:
    """Decide everything from the two listings. *now* must be timezone-aware."""
    now = naming.utc(now).replace(second=0, microsecond=0)
    now_epoch = int(now.timestamp())
    plan = Plan(now=now)
    by_name = {ds.name: ds for ds in datasets}
    selected, plan.excluded, plan.warnings = select(list(by_name.values()), config.labels, config.exclude,
                                                    config.default_exclude)
    chosen = {name for names in selected.values() for name in names}
    plan.datasets = [name for name in by_name if name in chosen]

    snaps_by_ds: dict[str, list[Snapshot]] = {}
    for snap in snapshots:
        if not snap.is_bookmark:
            snaps_by_ds.setdefault(snap.dataset, []).append(snap)

    creates: dict[tuple[str, str], CreateBatch] = {}
    destroys: dict[str, DestroyBatch] = {}
    frozen: set[str] = set()  # datasets not pruned this run because the clock jumped
    for ds_name in plan.datasets:
        jump = clock_jump(managed(snaps_by_ds.get(ds_name, ()), config.prefix, config.separator), now_epoch)
        if jump is not None and config.prune:
            frozen.add(ds_name)
            plan.warnings.append(
                f'{ds_name}: not pruned because {jump.full_name} was created at epoch {jump.creation}, '
                f'after the current time {now_epoch}; the clock went backwards')
        plan.before.extend(s.full_name for s in managed(snaps_by_ds.get(ds_name, ()), config.prefix, config.separator))

    for label, keep in config.policy.items():
        name = naming.format_name(config.prefix, config.separator, label, now)
        counts = plan.labels.setdefault(label, {'keep': keep, 'datasets': len(selected[label]), 'created': 0, 'destroyed': 0})
        for ds_name in selected[label]:
            ds_snaps = snaps_by_ds.get(ds_name, [])
            mine = managed(ds_snaps, config.prefix, config.separator, label)
            planned: list[Snapshot] = []
            if config.snapshot and _due(config, label, now, mine, name=name, names_here={s.name for s in ds_snaps}):
                written = by_name[ds_name].written
                if config.skip_unchanged and written == 0 and ds_snaps:
                    newest = newest_first(ds_snaps)[0]
                    plan.skipped.append({'name': f'{ds_name}@{name}',
                                         'reason': f'unchanged: nothing written since {newest.full_name}'})
                else:
                    pool = ds_name.split('/', 1)[0]
                    creates.setdefault((label, pool), CreateBatch(pool, label, name, [])).datasets.append(ds_name)
                    planned.append(Snapshot(ds_name, name, guid=0, createtxg=PLANNED_TXG, creation=now_epoch))
                    counts['created'] += 1
            if not config.prune or ds_name in frozen:
                continue
            decision = prune_label(mine + planned, keep)
            for snap, reason in decision.skipped:
                plan.skipped.append({'name': snap.full_name, 'reason': reason})
            if decision.destroy:
                batch = destroys.setdefault(ds_name, DestroyBatch(ds_name, [], []))
                for snap in newest_first(decision.destroy)[::-1]:
                    batch.names.append(snap.name)
                    batch.labels.append(label)
                counts['destroyed'] += len(decision.destroy)

    plan.creates = [creates[key] for key in sorted(creates, key=lambda k: (naming.LABELS.index(k[0]), k[1]))]
    plan.destroys = [destroys[ds] for ds in sorted(destroys)]
    plan.before.sort()
    return plan


def diff_text(names: t.Iterable[str]) -> str:
    """Ansible's diff wants one string per side; one snapshot per line."""
    lines = sorted(names)
    return ''.join(f'{line}\n' for line in lines)
