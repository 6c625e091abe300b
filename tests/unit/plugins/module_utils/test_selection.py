# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._selection import (
    excluded_by_pattern,
    property_columns,
    select,
    wants_label,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import Dataset

G = 'com.sun:auto-snapshot'
D = 'com.sun:auto-snapshot:daily'


def props(generic: str = '-', daily: str = '-') -> dict[str, str]:
    return {G: generic, D: daily}


# (generic, label-specific, default_exclude) -> included
@pytest.mark.parametrize('generic, daily, default_exclude, included', [
    ('-', '-', False, True),
    ('-', '-', True, False),
    ('true', '-', False, True),
    ('true', '-', True, True),
    ('-', 'true', False, True),
    ('-', 'true', True, True),
    ('true', 'true', True, True),
    ('false', '-', False, False),
    ('false', '-', True, False),
    ('-', 'false', False, False),
    ('-', 'false', True, False),
    # label-specific false overrides generic true
    ('true', 'false', False, False),
    ('true', 'false', True, False),
    # any false wins, as in the script's NOAUTO list
    ('false', 'true', False, False),
    ('false', 'true', True, False),
    # case-insensitive, surrounding blanks ignored
    ('FALSE', '-', False, False),
    ('False', '-', False, False),
    ('-', 'TRUE', True, True),
    (' true ', '-', True, True),
    # other values count as unset
    ('yes', '-', False, True),
    ('yes', '-', True, False),
    ('', '', False, True),
])
def test_wants_label(generic: str, daily: str, default_exclude: bool, included: bool) -> None:
    ok, reason = wants_label(props(generic, daily), 'daily', default_exclude)
    assert ok is included
    assert bool(reason) is not included


def test_missing_properties_count_as_unset() -> None:
    assert wants_label({}, 'daily') == (True, '')
    assert wants_label({}, 'daily', default_exclude=True)[0] is False


def test_other_label_property_does_not_matter() -> None:
    assert wants_label({'com.sun:auto-snapshot:hourly': 'false'}, 'daily')[0] is True


def test_property_columns() -> None:
    assert property_columns(['hourly', 'daily']) == [G, 'com.sun:auto-snapshot:hourly', D]


@pytest.mark.parametrize('name, patterns, expected', [
    ('tank/scratch', ['tank/scratch'], 'tank/scratch'),
    ('tank/scratch/a', ['tank/scratch'], None),
    ('tank/scratch/a', ['tank/scratch', 'tank/scratch/*'], 'tank/scratch/*'),
    ('tank/vm-01', ['tank/vm-*'], 'tank/vm-*'),
    ('tank/VM', ['tank/vm'], None),
    ('tank/docker/abc123', ['*/docker/*'], '*/docker/*'),
    ('tank', [], None),
])
def test_exclude_patterns(name: str, patterns: list[str], expected: str | None) -> None:
    assert excluded_by_pattern(name, patterns) == expected


def test_select_per_label_with_reasons_and_warnings() -> None:
    datasets = [
        Dataset('tank', properties={G: '-', D: '-', 'com.sun:auto-snapshot:hourly': '-'}),
        Dataset('tank/home', properties={G: 'true', D: 'false', 'com.sun:auto-snapshot:hourly': '-'}),
        Dataset('tank/tmp', properties={G: 'false', D: '-', 'com.sun:auto-snapshot:hourly': '-'}),
        Dataset('tank/scratch', properties={G: '-', D: '-', 'com.sun:auto-snapshot:hourly': '-'}),
        Dataset('tank/odd', properties={G: 'yes', D: '-', 'com.sun:auto-snapshot:hourly': '-'}),
    ]
    selected, excluded, warnings = select(datasets, ['hourly', 'daily'], exclude=['tank/scratch'])
    assert selected == {'hourly': ['tank', 'tank/home', 'tank/odd'], 'daily': ['tank', 'tank/odd']}
    assert [e['name'] for e in excluded] == ['tank/tmp', 'tank/scratch']
    assert 'exclude pattern' in excluded[1]['reason']
    assert 'com.sun:auto-snapshot=false' in excluded[0]['reason']
    assert len(warnings) == 1 and 'tank/odd' in warnings[0]
