# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which replicas a backup server prunes, decided by when they arrived by its own clock. Pure: no I/O.

A client chooses the names, creation times and number of the snapshots it
sends; none of that may decide what the server destroys. So a managed
snapshot of a label with *keep* N stays while it is one of the newest N of
its label (by ``createtxg`` on the server, the order they arrived in) **or** it
arrived less than N periods of the label ago (the ``pyzfsautosnap:received``
stamp ``serve`` writes). A client that sends a hundred fresh snapshots makes
the server keep more, never destroy one that arrived before them inside the
window; a client that stopped sending keeps its newest N for ever.

A snapshot without a stamp (it arrived before the server stamped, or by a
pull) counts as arriving now: it is stamped now and kept for a whole window.
A stamp in the future means the clock went back: nothing of that label is
destroyed until the clock is past it. Held, cloned, foreign (other prefix) and
unlisted-label snapshots are never destroyed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing as t

from ._naming import DEFAULT_FREQUENT_MINUTES, parse_name
from ._retention import CLOCK_TOLERANCE, newest_first
from ._types import Snapshot

PERIOD_SECONDS = {'hourly': 3600, 'daily': 86400, 'weekly': 7 * 86400, 'monthly': 31 * 86400, 'yearly': 366 * 86400}
UNSTAMPED = '-'


def period(label: str, frequent_minutes: int = DEFAULT_FREQUENT_MINUTES) -> int:
    return frequent_minutes * 60 if label == 'frequent' else PERIOD_SECONDS[label]


def arrival(value: str | None) -> int | None:
    """The stamp as seconds since the epoch; None where there is none or it is not one."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 12:
        return None
    return int(value)


@dataclasses.dataclass(frozen=True)
class Received:
    """A snapshot on the backup server and its arrival stamp as listed (``-`` for none)."""

    snapshot: Snapshot
    stamp: str = UNSTAMPED


@dataclasses.dataclass(frozen=True)
class RetainPlan:
    destroy: tuple[Snapshot, ...] = ()
    # first seen now: stamped with the server's clock by this run
    stamp: tuple[Snapshot, ...] = ()
    skipped: tuple[tuple[Snapshot, str], ...] = ()

    def by_dataset(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for snap in self.destroy:
            out.setdefault(snap.dataset, []).append(snap.name)
        return out


def plan_label(items: t.Sequence[Received], keep: int, window: int, now: int) -> RetainPlan:
    """One dataset's managed snapshots of one label: what to destroy, stamp, and keep against the rule."""
    ordered = newest_first(item.snapshot for item in items)
    stamps = {item.snapshot.full_name: arrival(item.stamp) for item in items}
    # the newest snapshot of a label is never destroyed, whatever keep says
    newest = {s.full_name for s in ordered[:max(keep, 1)]}
    to_stamp = [s for s in ordered if stamps[s.full_name] is None]
    ahead = {s.full_name: (stamps[s.full_name] or 0) - now for s in ordered}
    future = [s for s in ordered if ahead[s.full_name] > CLOCK_TOLERANCE]
    if future:
        return RetainPlan(stamp=tuple(to_stamp), skipped=tuple(
            (s, f'arrived {ahead[s.full_name]} s in the future: the clock went back, nothing of this label '
                'is pruned until it is past that') for s in future))
    destroy: list[Snapshot] = []
    skipped: list[tuple[Snapshot, str]] = []
    for snap in ordered:
        when = stamps[snap.full_name]
        if snap.full_name in newest or when is None or when >= now - window:
            continue
        if snap.held:
            skipped.append((snap, f'held ({snap.userrefs} user reference(s))'))
        elif snap.clones:
            skipped.append((snap, f'has clones: {", ".join(snap.clones)}'))
        else:
            destroy.append(snap)
    # oldest first, the order they are destroyed in
    return RetainPlan(tuple(reversed(destroy)), tuple(reversed(to_stamp)), tuple(skipped))


def plan_retain(items: t.Iterable[Received], policy: t.Mapping[str, int], now: int, *, prefix: str, sep: str,
                frequent_minutes: int = DEFAULT_FREQUENT_MINUTES) -> RetainPlan:
    """Every dataset and label of *policy*; snapshots of other labels or names are left alone (and unstamped ones
    of any managed label are stamped, so their window starts now)."""
    groups: dict[tuple[str, str], list[Received]] = {}
    for item in items:
        if item.snapshot.is_bookmark:
            continue
        parsed = parse_name(item.snapshot.name, prefix, sep)
        if parsed is not None:
            groups.setdefault((item.snapshot.dataset, parsed.label), []).append(item)
    destroy: list[Snapshot] = []
    stamp: list[Snapshot] = []
    skipped: list[tuple[Snapshot, str]] = []
    for (_dataset, label), group in sorted(groups.items()):
        if label not in policy:
            stamp.extend(item.snapshot for item in group if arrival(item.stamp) is None)
            continue
        plan = plan_label(group, policy[label], policy[label] * period(label, frequent_minutes), now)
        destroy.extend(plan.destroy)
        stamp.extend(plan.stamp)
        skipped.extend(plan.skipped)
    return RetainPlan(tuple(destroy), tuple(stamp), tuple(skipped))


# ------------------------------------------------------------------ resumable receives that stopped
@dataclasses.dataclass(frozen=True)
class ResumeSeen:
    """A receive's resume token (its hash) and when this server first saw it unchanged."""

    token_hash: str
    since: int


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode('utf-8')).hexdigest()[:16]


def plan_stale_resume(tokens: t.Mapping[str, str], seen: t.Mapping[str, ResumeSeen], now: int,
                      stale_after: int) -> tuple[list[str], dict[str, ResumeSeen]]:
    """Datasets whose resumable state has not moved for *stale_after* seconds, and what to remember now.

    *tokens*: dataset -> its ``receive_resume_token``. A push that resumes changes the token, so only a receive
    nobody continued (its source snapshot gone, a client gone) keeps the same one that long.
    """
    abort: list[str] = []
    remember: dict[str, ResumeSeen] = {}
    for dataset, token in sorted(tokens.items()):
        digest = token_hash(token)
        before = seen.get(dataset)
        if before is None or before.token_hash != digest or before.since > now + CLOCK_TOLERANCE:
            remember[dataset] = ResumeSeen(digest, now)
        elif now - before.since >= stale_after:
            abort.append(dataset)
        else:
            remember[dataset] = before
    return abort, remember
