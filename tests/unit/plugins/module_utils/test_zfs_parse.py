# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Parsers on output recorded from real OpenZFS 2.1, 2.3 and 2.4 (tests/testbed/record_fixtures.py)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _zfs_parse as parse
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import SNAPSHOT_COLUMNS

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')
SERIES = ['2.1', '2.3', '2.4']
DATASET_COLUMNS = ['name', 'type', 'written', 'receive_resume_token', 'com.sun:auto-snapshot',
                   'com.sun:auto-snapshot:daily', 'com.sun:auto-snapshot:frequent']


def fixture(series: str, name: str) -> str:
    with open(os.path.join(FIXTURES, f'zfs-{series}', name)) as fh:
        return fh.read()


@pytest.mark.parametrize('series', SERIES)
def test_version(series):
    features = parse.features_from_version(fixture(series, 'version.txt'))
    assert features.version is not None and features.version.startswith(series + '.')
    assert tuple(int(p) for p in features.version.split('.')[:2]) == tuple(int(p) for p in series.split('.'))
    assert not features.legacy


@pytest.mark.parametrize('series', SERIES)
def test_snapshots_and_bookmarks(series):
    snaps = parse.snapshots(fixture(series, 'list_snapshots.txt'), SNAPSHOT_COLUMNS)
    by_name = {s.full_name: s for s in snaps}
    home_old = by_name['tank/data/home@zfs-auto-snap_daily-2026-11-24-0000']
    assert home_old.userrefs == 1 and home_old.held
    cloned = by_name['tank/data/db@zfs-auto-snap_daily-2026-11-24-0000']
    assert cloned.clones == ('tank/dbclone',)
    bookmark = by_name['tank/data/home#zfs-auto-snap_daily-2026-11-25-0000']
    snapshot = by_name['tank/data/home@zfs-auto-snap_daily-2026-11-25-0000']
    assert bookmark.is_bookmark and not snapshot.is_bookmark
    # a bookmark carries the guid and txg of its snapshot, which is what incremental sends need
    assert (bookmark.guid, bookmark.createtxg) == (snapshot.guid, snapshot.createtxg)
    assert bookmark.userrefs == 0 and bookmark.clones == ()
    assert all(s.guid > 0 and s.createtxg > 0 and s.creation > 1_700_000_000 for s in snaps)
    home = [s for s in snaps if s.dataset == 'tank/data/home' and not s.is_bookmark]
    # creation order is createtxg order, whatever the names say
    assert [s.name for s in sorted(home, key=lambda s: s.createtxg)] == [
        'zfs-auto-snap_daily-2026-11-24-0000', 'zfs-auto-snap_hourly-2026-11-25-2300', 'manual',
        'zfs-auto-snap_daily-2026-11-25-0000']
    # guids are unique per snapshot even across datasets snapshotted together
    assert len({s.guid for s in snaps if not s.is_bookmark}) == len([s for s in snaps if not s.is_bookmark])


@pytest.mark.parametrize('series', SERIES)
def test_datasets_with_inherited_user_properties(series):
    datasets = {d.name: d for d in parse.datasets(fixture(series, 'list_datasets.txt'), DATASET_COLUMNS)}
    assert datasets['tank/data/vol'].type == 'volume'
    assert datasets['tank/scratch'].properties['com.sun:auto-snapshot'] == 'false'
    assert datasets['tank/data/db'].properties['com.sun:auto-snapshot:frequent'] == 'false'
    assert datasets['tank/data/home'].properties['com.sun:auto-snapshot:daily'] == 'true'
    assert datasets['tank/data'].properties['com.sun:auto-snapshot'] == '-'
    assert all(d.receive_resume_token is None for d in datasets.values())
    assert all(isinstance(d.written, int) for d in datasets.values())


