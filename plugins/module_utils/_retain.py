# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""``retain``: a backup server prunes what its clients pushed, on its own timer and by its own clock.

One listing of the roots (with the arrival stamps ``serve`` wrote), the pure
plan of ``_retain_plan``, then: stamp what was never stamped, and destroy,
one ``zfs destroy ds@a,b,…`` per dataset, unless the plan would destroy more
than ``max_destroy`` snapshots, in which case nothing is destroyed and the
run fails, naming the number it would take to confirm. Resumable receives
whose token has not moved for ``stale_resume_hours`` are discarded; when each
token was first seen is kept in a small state file per root.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import typing as t

from ._lock import locked
from ._retain_plan import Received, ResumeSeen, RetainPlan, plan_retain, plan_stale_resume
from ._types import ZfsCommandError
from ._zfs import STAMP_PROPERTY, Zfs
from ._zfs_parse import refused_snapshots


def _lock_key(root: str) -> str:
    return 'retain.' + root.replace('/', '+')


def _state_path(state_dir: str, root: str) -> str:
    return os.path.join(state_dir, 'resume-' + root.replace('/', '+') + '.json')


def _load_seen(path: str) -> dict[str, ResumeSeen]:
    try:
        with open(path, encoding='utf-8') as fh:
            raw = json.load(fh)
        return {name: ResumeSeen(str(v['token']), int(v['since'])) for name, v in raw.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        # unreadable: every token counts as first seen now, which only delays a discard
        return {}


def _save_seen(path: str, seen: t.Mapping[str, ResumeSeen]) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.resume-', dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as fh:
            json.dump({name: {'token': s.token_hash, 'since': s.since} for name, s in sorted(seen.items())}, fh)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _render(plan: RetainPlan, destroyed: t.Sequence[str], check_mode: bool) -> dict[str, t.Any]:
    return {
        'changed': bool(destroyed or plan.stamp),
        'check_mode': check_mode,
        'destroyed': list(destroyed),
        'stamped': [s.full_name for s in plan.stamp],
        'skipped': [{'name': s.full_name, 'reason': reason} for s, reason in plan.skipped],
    }


def run_retain(values: t.Mapping[str, t.Any], zfs: Zfs, *, check_mode: bool = False,
               clock: t.Callable[[], float] | None = None) -> dict[str, t.Any]:
    """Prune the roots of *values* (normalised ``retain`` options); a failed run is a result with ``failed: true``."""
    roots = list(values['roots'])
    clock = clock or time.time
    if check_mode:
        return _run(values, zfs, roots, check_mode, clock)
    with locked([_lock_key(root) for root in roots], lock_dir=values['lock_dir'], timeout=values['lock_timeout']):
        return _run(values, zfs, roots, check_mode, clock)


def _run(values: t.Mapping[str, t.Any], zfs: Zfs, roots: list[str], check_mode: bool,
         clock: t.Callable[[], float]) -> dict[str, t.Any]:
    listed = zfs.list_received(roots)
    # the clock is read after the listing: a snapshot stamped in between is not "in the future"
    now = int(clock())
    plan = plan_retain((Received(snap, stamp) for snap, stamp in listed), values['policy'] or {}, now,
                       prefix=values['prefix'], sep=values['separator'], frequent_minutes=values['frequent_minutes'])
    planned = [s.full_name for s in plan.destroy]
    if check_mode:
        result = _render(plan, planned, check_mode)
        result['aborted_resume'] = _stale_resume(values, zfs, roots, now, check_mode=True, errors=[])
        return result
    if plan.stamp:
        zfs.set_property(STAMP_PROPERTY, str(now), [s.full_name for s in plan.stamp])
    if len(planned) > values['max_destroy']:
        result = _render(plan, [], check_mode)
        result.update(failed=True, would_destroy=planned, aborted_resume=[],
                      msg=f'would destroy {len(planned)} snapshots, more than max_destroy ({values["max_destroy"]}): '
                          f'nothing destroyed. Check the list (--check), then run once with --max-destroy '
                          f'{len(planned)} to confirm')
        return result
    destroyed: list[str] = []
    errors: list[str] = []
    for dataset, names in plan.by_dataset().items():
        for batch in zfs.destroy_batches(dataset, names):
            res = zfs.destroy_snapshots(dataset, batch)
            if res.rc == 0:
                destroyed.extend(f'{dataset}@{n}' for n in batch)
                continue
            # one call is all or nothing; say which snapshot zfs refused and why
            refused = refused_snapshots(res.stderr, dataset, batch)
            errors.append(f'{dataset}: {"; ".join(f"{n}: {why}" for n, why in refused.items()) or res.stderr.strip()}')
    result = _render(plan, destroyed, check_mode)
    aborted = _stale_resume(values, zfs, roots, now, check_mode=False, errors=errors)
    result['aborted_resume'] = aborted
    result['changed'] = result['changed'] or bool(aborted)
    if errors:
        result.update(failed=True, msg='retention failed for ' + ' | '.join(errors))
    return result


def _stale_resume(values: t.Mapping[str, t.Any], zfs: Zfs, roots: t.Sequence[str], now: int, *, check_mode: bool,
                  errors: list[str]) -> list[str]:
    """Discard the resumable receives under *roots* nobody continued for ``stale_resume_hours``; the names."""
    tokens = {d.name: d.receive_resume_token for d in zfs.list_datasets(roots, with_resume_token=True)
              if d.receive_resume_token}
    aborted: list[str] = []
    for root in roots:
        path = _state_path(values['state_dir'], root)
        mine = {name: token for name, token in tokens.items() if name == root or name.startswith(root + '/')}
        abort, remember = plan_stale_resume(mine, _load_seen(path), now, values['stale_resume_hours'] * 3600)
        if check_mode:
            aborted.extend(abort)
            continue
        for name in abort:
            try:
                zfs.receive_abort(name)
                aborted.append(name)
            except ZfsCommandError as exc:
                remember.pop(name, None)
                errors.append(f'{name}: discarding the resumable receive failed: {exc.stderr.strip() or exc}')
        if remember or os.path.exists(path):
            _save_seen(path, remember)
    return aborted
