# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The never-destroy rules, checked on random snapshot sets, clocks, holds and clones."""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._autosnap_plan import build_plan, make_config
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._naming import format_name, parse_name
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._retention import CLOCK_TOLERANCE
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import Dataset, Snapshot

UTC = dt.timezone.utc
BASE = dt.datetime(2024, 1, 1, tzinfo=UTC)
DATASETS = ('tank', 'tank/a', 'tank/a/b')
LABELS = ('hourly', 'daily')
PREFIX, SEP = 'zfs-auto-snap', '_'


def _name(kind: int, when: dt.datetime, i: int) -> str:
    if kind <= 1:
        return format_name(PREFIX, SEP, LABELS[kind], when)
    if kind == 2:
        return format_name(PREFIX, SEP, 'event', when)  # our prefix, a label we do not schedule
    if kind == 3:
        return format_name('other', SEP, 'daily', when)  # another tool's prefix
    if kind == 4:
        return format_name(PREFIX, '-', 'daily', when)  # another separator
    return f'manual-{i}'  # plainly foreign


HOLDS = (0, 0, 0, 0, 1, 2)
# creation minus name time: usually equal, sometimes far off either way
SKEWS = (0, 0, 0, 60, 7 * 86400, -86400)
AGE_RANGE = 123 * 1440  # minutes; names from 3 days in the future to 120 days ago


def decode(x: int) -> tuple[int, int, int, int, int, int, bool]:
    """One drawn integer per snapshot: drawing each field separately made the run several times slower."""
    x, d = divmod(x, len(DATASETS))
    x, kind = divmod(x, 6)
    x, holds = divmod(x, len(HOLDS))
    x, cloned = divmod(x, 4)
    x, skew = divmod(x, len(SKEWS))
    x, order = divmod(x, 1000)
    ago = x % AGE_RANGE - 3 * 1440
    return d, kind, ago, order, SKEWS[skew], HOLDS[holds], cloned == 0


snapshot_specs = st.lists(st.integers(0, 2 ** 52 - 1).map(decode), max_size=30)


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    specs=snapshot_specs,
    now_minutes=st.integers(0, 366 * 1440),
    keeps=st.tuples(st.integers(0, 6), st.integers(0, 6)),
    written=st.tuples(*(st.sampled_from([0, 1]) for dummy in DATASETS)),
    snapshot=st.booleans(),
    skip_unchanged=st.booleans(),
)
def test_never_destroy_rules(*, specs: list, now_minutes: int, keeps: tuple[int, int], written: tuple[int, ...],
                             snapshot: bool, skip_unchanged: bool) -> None:
    now = BASE + dt.timedelta(minutes=now_minutes)
    now_epoch = int(now.timestamp())
    policy = {label: keep for label, keep in zip(LABELS, keeps) if keep > 0} or {'daily': 1}
    config = make_config(policy=policy, snapshot=snapshot, skip_unchanged=skip_unchanged, all_pools=True)

    snaps: list[Snapshot] = []
    seen: set[str] = set()
    for i, (d, kind, ago, order, skew, holds, cloned) in enumerate(specs):
        when = now - dt.timedelta(minutes=ago)
        snap = Snapshot(DATASETS[d], _name(kind, when, i), guid=i, createtxg=order * 100 + i,
                        creation=int(when.timestamp()) + skew, userrefs=holds,
                        clones=(f'{DATASETS[d]}-clone{i}',) if cloned else ())
        if snap.full_name not in seen:  # names are unique per dataset
            seen.add(snap.full_name)
            snaps.append(snap)
    datasets = [Dataset(name, written=w) for name, w in zip(DATASETS, written)]

    plan = build_plan(config, datasets, snaps, now)

    by_full = {s.full_name: s for s in snaps}
    destroyed = plan.destroyed
    assert len(destroyed) == len(set(destroyed))
    created = set(plan.created)
    assert not created & set(by_full), 'a planned name already exists'
    for full in destroyed:
        s = by_full[full]  # never a planned (new) snapshot
        parsed = parse_name(s.name, PREFIX, SEP)
        assert parsed is not None and parsed.label in policy, f'foreign or unscheduled snapshot destroyed: {full}'
        assert s.userrefs == 0, f'held snapshot destroyed: {full}'
        assert not s.clones, f'cloned snapshot destroyed: {full}'

    for ds in DATASETS:
        mine_all = [s for s in snaps if s.dataset == ds and parse_name(s.name, PREFIX, SEP)]
        if any(s.creation > now_epoch + CLOCK_TOLERANCE for s in mine_all):
            assert not any(n.startswith(f'{ds}@') for n in destroyed), 'pruned despite a clock jump'
        for label, keep in policy.items():
            mine = [s for s in mine_all if parse_name(s.name, PREFIX, SEP).label == label]
            new = [n for n in created if n.startswith(f'{ds}@') and parse_name(n.split('@', 1)[1], PREFIX, SEP).label == label]
            assert len(new) <= 1
            gone = [s for s in mine if s.full_name in destroyed]
            total = len(mine) + len(new)
            # the newest of a label survives (the new snapshot, when one is made, is the newest)
            if mine and not new:
                newest = max(mine, key=lambda s: s.createtxg)
                assert newest not in gone, 'newest snapshot of a label destroyed'
            assert total - len(gone) >= min(keep, total)
            assert len(gone) <= max(0, total - keep), 'destroyed more than needed'
            # and exactly the ordinary ones beyond the window go, unless the dataset is frozen
            frozen = any(s.creation > now_epoch + CLOCK_TOLERANCE for s in mine_all)
            if not frozen:
                window = sorted(mine, key=lambda s: s.createtxg, reverse=True)[max(keep - len(new), 0):]
                expected = {s.full_name for s in window if not s.userrefs and not s.clones}
                assert {s.full_name for s in gone} == expected
