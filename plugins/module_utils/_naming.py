# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Snapshot names and schedule slots.

Names follow zfs-auto-snapshot exactly (``<prefix><sep><label>-YYYY-MM-DD-HHMM``,
UTC, its default ``--date`` format) so snapshots made by that script are
recognised and rotated by the same rules, and the other way round.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from ._types import ValidationError
from ._validate import validate_int, validate_snapshot_component

DEFAULT_PREFIX = 'zfs-auto-snap'
DEFAULT_SEPARATOR = '_'
DEFAULT_FREQUENT_MINUTES = 15

LABELS = ('frequent', 'hourly', 'daily', 'weekly', 'monthly', 'yearly')
# the keeps of the script's cron entries; yearly has no cron entry there
DEFAULT_POLICY = {'frequent': 4, 'hourly': 24, 'daily': 31, 'weekly': 8, 'monthly': 12}

_STAMP_RE = re.compile(r'-(\d{4})-(\d{2})-(\d{2})-(\d{2})(\d{2})$')
_STAMP_LEN = len('-YYYY-MM-DD-HHMM')
_SEPARATOR_RE = re.compile(r'^[A-Za-z0-9_.:-]$')


@dataclasses.dataclass(frozen=True)
class ParsedName:
    label: str
    when: dt.datetime  # aware, UTC


def validate_prefix(prefix: str) -> str:
    # An empty prefix would make every '<label>-<date>' snapshot look managed.
    if not isinstance(prefix, str) or not prefix:
        raise ValidationError('prefix must be a non-empty string')
    return validate_snapshot_component(prefix, 'prefix')


def validate_separator(sep: str) -> str:
    if not isinstance(sep, str) or not _SEPARATOR_RE.match(sep):
        raise ValidationError(f'separator must be exactly one of letters, digits, "_", "-", ".", ":"; got {sep!r}')
    return sep


def validate_label(label: str) -> str:
    if label not in LABELS:
        raise ValidationError(f'unknown label {label!r}; known labels: {", ".join(LABELS)}')
    return label


def validate_frequent_minutes(minutes: int) -> int:
    minutes = validate_int(minutes, 'frequent_minutes', 1, 60)
    if 60 % minutes:
        raise ValidationError(f'frequent_minutes must divide 60 so slots line up with hours, got {minutes}')
    return minutes


def utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        raise ValueError('naive datetime: pass an aware datetime so names are in UTC')
    return when.astimezone(dt.timezone.utc)


def format_name(prefix: str, sep: str, label: str, when: dt.datetime) -> str:
    return f'{prefix}{sep}{label}-{utc(when):%Y-%m-%d-%H%M}'


def parse_name(name: str, prefix: str, sep: str) -> ParsedName | None:
    """The label and UTC time of a managed name; None for anything else (foreign)."""
    head = prefix + sep
    if not name.startswith(head) or len(name) <= len(head) + _STAMP_LEN:
        return None
    match = _STAMP_RE.search(name)
    if not match:
        return None
    label = name[len(head):match.start()]
    if not label:
        return None
    try:
        year, month, day, hour, minute = (int(g) for g in match.groups())
        when = dt.datetime(year, month, day, hour, minute, tzinfo=dt.timezone.utc)
    except ValueError:
        # e.g. 2024-02-30: not something either tool wrote
        return None
    return ParsedName(label, when)


def slot_start(label: str, when: dt.datetime, frequent_minutes: int = DEFAULT_FREQUENT_MINUTES) -> dt.datetime:
    """Start (UTC) of the schedule slot of *label* that contains *when*."""
    when = utc(when).replace(second=0, microsecond=0)
    if label == 'frequent':
        return when.replace(minute=when.minute - when.minute % frequent_minutes)
    if label == 'hourly':
        return when.replace(minute=0)
    day = when.replace(hour=0, minute=0)
    if label == 'daily':
        return day
    if label == 'weekly':
        # ISO weeks start on Monday
        return day - dt.timedelta(days=day.weekday())
    if label == 'monthly':
        return day.replace(day=1)
    if label == 'yearly':
        return day.replace(month=1, day=1)
    raise ValidationError(f'unknown label {label!r}')
