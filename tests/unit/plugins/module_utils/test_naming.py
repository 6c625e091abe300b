# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import datetime as dt

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._naming import (
    ParsedName,
    format_name,
    parse_name,
    slot_start,
    validate_frequent_minutes,
    validate_label,
    validate_prefix,
    validate_separator,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ValidationError

UTC = dt.timezone.utc


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize('prefix, sep, label, when, expected', [
    ('zfs-auto-snap', '_', 'daily', at(2024, 5, 6, 12, 34, 56), 'zfs-auto-snap_daily-2024-05-06-1234'),
    ('zfs-auto-snap', '_', 'frequent', at(2024, 1, 1, 0, 0), 'zfs-auto-snap_frequent-2024-01-01-0000'),
    ('zfs-auto-snap', '-', 'hourly', at(1999, 12, 31, 23, 59), 'zfs-auto-snap-hourly-1999-12-31-2359'),
    ('backup', '.', 'yearly', at(2030, 6, 1, 7, 5), 'backup.yearly-2030-06-01-0705'),
    # local time zones are converted: names are always UTC like `date --utc`
    ('zfs-auto-snap', '_', 'daily', dt.datetime(2024, 5, 6, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
     'zfs-auto-snap_daily-2024-05-05-2330'),
])
def test_format_name(prefix: str, sep: str, label: str, when: dt.datetime, expected: str) -> None:
    assert format_name(prefix, sep, label, when) == expected


def test_format_name_refuses_naive_time() -> None:
    with pytest.raises(ValueError):
        format_name('zfs-auto-snap', '_', 'daily', dt.datetime(2024, 1, 1))


@pytest.mark.parametrize('name, prefix, sep, expected', [
    # names written by zfs-auto-snapshot's cron jobs
    ('zfs-auto-snap_frequent-2024-05-06-1245', 'zfs-auto-snap', '_', ParsedName('frequent', at(2024, 5, 6, 12, 45))),
    ('zfs-auto-snap_hourly-2011-09-26-0817', 'zfs-auto-snap', '_', ParsedName('hourly', at(2011, 9, 26, 8, 17))),
    ('zfs-auto-snap_daily-2024-02-29-0000', 'zfs-auto-snap', '_', ParsedName('daily', at(2024, 2, 29))),
    ('zfs-auto-snap_weekly-2024-05-06-0000', 'zfs-auto-snap', '_', ParsedName('weekly', at(2024, 5, 6))),
    ('zfs-auto-snap_monthly-2024-05-01-0000', 'zfs-auto-snap', '_', ParsedName('monthly', at(2024, 5, 1))),
    # labels we do not schedule are still parsed, and count for that label only
    ('zfs-auto-snap_event-2024-05-06-1234', 'zfs-auto-snap', '_', ParsedName('event', at(2024, 5, 6, 12, 34))),
    ('zfs-auto-snap_pre-upgrade-2024-05-06-1234', 'zfs-auto-snap', '_', ParsedName('pre-upgrade', at(2024, 5, 6, 12, 34))),
    # another separator and prefix
    ('zfs-auto-snap-daily-2024-05-06-1234', 'zfs-auto-snap', '-', ParsedName('daily', at(2024, 5, 6, 12, 34))),
    ('snap:daily-2024-05-06-1234', 'snap', ':', ParsedName('daily', at(2024, 5, 6, 12, 34))),
    # foreign: the configured separator must match exactly
    ('zfs-auto-snap-daily-2024-05-06-1234', 'zfs-auto-snap', '_', None),
    # foreign: other prefix, no label, bad or impossible dates, trailing text
    ('autosnap_daily-2024-05-06-1234', 'zfs-auto-snap', '_', None),
    ('zfs-auto-snap_-2024-05-06-1234', 'zfs-auto-snap', '_', None),
    ('zfs-auto-snap-2024-05-06-1234', 'zfs-auto-snap', '_', None),
    ('zfs-auto-snap_daily-2024-02-30-0000', 'zfs-auto-snap', '_', None),
    ('zfs-auto-snap_daily-2024-05-06-2460', 'zfs-auto-snap', '_', None),
    ('zfs-auto-snap_daily-2024-05-06-12h34', 'zfs-auto-snap', '_', None),
    ('zfs-auto-snap_daily-2024-05-06-1234-copy', 'zfs-auto-snap', '_', None),
    ('zfs-auto-snap_daily-24-05-06-1234', 'zfs-auto-snap', '_', None),
    ('manual-before-upgrade', 'zfs-auto-snap', '_', None),
    ('', 'zfs-auto-snap', '_', None),
    # a prefix that is a prefix of the real one does not claim its snapshots for a label
    ('zfs-auto-snap_daily-2024-05-06-1234', 'zfs-auto', '-', ParsedName('snap_daily', at(2024, 5, 6, 12, 34))),
])
def test_parse_name(name: str, prefix: str, sep: str, expected: ParsedName | None) -> None:
    assert parse_name(name, prefix, sep) == expected


@pytest.mark.parametrize('label', ['frequent', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'])
def test_round_trip(label: str) -> None:
    when = at(2024, 5, 6, 12, 34)
    assert parse_name(format_name('zfs-auto-snap', '_', label, when), 'zfs-auto-snap', '_') == ParsedName(label, when)


@pytest.mark.parametrize('label, when, minutes, expected', [
    ('frequent', at(2024, 5, 6, 12, 34, 56), 15, at(2024, 5, 6, 12, 30)),
    ('frequent', at(2024, 5, 6, 12, 45), 15, at(2024, 5, 6, 12, 45)),
    ('frequent', at(2024, 5, 6, 12, 44, 59), 15, at(2024, 5, 6, 12, 30)),
    ('frequent', at(2024, 5, 6, 12, 34), 5, at(2024, 5, 6, 12, 30)),
    ('frequent', at(2024, 5, 6, 12, 34), 60, at(2024, 5, 6, 12, 0)),
    ('frequent', at(2024, 5, 6, 12, 34), 1, at(2024, 5, 6, 12, 34)),
    ('hourly', at(2024, 5, 6, 12, 59), 15, at(2024, 5, 6, 12, 0)),
    ('daily', at(2024, 5, 6, 23, 59), 15, at(2024, 5, 6)),
    # ISO weeks start on Monday: 2024-05-06 is a Monday, 2024-05-12 a Sunday
    ('weekly', at(2024, 5, 6, 0, 0), 15, at(2024, 5, 6)),
    ('weekly', at(2024, 5, 12, 23, 59), 15, at(2024, 5, 6)),
    ('weekly', at(2024, 5, 13, 0, 0), 15, at(2024, 5, 13)),
    # week across a year boundary: 2025-01-01 is a Wednesday in ISO week 2025-W01
    ('weekly', at(2025, 1, 1, 10, 0), 15, at(2024, 12, 30)),
    ('monthly', at(2024, 2, 29, 23, 59), 15, at(2024, 2, 1)),
    ('yearly', at(2024, 12, 31, 23, 59), 15, at(2024, 1, 1)),
])
def test_slot_start(label: str, when: dt.datetime, minutes: int, expected: dt.datetime) -> None:
    assert slot_start(label, when, minutes) == expected


def test_slot_of_other_time_zone_is_utc() -> None:
    local = dt.datetime(2024, 5, 7, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    assert slot_start('daily', local) == at(2024, 5, 6)


@pytest.mark.parametrize('value', ['zfs-auto-snap', 'backup', 'a.b:c-d_e', 'X1'])
def test_valid_prefix(value: str) -> None:
    assert validate_prefix(value) == value


@pytest.mark.parametrize('value', ['', 'a b', 'a@b', 'a/b', 'a#b', 'a,b', 'a;b', '$(x)', 'a\nb', '.', '..', 'ä', None])
def test_invalid_prefix(value: str) -> None:
    with pytest.raises(ValidationError):
        validate_prefix(value)


@pytest.mark.parametrize('value, ok', [('_', True), ('-', True), ('.', True), (':', True), ('x', True),
                                       ('', False), ('__', False), (' ', False), ('@', False), ('/', False), (',', False)])
def test_separator(value: str, ok: bool) -> None:
    if ok:
        assert validate_separator(value) == value
    else:
        with pytest.raises(ValidationError):
            validate_separator(value)


@pytest.mark.parametrize('value, ok', [('daily', True), ('yearly', True), ('Daily', False), ('event', False), ('', False)])
def test_label(value: str, ok: bool) -> None:
    if ok:
        assert validate_label(value) == value
    else:
        with pytest.raises(ValidationError, match='unknown label'):
            validate_label(value)


@pytest.mark.parametrize('value, ok', [(1, True), (5, True), (15, True), (30, True), (60, True), ('15', True),
                                       (0, False), (7, False), (45, False), (90, False), (-15, False), (1.5, False), (True, False)])
def test_frequent_minutes(value: int, ok: bool) -> None:
    if ok:
        assert validate_frequent_minutes(value) == int(value)
    else:
        with pytest.raises(ValidationError):
            validate_frequent_minutes(value)
