# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import datetime as dt
import typing as t

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._autosnap import autosnap
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._selection import (
    excluded_by_pattern,
    needs_sources,
    odd_values,
    property_columns,
    select,
    wants_label,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import Dataset, ZfsCommandError
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import CommandResult, Zfs
from ansible_collections.pyzfsautosnap.zfs.tests.unit.plugins.module_utils.autosnap_fakes import FakeZfsHost

G = 'com.sun:auto-snapshot'
D = 'com.sun:auto-snapshot:daily'
H = 'com.sun:auto-snapshot:hourly'


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


# ---------------------------------------------------------------------------------------------------------
# Every combination against zfs-auto-snapshot.
#
# SCRIPT is our reading of zfs-auto-snapshot's selection (src/zfs-auto-snapshot.sh), written as rules:
#   S1  It lists `name,com.sun:auto-snapshot,com.sun:auto-snapshot:<label>` with `zfs list -H`: effective
#       values only, so whether a value is local or inherited (or from where) plays no part anywhere.
#   S2  A dataset is "NOAUTO" when either value, lowercased, CONTAINS "false" ('FALSE', 'notfalse' and
#       'true,false' all do). Unset prints '-', which contains neither word.
#   S3  Without --default-exclude the candidates are all datasets not in NOAUTO: any false excludes.
#   S4  With --default-exclude the candidates are the datasets where either value CONTAINS "true", even
#       when they are also in NOAUTO: any true includes.
#   S5  Every candidate gets the snapshot: one that is itself in NOAUTO (only possible under S4) gets a
#       non-recursive one instead of a recursive one, but still gets it. A non-candidate gets none.
#   S6  Anything else ('yes', '', 'on') counts as unset.
# DIFFERENCES are ours, each with its reason; every other row must decide exactly as SCRIPT.

DS_NAME = 'tank/a/b'
SOURCES = {'local': 'local', 'inherited': 'inherited from tank/a'}
VALUES = ['true', 'false', 'TRUE', 'notfalse', '', 'yes', 'true,false']
SETTINGS = [('-', '-')] + [(v, s) for v in VALUES for s in SOURCES]  # unset has no source


def script_takes(generic: str, label: str, default_exclude: bool) -> bool:
    noauto = 'false' in generic.lower() or 'false' in label.lower()  # S2
    if default_exclude:
        return 'true' in generic.lower() or 'true' in label.lower()  # S4, S5
    return not noauto  # S3, S5


def reading(raw: str) -> bool | None:
    # per value, as S2/S6; a value with both words reads as false (difference D2 below)
    if 'false' in raw.lower():
        return False
    return True if 'true' in raw.lower() else None


def difference(generic: tuple[str, str], label: tuple[str, str], default_exclude: bool) -> tuple[bool, str] | None:
    """Our decision where it deliberately differs from the script, with the reason; None where it does not."""
    g, s = reading(generic[0]), reading(label[0])
    script = script_takes(generic[0], label[0], default_exclude)
    ours: bool | None = None
    why = ''
    if g is not None and s is not None and g != s:
        # D1: the script lets the mode settle a disagreement (S3: false wins, S4: true wins), whoever set what
        # where. We follow the explicit intent nearest the dataset, as ZFS inheritance itself does: a value set
        # on the dataset beats one it inherits (a local com.sun:auto-snapshot=false on a scratch dataset under a
        # parent with :daily=true keeps it out; a local :daily=true under an inherited false asks for dailies),
        # and on the same dataset the label's own property is the more specific one.
        label_nearer = label[1] == generic[1] or label[1] == 'local'
        ours = s if label_nearer else g
        why = 'D1: the nearer of two disagreeing settings decides, the label property on a tie'
    elif ('true' in generic[0].lower() and 'false' in generic[0].lower()) or \
            ('true' in label[0].lower() and 'false' in label[0].lower()):
        # D2: a value naming both words is in NOAUTO and, with --default-exclude, a candidate too, so the
        # script snapshots it in that mode only. Such a value states no intent; we read it as false in both
        # modes, consistently, and warn (like any value that is not exactly true or false).
        ours = False  # the other value reads false or unset here: a true one would make it D1
        why = 'D2: a value containing both true and false reads as false'
    if ours is None or ours == script:
        return None
    return ours, why


ROWS = [(g, s, mode) for g in SETTINGS for s in SETTINGS for mode in (False, True)]


def _sources(generic: tuple[str, str], label: tuple[str, str]) -> dict[str, str]:
    return {G: SOURCES.get(generic[1], '-'), D: SOURCES.get(label[1], '-')}


def _row_id(row: tuple[tuple[str, str], tuple[str, str], bool]) -> str:
    (gv, gs), (lv, ls), mode = row
    return f"{gv!r}:{gs}|{lv!r}:{ls}|{'default_exclude' if mode else 'default'}"


@pytest.mark.parametrize('generic, label, default_exclude', ROWS, ids=[_row_id(r) for r in ROWS])
def test_every_combination_against_the_script(generic: tuple[str, str], label: tuple[str, str],
                                              default_exclude: bool) -> None:
    diff = difference(generic, label, default_exclude)
    expected = script_takes(generic[0], label[0], default_exclude) if diff is None else diff[0]
    ok, reason = wants_label(props(generic[0], label[0]), 'daily', default_exclude,
                             dataset=DS_NAME, sources=_sources(generic, label))
    assert ok is expected, diff
    assert bool(reason) is not ok


def test_the_differences_are_few_and_counted() -> None:
    # a changed rule shows up here first: these counts are of rows whose decision differs from the script
    found: dict[str, int] = {}
    for generic, label, mode in ROWS:
        diff = difference(generic, label, mode)
        if diff is not None:
            found[diff[1][:2]] = found.get(diff[1][:2], 0) + 1
    # D1: (3 values reading false x 2 reading true) x 2 orders x 4 source pairs = 48 disagreements; the script
    # decides each by the mode, so each differs from ours in exactly one of the two modes.
    # D2: 'true,false' on either side (2 sources) with the other reading false or unset (11 settings):
    # 2 x 2 x 11 - 4 counted twice = 40, all under default_exclude, the one mode where the script takes them.
    assert found == {'D1': 48, 'D2': 40}
    assert len(ROWS) == 450


# the changed cases, spelled out, with the reason the user reads
@pytest.mark.parametrize('generic, label, default_exclude, included, reason', [
    # an inherited generic false with a local :daily=true: dailies, in both modes
    (('false', 'inherited from tank/a'), ('true', 'local'), True, True, ''),
    (('false', 'inherited from tank/a'), ('true', 'local'), False, True, ''),
    # a local generic false under an inherited :daily=true: none, in both modes
    (('false', 'local'), ('true', 'inherited from tank/a'), True, False,
     'com.sun:auto-snapshot=false (local) is nearer than com.sun:auto-snapshot:daily=true (inherited from tank/a)'),
    (('false', 'local'), ('true', 'inherited from tank/a'), False, False,
     'com.sun:auto-snapshot=false (local) is nearer than com.sun:auto-snapshot:daily=true (inherited from tank/a)'),
    # both on the same dataset: the label's own property
    (('true', 'local'), ('false', 'local'), True, False,
     'com.sun:auto-snapshot:daily=false (local) overrides com.sun:auto-snapshot=true (local)'),
    (('false', 'local'), ('true', 'local'), False, True, ''),
    (('true', 'inherited from tank/a'), ('false', 'inherited from tank/a'), True, False,
     'com.sun:auto-snapshot:daily=false (inherited from tank/a) overrides com.sun:auto-snapshot=true '
     '(inherited from tank/a)'),
    # inherited from different ancestors: the nearer ancestor
    (('false', 'inherited from tank'), ('true', 'inherited from tank/a'), False, True, ''),
    (('true', 'inherited from tank/a'), ('false', 'inherited from tank'), True, True, ''),
    (('true', 'inherited from tank'), ('false', 'inherited from tank/a'), True, False,
     'com.sun:auto-snapshot:daily=false (inherited from tank/a) is nearer than com.sun:auto-snapshot=true '
     '(inherited from tank)'),
    # a received value is set on the dataset itself, like a local one
    (('false', 'received'), ('true', 'inherited from tank/a'), True, False,
     'com.sun:auto-snapshot=false (received) is nearer than com.sun:auto-snapshot:daily=true (inherited from tank/a)'),
    # sources unknown (the dataset vanished between the two listings): no guess either way
    (('false', '-'), ('true', 'local'), True, False,
     'com.sun:auto-snapshot=false (-) and com.sun:auto-snapshot:daily=true (local) disagree and where each is set '
     'could not be read'),
    (('true', None), ('false', None), False, False,
     'com.sun:auto-snapshot=true and com.sun:auto-snapshot:daily=false disagree and where each is set could not be read'),
    # odd values are read as the script reads them, and the reason shows the value
    (('notfalse', 'local'), ('-', '-'), False, False, 'com.sun:auto-snapshot=notfalse (local)'),
    (('-', '-'), ('true,false', 'local'), True, False, 'com.sun:auto-snapshot:daily=true,false (local)'),
    (('yes', 'local'), ('-', '-'), True, False,
     'default_exclude and neither com.sun:auto-snapshot nor com.sun:auto-snapshot:daily is true'),
])
def test_changed_cases_and_their_reasons(generic: tuple[str, str | None], label: tuple[str, str | None],
                                         default_exclude: bool, included: bool, reason: str) -> None:
    sources = {p: s for p, (_v, s) in ((G, generic), (D, label)) if s is not None}
    assert wants_label(props(generic[0], label[0]), 'daily', default_exclude,
                       dataset=DS_NAME, sources=sources) == (included, reason)


@pytest.mark.parametrize('raw, warning', [
    ('notfalse', "is neither true nor false and is read as false, as zfs-auto-snapshot reads it"),
    ('untrue', "is neither true nor false and is read as true, as zfs-auto-snapshot reads it"),
    ('true,false', "is neither true nor false and is read as false, as zfs-auto-snapshot reads it"),
    ('yes', "is neither true nor false and counts as unset"),
    ('', "is neither true nor false and counts as unset"),
    ('TRUE', None),
    (' false ', None),
    ('-', None),
])
def test_odd_values_warn_with_their_reading(raw: str, warning: str | None) -> None:
    ds = Dataset('tank/x', properties={G: raw, D: '-'})
    warnings = odd_values(ds, ['daily'])
    if warning is None:
        assert warnings == []
    else:
        assert warnings == [f'tank/x: {G}={raw!r} {warning}']


def test_needs_sources_only_for_disagreements() -> None:
    datasets = [
        Dataset('tank', properties={G: 'false', D: 'true', H: '-'}),
        Dataset('tank/a', properties={G: 'false', D: 'false', H: '-'}),
        Dataset('tank/b', properties={G: 'true', D: '-', H: 'notfalse'}),
        Dataset('tank/c', properties={G: 'false', D: 'true', H: '-'}, sources={G: 'local', D: 'local'}),
        Dataset('tank/d', properties={G: 'yes', D: 'true', H: 'false'}),
    ]
    assert needs_sources(datasets, ['hourly', 'daily']) == ['tank', 'tank/b']
    assert needs_sources(datasets, ['daily']) == ['tank']


def test_select_reports_the_changed_cases() -> None:
    sources_child = {G: 'inherited from tank/nosnap', D: 'local', H: '-'}
    datasets = [
        Dataset('tank/nosnap', properties={G: 'false', D: '-', H: '-'}, sources={G: 'local', D: '-', H: '-'}),
        Dataset('tank/nosnap/db', properties={G: 'false', D: 'true', H: '-'}, sources=sources_child),
        Dataset('tank/daily', properties={G: '-', D: 'true', H: '-'}),
        Dataset('tank/daily/scratch', properties={G: 'false', D: 'true', H: '-'},
                sources={G: 'local', D: 'inherited from tank/daily', H: '-'}),
    ]
    selected, excluded, warnings = select(datasets, ['hourly', 'daily'], default_exclude=True)
    assert selected == {'hourly': [], 'daily': ['tank/nosnap/db', 'tank/daily']}
    assert excluded == [
        {'name': 'tank/nosnap', 'reason': 'hourly: com.sun:auto-snapshot=false (local); '
                                          'daily: com.sun:auto-snapshot=false (local)'},
        {'name': 'tank/daily/scratch',
         'reason': 'hourly: com.sun:auto-snapshot=false (local); daily: com.sun:auto-snapshot=false (local) is nearer '
                   'than com.sun:auto-snapshot:daily=true (inherited from tank/daily)'},
    ]
    assert warnings == []


def test_each_dataset_is_decided_on_its_own_properties() -> None:
    # The script snapshots a true dataset with `zfs snapshot -r` when nothing below it is false, so with
    # --default-exclude a child whose own value is '' or 'yes' gets snapshots through its parent. Here every
    # dataset is decided on its own values: that child is skipped, with the reason and a warning.
    datasets = [
        Dataset('tank/a', properties={G: 'true', D: '-'}),
        Dataset('tank/a/b', properties={G: 'yes', D: '-'}),
    ]
    selected, excluded, warnings = select(datasets, ['daily'], default_exclude=True)
    assert selected == {'daily': ['tank/a']}
    reason = 'daily: default_exclude and neither com.sun:auto-snapshot nor com.sun:auto-snapshot:daily is true'
    assert excluded == [{'name': 'tank/a/b', 'reason': reason}]
    assert len(warnings) == 1 and 'tank/a/b' in warnings[0]


class SourcesHost(FakeZfsHost):
    """The fake host, answering also `zfs get -H -o name,property,source` as OpenZFS does."""

    def run(self, argv: t.Sequence[str], *, check: bool = True) -> CommandResult:
        if list(argv[1:5]) != ['get', '-H', '-o', 'name,property,source']:
            return super().run(argv, check=check)
        self.calls.append(list(argv))
        lines, errs = [], ''
        for ds in argv[6:]:
            if ds not in self.datasets:
                errs += f"cannot open '{ds}': dataset does not exist\n"
                continue
            for prop in argv[5].split(','):
                parts = ds.split('/')
                source = '-'
                for i in range(len(parts), 0, -1):
                    if prop in self.datasets['/'.join(parts[:i])].props:
                        source = 'local' if i == len(parts) else f"inherited from {'/'.join(parts[:i])}"
                        break
                lines.append(f'{ds}\t{prop}\t{source}\n')
        return CommandResult(list(argv), 1 if errs else 0, ''.join(lines), errs)


NOW = dt.datetime(2024, 5, 8, 12, 34, 17, tzinfo=dt.timezone.utc)


def _autosnap(host: FakeZfsHost, tmp_path: t.Any, **kwargs: t.Any) -> dict[str, t.Any]:
    return autosnap(host, roots=['tank'], policy={'hourly': 3, 'daily': 3}, now=NOW, check_mode=True,
                    lock_dir=str(tmp_path / 'locks'), **kwargs)


def test_a_local_label_true_under_an_inherited_false_takes_that_label(tmp_path: t.Any) -> None:
    host = SourcesHost(['tank', 'tank/nosnap', 'tank/nosnap/db', 'tank/daily', 'tank/daily/scratch'],
                       clock=int(NOW.timestamp()))
    host.datasets['tank/nosnap'].props[G] = 'false'
    host.datasets['tank/nosnap/db'].props[D] = 'true'
    host.datasets['tank/daily'].props[D] = 'true'
    host.datasets['tank/daily/scratch'].props[G] = 'false'
    for default_exclude in (False, True):
        host.calls.clear()
        result = _autosnap(host, tmp_path, default_exclude=default_exclude)
        daily = [n.split('@')[0] for n in result['created'] if '_daily-' in n]
        hourly = [n.split('@')[0] for n in result['created'] if '_hourly-' in n]
        assert daily == (['tank/daily', 'tank/nosnap/db'] if default_exclude else ['tank', 'tank/daily', 'tank/nosnap/db'])
        assert hourly == ([] if default_exclude else ['tank', 'tank/daily'])
        excluded = {e['name']: e['reason'] for e in result['excluded']}
        assert excluded['tank/daily/scratch'].endswith(
            'daily: com.sun:auto-snapshot=false (local) is nearer than com.sun:auto-snapshot:daily=true '
            '(inherited from tank/daily)')
        # the sources are asked for once, and only for the two datasets whose properties disagree
        gets = [c for c in host.calls if c[1] == 'get']
        assert gets == [['zfs', 'get', '-H', '-o', 'name,property,source', f'{G},{H},{D}',
                         'tank/daily/scratch', 'tank/nosnap/db']]


def test_no_sources_asked_when_nothing_disagrees(tmp_path: t.Any) -> None:
    host = SourcesHost(['tank', 'tank/tmp'], clock=int(NOW.timestamp()))
    host.datasets['tank/tmp'].props[G] = 'false'
    _autosnap(host, tmp_path)
    assert not [c for c in host.calls if c[1] == 'get']


def test_property_sources_leaves_out_vanished_datasets_and_raises_on_other_failures() -> None:
    host = SourcesHost(['tank', 'tank/a'])
    host.datasets['tank'].props[G] = 'false'
    zfs = Zfs(host)
    assert zfs.property_sources(['tank/a', 'tank/gone'], [G, D]) == {
        'tank/a': {G: 'inherited from tank', D: '-'}}

    class Broken(SourcesHost):
        def run(self, argv: t.Sequence[str], *, check: bool = True) -> CommandResult:
            return CommandResult(list(argv), 1, '', 'permission denied\n')

    with pytest.raises(ZfsCommandError, match='permission denied'):
        Zfs(Broken(['tank'])).property_sources(['tank'], [G])