@pytest.mark.parametrize('series', SERIES)
def test_holds(series):
    holds = parse.holds(fixture(series, 'holds.txt'))
    assert ('tank/data/home@zfs-auto-snap_daily-2026-11-24-0000', 'keep') in holds
    assert ('tank/data/home@zfs-auto-snap_daily-2026-11-25-0000', 'pyzfsautosnap:zfsbackups') in holds


@pytest.mark.parametrize('series,name,needle', [
    # the reason for a held snapshot changed wording between the series; the name is always there
    ('2.1', 'destroy_held.stderr.txt', 'tank/data/home@zfs-auto-snap_daily-2026-11-24-0000: dataset is busy'),
    ('2.3', 'destroy_held.stderr.txt', "tank/data/home@zfs-auto-snap_daily-2026-11-24-0000: it's being held"),
    ('2.4', 'destroy_held.stderr.txt', "tank/data/home@zfs-auto-snap_daily-2026-11-24-0000: it's being held"),
    ('2.1', 'destroy_cloned.stderr.txt', "'tank/data/db@zfs-auto-snap_daily-2026-11-24-0000': snapshot has dependent clones"),
    ('2.3', 'destroy_cloned.stderr.txt', "'tank/data/db@zfs-auto-snap_daily-2026-11-24-0000': snapshot has dependent clones"),
    ('2.4', 'destroy_cloned.stderr.txt', "'tank/data/db@zfs-auto-snap_daily-2026-11-24-0000': snapshot has dependent clones"),
    ('2.1', 'list_missing.stderr.txt', "cannot open 'tank/nonexistent': dataset does not exist"),
    ('2.3', 'list_missing.stderr.txt', "cannot open 'tank/nonexistent': dataset does not exist"),
    ('2.4', 'list_missing.stderr.txt', "cannot open 'tank/nonexistent': dataset does not exist"),
    ('2.1', 'snapshot_existing.stderr.txt', 'dataset already exists'),
    ('2.3', 'snapshot_existing.stderr.txt', 'dataset already exists'),
    ('2.4', 'snapshot_existing.stderr.txt', 'dataset already exists'),
])
def test_recorded_errors_name_the_snapshot(series, name, needle):
    text = fixture(series, name)
    assert text.startswith('rc=1\n')
    assert needle in text


@pytest.mark.parametrize('series', SERIES)
def test_all_or_nothing_destroy_left_every_snapshot(series):
    before = fixture(series, 'list_snapshots.txt')
    after = fixture(series, 'list_snapshots_after_destroy.txt')
    assert before == after


@pytest.mark.parametrize('line,expected', [
    ('', []),
    ('tank@a\t1\t2\t3\t0\t-\n', [('tank', 'a', 1, 2, 3, 0, ())]),
    ('tank/x@b\t18446744073709551615\t9\t1\t2\ttank/c1,tank/c2\n', [('tank/x', 'b', 2 ** 64 - 1, 9, 1, 2, ('tank/c1', 'tank/c2'))]),
    ('tank/x#bm\t5\t9\t1\t-\t-\n', [('tank/x', 'bm', 5, 9, 1, 0, ())]),
])
def test_snapshot_rows(line, expected):
    got = [(s.dataset, s.name, s.guid, s.createtxg, s.creation, s.userrefs, s.clones) for s in parse.snapshots(line, SNAPSHOT_COLUMNS)]
    assert got == expected


def test_wrong_column_count_is_an_error():
    with pytest.raises(ValueError, match='expected 6 columns'):
        parse.snapshots('tank@a\t1\t2\n', SNAPSHOT_COLUMNS)


@pytest.mark.parametrize('value,expected', [('0', 0), ('123', 123), ('-', None), ('', None), ('1.5K', None)])
def test_to_int(value, expected):
    assert parse.to_int(value) == expected


@pytest.mark.parametrize('stderr,expected', [
    ("invalid option 'p'\nusage:\n\tlist [-rH]", True),
    ("cannot open 'tank/x': dataset does not exist", False),
])
def test_usage_error(stderr, expected):
    assert parse.is_usage_error(stderr) is expected


