# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Every recorded fixture through its real parser, parsed values asserted per OpenZFS version.

Fixtures come from tests/testbed/record_fixtures.py, which builds the same tree on
every series; what differs per series (guids, txgs, times, wording) is in RECORDED.
A new fixtures/zfs-<series>/ directory fails these tests until it has an entry there.
"""

from __future__ import annotations

import dataclasses
import os
import typing as t

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _zfs_parse as parse
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import SNAPSHOT_COLUMNS

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')
DATASET_COLUMNS = ['name', 'type', 'written', 'receive_resume_token', 'com.sun:auto-snapshot',
                   'com.sun:auto-snapshot:daily', 'com.sun:auto-snapshot:frequent']
HELD = 'tank/data/home@zfs-auto-snap_daily-2026-11-24-0000'
CLONED = 'tank/data/db@zfs-auto-snap_daily-2026-11-24-0000'


@dataclasses.dataclass(frozen=True)
class Recorded:
    version: str
    snapshots: tuple[tuple[str, int, int, int], ...]  # full name, guid, createtxg, creation; listing order
    send_full: int
    send_incremental: int
    held_reason: str


RECORDED: dict[str, Recorded] = {
    '2.1': Recorded(
        version='2.1.11',
        snapshots=(
            ('tank/data@zfs-auto-snap_daily-2026-11-24-0000', 4934194046370920533, 20, 1795712232),
            ('tank/data@zfs-auto-snap_hourly-2026-11-25-2300', 12147623258633347601, 21, 1795712232),
            ('tank/data@zfs-auto-snap_daily-2026-11-25-0000', 2342924855124807494, 23, 1795712233),
            ('tank/data/db@zfs-auto-snap_daily-2026-11-24-0000', 2310826774841801084, 20, 1795712232),
            ('tank/data/db@zfs-auto-snap_hourly-2026-11-25-2300', 2714500602403724723, 21, 1795712232),
            ('tank/data/db@zfs-auto-snap_daily-2026-11-25-0000', 7900568073363266713, 23, 1795712233),
            ('tank/data/home@zfs-auto-snap_daily-2026-11-24-0000', 1087521029468860596, 20, 1795712232),
            ('tank/data/home@zfs-auto-snap_hourly-2026-11-25-2300', 14566680579143756332, 21, 1795712232),
            ('tank/data/home@manual', 13752586240193662120, 22, 1795712232),
            ('tank/data/home@zfs-auto-snap_daily-2026-11-25-0000', 11076806642770397251, 23, 1795712233),
            ('tank/data/home#zfs-auto-snap_daily-2026-11-25-0000', 11076806642770397251, 23, 1795712233),
            ('tank/data/vol@zfs-auto-snap_daily-2026-11-24-0000', 3135355996117275344, 20, 1795712232),
            ('tank/data/vol@zfs-auto-snap_hourly-2026-11-25-2300', 4363921185856209580, 21, 1795712232),
            ('tank/data/vol@zfs-auto-snap_daily-2026-11-25-0000', 15200305941267795804, 23, 1795712233),
        ),
        send_full=44144, send_incremental=31056,
        held_reason='dataset is busy',
    ),
    '2.3': Recorded(
        version='2.3.2',
        snapshots=(
            ('tank/data@zfs-auto-snap_daily-2026-11-24-0000', 17716681313589972936, 18, 1795712147),
            ('tank/data@zfs-auto-snap_hourly-2026-11-25-2300', 6851389021109093594, 19, 1795712147),
            ('tank/data@zfs-auto-snap_daily-2026-11-25-0000', 1603569755528525520, 21, 1795712148),
            ('tank/data/db@zfs-auto-snap_daily-2026-11-24-0000', 16852086481363508464, 18, 1795712147),
            ('tank/data/db@zfs-auto-snap_hourly-2026-11-25-2300', 10773101703004925474, 19, 1795712147),
            ('tank/data/db@zfs-auto-snap_daily-2026-11-25-0000', 9527667869834505354, 21, 1795712148),
            ('tank/data/home@zfs-auto-snap_daily-2026-11-24-0000', 9345633927436925447, 18, 1795712147),
            ('tank/data/home@zfs-auto-snap_hourly-2026-11-25-2300', 17102459760188807635, 19, 1795712147),
            ('tank/data/home@manual', 300822294767872976, 20, 1795712148),
            ('tank/data/home@zfs-auto-snap_daily-2026-11-25-0000', 10821777057708660028, 21, 1795712148),
            ('tank/data/home#zfs-auto-snap_daily-2026-11-25-0000', 10821777057708660028, 21, 1795712148),
            ('tank/data/vol@zfs-auto-snap_daily-2026-11-24-0000', 5627261278873376429, 18, 1795712147),
            ('tank/data/vol@zfs-auto-snap_hourly-2026-11-25-2300', 11982810876094481145, 19, 1795712147),
            ('tank/data/vol@zfs-auto-snap_daily-2026-11-25-0000', 12484963892140586525, 21, 1795712148),
        ),
        send_full=44144, send_incremental=31056,
        held_reason="it's being held. Run 'zfs holds -r tank/data/home@zfs-auto-snap_daily-2026-11-24-0000' to see holders.",
    ),
    '2.4': Recorded(
        version='2.4.4',
        snapshots=(
            ('tank/data@zfs-auto-snap_daily-2026-11-24-0000', 15634719016346219765, 18, 1796269562),
            ('tank/data@zfs-auto-snap_hourly-2026-11-25-2300', 8960833924535405257, 19, 1796269562),
            ('tank/data@zfs-auto-snap_daily-2026-11-25-0000', 16491133636210507469, 21, 1796269562),
            ('tank/data/db@zfs-auto-snap_daily-2026-11-24-0000', 14590097525303202480, 18, 1796269562),
            ('tank/data/db@zfs-auto-snap_hourly-2026-11-25-2300', 14541248799011174341, 19, 1796269562),
            ('tank/data/db@zfs-auto-snap_daily-2026-11-25-0000', 12782593612203443653, 21, 1796269562),
            ('tank/data/home@zfs-auto-snap_daily-2026-11-24-0000', 11912751351485109578, 18, 1796269562),
            ('tank/data/home@zfs-auto-snap_hourly-2026-11-25-2300', 11842828901354080197, 19, 1796269562),
            ('tank/data/home@manual', 2180005620765680079, 20, 1796269562),
            ('tank/data/home@zfs-auto-snap_daily-2026-11-25-0000', 12520274786686119432, 21, 1796269562),
            ('tank/data/home#zfs-auto-snap_daily-2026-11-25-0000', 12520274786686119432, 21, 1796269562),
            ('tank/data/vol@zfs-auto-snap_daily-2026-11-24-0000', 14896766959883776780, 18, 1796269562),
            ('tank/data/vol@zfs-auto-snap_hourly-2026-11-25-2300', 7738656336148659447, 19, 1796269562),
            ('tank/data/vol@zfs-auto-snap_daily-2026-11-25-0000', 14547826129732115085, 21, 1796269562),
        ),
        send_full=44656, send_incremental=31056,
        held_reason="it's being held. Run 'zfs holds -r tank/data/home@zfs-auto-snap_daily-2026-11-24-0000' to see holders.",
    ),
}

# The same on every series: what SETUP in record_fixtures.py made.
USERREFS = {HELD: 1, 'tank/data/home@zfs-auto-snap_daily-2026-11-25-0000': 1}
CLONES = {CLONED: ('tank/dbclone',)}
DATASETS = [
    # name, type, written, com.sun:auto-snapshot, ...:daily, ...:frequent
    ('tank', 'filesystem', 98304, '-', '-', '-'),
    ('tank/data', 'filesystem', 0, '-', '-', '-'),
    ('tank/data/db', 'filesystem', 0, '-', '-', 'false'),
    ('tank/data/home', 'filesystem', 0, '-', 'true', '-'),
    ('tank/data/vol', 'volume', 0, '-', '-', '-'),
    ('tank/dbclone', 'filesystem', 0, '-', '-', '-'),
    ('tank/scratch', 'filesystem', 98304, 'false', '-', '-'),
]
HOLDS = [(HELD, 'keep'), ('tank/data/home@zfs-auto-snap_daily-2026-11-25-0000', 'pyzfsautosnap:zfsbackups')]


def fixture(series: str, name: str) -> str:
    with open(os.path.join(FIXTURES, f'zfs-{series}', name)) as fh:
        return fh.read()


def stderr_fixture(series: str, name: str) -> tuple[int, str]:
    head, _nl, stderr = fixture(series, name).partition('\n')
    assert head.startswith('rc=')
    return int(head[3:]), stderr


def check_version(series: str, rec: Recorded) -> None:
    features = parse.features_from_version(fixture(series, 'version.txt'))
    assert features.version == rec.version
    assert (features.parsable_list, features.multi_snapshot, features.bookmarks, features.resume) == (True, True, True, True)


def _snapshot_rows(text: str) -> list[tuple[str, int, int, int, int, tuple[str, ...], bool]]:
    return [(s.full_name, s.guid, s.createtxg, s.creation, s.userrefs, s.clones, s.is_bookmark)
            for s in parse.snapshots(text, SNAPSHOT_COLUMNS)]


def _expected_snapshot_rows(rec: Recorded) -> list[tuple[str, int, int, int, int, tuple[str, ...], bool]]:
    return [(name, guid, txg, creation, USERREFS.get(name, 0), CLONES.get(name, ()), '#' in name)
            for name, guid, txg, creation in rec.snapshots]


def check_snapshots(series: str, rec: Recorded) -> None:
    assert _snapshot_rows(fixture(series, 'list_snapshots.txt')) == _expected_snapshot_rows(rec)


def check_snapshots_after_destroy(series: str, rec: Recorded) -> None:
    # the destroy of a held and an unheld snapshot in one call removed neither
    assert _snapshot_rows(fixture(series, 'list_snapshots_after_destroy.txt')) == _expected_snapshot_rows(rec)


def check_datasets(series: str, rec: Recorded) -> None:
    listing = parse.datasets(fixture(series, 'list_datasets.txt'), DATASET_COLUMNS)
    assert [d.unreadable for d in listing] == [None] * len(DATASETS)
    got = [(d.name, d.type, d.written, d.properties['com.sun:auto-snapshot'], d.properties['com.sun:auto-snapshot:daily'],
            d.properties['com.sun:auto-snapshot:frequent']) for d in listing]
    assert got == DATASETS
    assert [d.receive_resume_token for d in listing] == [None] * len(DATASETS)


def check_holds(series: str, rec: Recorded) -> None:
    assert parse.holds(fixture(series, 'holds.txt')) == HOLDS


def check_send_full(series: str, rec: Recorded) -> None:
    assert parse.parse_send_size(fixture(series, 'send_estimate_full.txt')) == rec.send_full


def check_send_incremental(series: str, rec: Recorded) -> None:
    assert parse.parse_send_size(fixture(series, 'send_estimate_incremental.txt')) == rec.send_incremental


def check_destroy_held(series: str, rec: Recorded) -> None:
    rc, stderr = stderr_fixture(series, 'destroy_held.stderr.txt')
    assert (rc, parse.error_kind(stderr)) == (1, 'held')
    names = ['zfs-auto-snap_daily-2026-11-24-0000', 'zfs-auto-snap_hourly-2026-11-25-2300']
    assert parse.refused_snapshots(stderr, 'tank/data/home', names) == {names[0]: rec.held_reason}


def check_destroy_cloned(series: str, rec: Recorded) -> None:
    rc, stderr = stderr_fixture(series, 'destroy_cloned.stderr.txt')
    assert (rc, parse.error_kind(stderr)) == (1, 'cloned')
    assert parse.refused_snapshots(stderr, 'tank/data/db', ['zfs-auto-snap_daily-2026-11-24-0000']) == {
        'zfs-auto-snap_daily-2026-11-24-0000': 'snapshot has dependent clones'}


def check_list_missing(series: str, rec: Recorded) -> None:
    rc, stderr = stderr_fixture(series, 'list_missing.stderr.txt')
    assert (rc, parse.error_kind(stderr)) == (1, 'missing')
    assert parse.missing_datasets(stderr) == ['tank/nonexistent']


def check_snapshot_existing(series: str, rec: Recorded) -> None:
    rc, stderr = stderr_fixture(series, 'snapshot_existing.stderr.txt')
    assert (rc, parse.error_kind(stderr)) == (1, 'exists')
    assert parse.missing_datasets(stderr) == []


CHECKS: dict[str, t.Callable[[str, Recorded], None]] = {
    'version.txt': check_version,
    'list_snapshots.txt': check_snapshots,
    'list_snapshots_after_destroy.txt': check_snapshots_after_destroy,
    'list_datasets.txt': check_datasets,
    'holds.txt': check_holds,
    'send_estimate_full.txt': check_send_full,
    'send_estimate_incremental.txt': check_send_incremental,
    'destroy_held.stderr.txt': check_destroy_held,
    'destroy_cloned.stderr.txt': check_destroy_cloned,
    'list_missing.stderr.txt': check_list_missing,
    'snapshot_existing.stderr.txt': check_snapshot_existing,
}


def recorded_series() -> list[str]:
    return sorted(d[len('zfs-'):] for d in os.listdir(FIXTURES) if d.startswith('zfs-'))


def test_every_recorded_series_has_expectations() -> None:
    assert recorded_series() == sorted(RECORDED)


@pytest.mark.parametrize('series', recorded_series())
def test_every_fixture_has_a_check(series: str) -> None:
    assert sorted(os.listdir(os.path.join(FIXTURES, f'zfs-{series}'))) == sorted(CHECKS)


@pytest.mark.parametrize('series', sorted(RECORDED))
@pytest.mark.parametrize('name', sorted(CHECKS))
def test_fixture_parses_to_recorded_values(series: str, name: str) -> None:
    CHECKS[name](series, RECORDED[series])
