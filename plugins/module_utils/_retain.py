# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""``retain``: a backup server prunes what its clients pushed, on its own timer and by its own clock.

One listing of the roots (with the arrival stamps ``serve`` wrote), the pure
plan of ``_retain_plan``, then: stamp what was never stamped, and destroy,
one ``zfs destroy ds@a,b,…`` per dataset, unless the plan would destroy more
than ``max_destroy`` snapshots, in which case nothing is destroyed and the
run fails, naming the number it would take to confirm.
"""

from __future__ import annotations

import time
import typing as t

from ._lock import locked
from ._retain_plan import Received, RetainPlan, plan_retain
from ._zfs import STAMP_PROPERTY, Zfs
from ._zfs_parse import refused_snapshots


def _lock_key(root: str) -> str:
    return 'retain.' + root.replace('/', '+')


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
    plan = plan_retain((Received(snap, stamp) for snap, stamp in listed), values['policy'], now,
                       prefix=values['prefix'], sep=values['separator'], frequent_minutes=values['frequent_minutes'])
    planned = [s.full_name for s in plan.destroy]
    if check_mode:
        return _render(plan, planned, check_mode)
    if plan.stamp:
        zfs.set_property(STAMP_PROPERTY, str(now), [s.full_name for s in plan.stamp])
    if len(planned) > values['max_destroy']:
        result = _render(plan, [], check_mode)
        result.update(failed=True, would_destroy=planned,
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
    if errors:
        result.update(failed=True, msg='pruning failed for ' + ' | '.join(errors))
    return result