def test_snapshots_from_get_legacy():
    out = ('tank/a@s1\tguid\t11\n'
           'tank/a@s1\tcreatetxg\t5\n'
           'tank/a@s1\tcreation\t1700000000\n'
           'tank/a@s1\tuserrefs\t1\n')
    (snap,) = parse.snapshots_from_get(out)
    assert (snap.full_name, snap.guid, snap.createtxg, snap.creation, snap.userrefs) == ('tank/a@s1', 11, 5, 1700000000, 1)


ODD_COLS = ['name', 'type', 'com.sun:auto-snapshot', 'com.sun:auto-snapshot:daily']


@pytest.mark.parametrize('output,expected', [
    # a newline in a value continues the row on the next line: read exactly
    ('tank\tfilesystem\t-\t-\ntank/a\tfilesystem\ttr\nue\t-\ntank/b\tvolume\t-\tfalse\n',
     [('tank', None, '-'), ('tank/a', None, 'tr\nue'), ('tank/b', None, '-')]),
    # a tab in a value: the row is known, its values are not
    ('tank\tfilesystem\t-\t-\ntank/a\tfilesystem\tt\true\t-\ntank/b\tvolume\t-\tfalse\n',
     [('tank', None, '-'), ('tank/a', 'a user property value holds a tab', '-'), ('tank/b', None, '-')]),
])
def test_odd_property_values_are_read_or_marked(output: str, expected: list[tuple[str, str | None, str]]) -> None:
    got = parse.datasets(output, ODD_COLS)
    assert [(d.name, d.unreadable, d.properties['com.sun:auto-snapshot']) for d in got] == expected
    assert [d.type for d in got] == ['filesystem', 'filesystem', 'volume']


@pytest.mark.parametrize('output', [
    # tab and newline together: where the next row begins cannot be told
    'tank\tfilesystem\t-\t-\ntank/a\tfilesystem\tx\n\t\t\ntank/evil\tfilesystem\ttrue\ttrue\n',
    # a value forging the row of another dataset
    'tank\tfilesystem\t-\t-\ntank/a\tfilesystem\t-\tx\ntank\tfilesystem\ttrue\ttrue\n',
    # cut output
    'tank\tfilesystem\t-\n',
])
def test_ambiguous_listing_is_an_error_not_a_guess(output: str) -> None:
    with pytest.raises(parse.AmbiguousOutput):
        parse.datasets(output, ODD_COLS)


ODD_COLUMNS = ['name', 'type', 'written', 'com.sun:auto-snapshot', 'com.sun:auto-snapshot:daily']


def test_native_columns_only_still_demand_the_exact_column_count():
    with pytest.raises(parse.AmbiguousOutput, match='cannot read the zfs listing'):
        parse.datasets('tank\tfilesystem\t0\n', ['name', 'type', 'written', 'encryption'])


@pytest.mark.parametrize('stderr,kind', [
    ("cannot destroy snapshot tank@a: dataset is busy", 'held'),
    ("cannot destroy snapshot tank@a: it's being held. Run 'zfs holds -r tank@a' to see holders.", 'held'),
    ("cannot destroy 'tank@a': snapshot has dependent clones", 'cloned'),
    ("cannot open 'tank/x': dataset does not exist", 'missing'),
    ('could not find any snapshots to destroy; check snapshot names.', 'missing'),
    ("cannot create snapshot 'tank@a': dataset already exists", 'exists'),
    ("cannot create snapshot 'tank@a': pool I/O is currently suspended", None),
    ('', None),
])
def test_error_kind(stderr, kind):
    assert parse.error_kind(stderr) == kind


def test_a_legacy_listing_without_raw_numbers_still_parses():
    (ds,) = parse.datasets('tank/a\tfilesystem\t1.5K\ttrue\t-\n', ODD_COLUMNS)
    assert (ds.name, ds.written, ds.properties['com.sun:auto-snapshot']) == ('tank/a', None, 'true')
