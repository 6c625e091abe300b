# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What to send for one dataset, decided from one listing per side. Pure: no I/O.

Snapshots are matched across pools by ``guid`` and ordered by ``createtxg``
(each pool's own). The outcomes:

- *none*: the newest selected snapshot is already on the target;
- *full*: no target yet: the oldest selected snapshot in full, then increments;
- *incremental*: from the newest snapshot or bookmark the target also has;
- *resume*: the target holds a ``receive_resume_token``: finish that first;
- a :class:`Conflict` (diverged, unrelated, clashing names): the target has
  snapshots after the common one, was written to since its last snapshot, or
  shares no snapshot with the source. Only ``force_rollback`` (``receive -F``)
  gets past that, and only where rolling back can actually help.

``zfs send -I a b`` carries every snapshot between a and b, whatever its
name, so ``-I`` is used only across runs where every snapshot is selected;
unselected ones (other labels, foreign names) are stepped over with ``-i``.
A bookmark can only be the source of ``-i``, never of ``-I``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import typing as t

from ._naming import DEFAULT_PREFIX, DEFAULT_SEPARATOR, parse_name
from ._retention import managed, prune_label
from ._types import Dataset, Snapshot, ValidationError

Action = t.Literal['none', 'full', 'incremental', 'resume']
StreamKind = t.Literal['full', 'incremental', 'resume']
LAYOUTS = ('full', 'basename')
TAG_PREFIX = 'pyzfsautosnap:'
# zfs hold tags are at most 255 characters (MAXNAMELEN with its NUL)
MAX_TAG_LEN = 255


class Conflict(Exception):
    """Replication of one dataset cannot proceed; decided from the listings before anything changed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotAReplica(Conflict):
    """The target has snapshots, none of them (by guid) from the source."""


class NoCommonSnapshot(Conflict):
    """The target exists without any snapshot: nothing ties it to the source."""


class NameClash(Conflict):
    """A snapshot would arrive under a name the target already uses for a different snapshot."""


class Diverged(Conflict):
    """The target has snapshots newer than the common one that are not from the source, or was written to."""


class MissingPool(Conflict):
    """The pool the target would be created in does not exist."""


class TooManyRounds(Conflict):
    """Re-planning after a resume or an aborted receive still finds work after the bounded number of rounds."""


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which source snapshots replicate: managed ones (optionally of some labels), foreign ones on request."""

    prefix: str = DEFAULT_PREFIX
    separator: str = DEFAULT_SEPARATOR
    labels: tuple[str, ...] = ()
    include_foreign: bool = False

    def wants(self, snap: Snapshot) -> bool:
        if snap.is_bookmark:
            return False
        parsed = parse_name(snap.name, self.prefix, self.separator)
        if parsed is None:
            return self.include_foreign
        return not self.labels or parsed.label in self.labels


@dataclasses.dataclass(frozen=True)
class Step:
    """One ``zfs send | zfs receive`` stream."""

    kind: StreamKind
    to: str | None = None  # dataset@snapshot on the source
    base: str | None = None  # dataset@snapshot or dataset#bookmark
    intermediates: bool = False  # -I (every snapshot between) instead of -i
    token: str | None = None
    rollback: bool = False  # receive -F
    arrives: tuple[str, ...] = ()  # snapshot names the target gains

    def send_args(self) -> list[str]:
        if self.kind == 'resume':
            return ['-t', t.cast(str, self.token)]
        if self.kind == 'full':
            return [t.cast(str, self.to)]
        return ['-I' if self.intermediates else '-i', t.cast(str, self.base), t.cast(str, self.to)]

    def as_dict(self) -> dict[str, t.Any]:
        return {'kind': self.kind, 'from': self.base, 'to': self.to, 'intermediates': self.intermediates,
                'rollback': self.rollback, 'snapshots': list(self.arrives)}


@dataclasses.dataclass(frozen=True)
class DatasetPlan:
    source: str
    target: str
    filesystem: bool = True
    raw: bool = False
    action: Action = 'none'
    steps: tuple[Step, ...] = ()
    base: Snapshot | None = None  # newest snapshot or bookmark both sides have
    newest: Snapshot | None = None  # newest snapshot the target has once the steps ran
    abort_resume: bool = False
    rollback: bool = False
    conflict: Conflict | None = None
    notes: tuple[str, ...] = ()

    @property
    def error(self) -> str | None:
        """The conflict's message: why this dataset cannot be replicated, or None."""
        return None if self.conflict is None else str(self.conflict)

    @property
    def common_after(self) -> Snapshot | None:
        """The common snapshot once this plan ran: the one to protect with holds."""
        return self.newest if self.steps and self.action != 'resume' else self.base

    def as_dict(self) -> dict[str, t.Any]:
        return {
            'source': self.source, 'target': self.target, 'action': self.action,
            'from': self.base.full_name if self.base else None,
            'to': self.newest.full_name if self.newest else None,
            'steps': [s.as_dict() for s in self.steps], 'rollback': self.rollback,
            'abort_resume': self.abort_resume, 'notes': list(self.notes),
        }


def by_txg(snaps: t.Iterable[Snapshot]) -> list[Snapshot]:
    return sorted(snaps, key=lambda s: (s.createtxg, s.is_bookmark, s.name))


def common_snapshot(source: t.Iterable[Snapshot], target_guids: t.Container[int]) -> Snapshot | None:
    """Newest source snapshot or bookmark whose guid the target has; a snapshot beats its own bookmark."""
    for snap in sorted(source, key=lambda s: (-s.createtxg, s.is_bookmark)):
        if snap.guid in target_guids:
            return snap
    return None


def incremental_steps(base: Snapshot, newest: Snapshot, snaps: t.Sequence[Snapshot], wanted: t.Container[int]) -> list[Step]:
    """Steps from *base* to *newest* carrying exactly the wanted snapshots between them."""
    steps: list[Step] = []
    cur = base
    run: list[Snapshot] = []
    # an unwanted snapshot lies between cur and run[0], so -I from cur would carry it
    dirty = False

    def flush() -> None:
        nonlocal cur, run, dirty
        if not run:
            return
        if dirty or cur.is_bookmark:
            first = run.pop(0)
            steps.append(Step('incremental', base=cur.full_name, to=first.full_name, arrives=(first.name,)))
            cur = first
        if run:
            steps.append(Step('incremental', base=cur.full_name, to=run[-1].full_name, intermediates=len(run) > 1,
                              arrives=tuple(s.name for s in run)))
            cur = run[-1]
        run = []
        dirty = False

    for snap in snaps:
        if snap.is_bookmark or snap.createtxg <= base.createtxg or snap.createtxg > newest.createtxg:
            continue
        if snap.guid in wanted:
            run.append(snap)
        else:
            flush()
            dirty = True
    flush()
    return steps


def _names(snaps: t.Sequence[Snapshot], limit: int = 5) -> str:
    shown = ', '.join(s.name for s in snaps[:limit])
    return shown + (f' and {len(snaps) - limit} more' if len(snaps) > limit else '')


def plan_dataset(source: Dataset, target_name: str, source_snaps: t.Sequence[Snapshot], target: Dataset | None,
                 target_snaps: t.Sequence[Snapshot], *, selection: Selection, force_rollback: bool = False,
                 stale_token: bool = False) -> DatasetPlan:
    """The plan for one source dataset and its target (None when the target does not exist)."""
    raw = source.properties.get('encryption', 'off') not in ('off', '-', '')
    fixed = DatasetPlan(source.name, target_name, filesystem=source.type != 'volume', raw=raw)
    snaps = by_txg(s for s in source_snaps if not s.is_bookmark)
    marks = [s for s in source_snaps if s.is_bookmark]
    chosen = [s for s in snaps if selection.wants(s)]
    notes: list[str] = []
    abort = False

    if target is not None and target.receive_resume_token:
        if not stale_token:
            return dataclasses.replace(fixed, action='resume', steps=(Step('resume', token=target.receive_resume_token),))
        abort = True
        notes.append('the interrupted receive cannot be resumed (what it was sending is gone on the source); '
                     'its partial state is discarded with zfs receive -A')
        if not [s for s in target_snaps if not s.is_bookmark]:
            # an interrupted first full receive leaves nothing behind once aborted
            target = None

    if not chosen:
        notes.append('no snapshot of this dataset is selected for replication')
        return dataclasses.replace(fixed, abort_resume=abort, notes=tuple(notes))
    newest = chosen[-1]
    wanted = {s.guid for s in chosen}

    if target is None:
        first = chosen[0]
        steps = [Step('full', to=first.full_name, arrives=(first.name,)), *incremental_steps(first, newest, snaps, wanted)]
        return dataclasses.replace(fixed, action='full', steps=tuple(steps), newest=newest, abort_resume=abort, notes=tuple(notes))

    tsnaps = by_txg(s for s in target_snaps if not s.is_bookmark)
    target_by_guid = {s.guid: s for s in tsnaps}
    common = common_snapshot([*snaps, *marks], target_by_guid)

    if common is None:
        if tsnaps:
            return dataclasses.replace(fixed, abort_resume=abort, conflict=NotAReplica(
                f'{target_name} has {len(tsnaps)} snapshot(s) ({_names(tsnaps)}) but none of them exists on {source.name} '
                '(compared by guid): it is not a replica of this source. Nothing was changed; rolling back cannot fix '
                'this, rename or destroy the target by hand'))
        if not force_rollback:
            return dataclasses.replace(fixed, abort_resume=abort, conflict=NoCommonSnapshot(
                f'{target_name} exists but has no snapshot, so nothing ties it to {source.name}. Nothing was changed; '
                'set force_rollback: true to overwrite it with a full stream (zfs receive -F)'))
        first = chosen[0]
        steps = [Step('full', to=first.full_name, rollback=True, arrives=(first.name,)),
                 *incremental_steps(first, newest, snaps, wanted)]
        return dataclasses.replace(fixed, action='full', steps=tuple(steps), newest=newest, abort_resume=abort, rollback=True,
                                   notes=tuple(notes))

    common_on_target = target_by_guid[common.guid]
    later = [s for s in tsnaps if s.createtxg > common_on_target.createtxg]
    problems = []
    if later:
        problems.append(f'it has {len(later)} snapshot(s) newer than the last common snapshot {common.name}: {_names(later)}')
    if target.written:
        problems.append(f'it was modified since its last snapshot ({target.written} bytes written)')

    steps = incremental_steps(common, newest, snaps, wanted)
    if not steps:
        notes.extend(f'target {target_name}: {p}' for p in problems)
        return dataclasses.replace(fixed, base=common, newest=common if not common.is_bookmark else None,
                                   abort_resume=abort, notes=tuple(notes))

    arriving = {name for step in steps for name in step.arrives}
    later_names = {s.name for s in later}
    clash = [s for s in tsnaps if s.name in arriving and s.name not in later_names]
    if clash:
        return dataclasses.replace(fixed, base=common, abort_resume=abort, conflict=NameClash(
            f'{target_name} already has snapshot(s) {_names(clash)} older than the common snapshot {common.name} '
            f'under the same name as a different snapshot of {source.name} (guids differ). Nothing was changed; '
            'rolling back cannot fix this, rename or destroy them by hand'))
    if problems:
        if not force_rollback:
            return dataclasses.replace(fixed, base=common, abort_resume=abort, conflict=Diverged(
                f'{target_name} has diverged from {source.name}: {"; ".join(problems)}. Nothing was changed; set '
                f'force_rollback: true to roll it back to {common.name} (zfs receive -F destroys what came after)'))
        steps[0] = dataclasses.replace(steps[0], rollback=True)
    return dataclasses.replace(fixed, action='incremental', steps=tuple(steps), base=common, newest=newest,
                               abort_resume=abort, rollback=bool(problems), notes=tuple(notes))


# ------------------------------------------------------------------ datasets and targets
def target_for(source: str, root: str, target_root: str, layout: str = 'full') -> str:
    """``full``: target_root/<source incl. pool>; ``basename``: target_root/<last part of root>/<path below root>."""
    if layout == 'full':
        return f'{target_root}/{source}'
    if layout == 'basename':
        return f'{target_root}/{root.rsplit("/", 1)[-1]}{source[len(root):]}'
    raise ValidationError(f'target_layout must be one of {", ".join(LAYOUTS)}, got {layout!r}')


def _under(name: str, root: str) -> bool:
    return name == root or name.startswith(root + '/')


def outer_roots(roots: t.Sequence[str], recursive: bool) -> list[str]:
    """*roots* without repeats and, when recursive, without those inside another root (zfs would list them twice)."""
    unique = list(dict.fromkeys(roots))
    if not recursive:
        return unique
    return [r for r in unique if not any(r != o and _under(r, o) for o in unique)]


def select_datasets(listed: t.Iterable[Dataset], roots: t.Sequence[str], recursive: bool,
                    exclude: t.Sequence[str] = ()) -> list[tuple[Dataset, str]]:
    """(dataset, root it was found under) parents first; the outermost root wins.

    *exclude* holds fnmatch patterns like the autosnap module's: ``tank/tmp``
    skips only that dataset, ``tank/tmp/*`` its descendants.
    """
    outermost = sorted(set(roots), key=lambda r: r.count('/'))
    picked: dict[str, tuple[Dataset, str]] = {}
    for ds in listed:
        if ds.name in picked or any(fnmatch.fnmatchcase(ds.name, pattern) for pattern in exclude):
            continue
        for root in outermost:
            if ds.name == root or (recursive and _under(ds.name, root)):
                picked[ds.name] = (ds, root)
                break
    return sorted(picked.values(), key=lambda pair: pair[0].name.split('/'))


def map_targets(pairs: t.Sequence[tuple[Dataset, str]], target_root: str, layout: str) -> list[str]:
    targets = [target_for(ds.name, root, target_root, layout) for ds, root in pairs]
    seen: dict[str, str] = {}
    for (ds, _root), target in zip(pairs, targets):
        if target in seen:
            raise ValidationError(f'{seen[target]} and {ds.name} would both replicate to {target}; use target_layout: full')
        if _under(ds.name, target) or _under(target, ds.name):
            raise ValidationError(f'{ds.name} would replicate into itself ({target})')
        seen[target] = ds.name
    return targets


# ------------------------------------------------------------------ protecting the chain
def hold_tag(target_id: str) -> str:
    tag = TAG_PREFIX + target_id
    if len(tag) > MAX_TAG_LEN:
        tag = TAG_PREFIX + hashlib.sha256(target_id.encode('utf-8')).hexdigest()
    return tag


def plan_holds(tag: str, keep: str | None, tagged: t.Iterable[str]) -> tuple[list[str], list[str]]:
    """Snapshots to hold with *tag* (the new common one) and to release (every other one holding it)."""
    tagged = list(tagged)
    hold = [keep] if keep and keep not in tagged else []
    release = [name for name in tagged if name != keep]
    return hold, release


def bookmark_suffix(tag: str) -> str:
    return '.pyzfsautosnap-' + hashlib.sha256(tag.encode('utf-8')).hexdigest()[:8]


def plan_bookmark(dataset: str, marks: t.Iterable[Snapshot], common: Snapshot | None,
                  tag: str) -> tuple[tuple[str, str] | None, list[str]]:
    """(snapshot, bookmark) to create for the common snapshot, and this target's older bookmarks to destroy."""
    if common is None or common.is_bookmark:
        return None, []
    suffix = bookmark_suffix(tag)
    wanted = common.name + suffix
    ours = [m for m in marks if m.is_bookmark and m.name.endswith(suffix)]
    create = None if any(m.name == wanted for m in ours) else (common.full_name, f'{dataset}#{wanted}')
    return create, [m.full_name for m in ours if m.name != wanted]


def plan_target_prune(target_snaps: t.Sequence[Snapshot], retention: t.Mapping[str, int], selection: Selection,
                      protect_guids: t.Container[int]) -> list[Snapshot]:
    """Managed replica snapshots beyond *retention* (label -> keep); never foreign, held, cloned or protected ones."""
    doomed: list[Snapshot] = []
    for label, keep in retention.items():
        decision = prune_label(managed(target_snaps, selection.prefix, selection.separator, label), keep)
        doomed.extend(s for s in decision.destroy if s.guid not in protect_guids)
    return by_txg(doomed)
