# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Fixtures that boot real OpenZFS guests (see tests/testbed/vm.py) and run playbooks against them.

Guests are session-wide and booted only when a selected test needs them: tests of the ``single``
shape run first, and its guest stops after the last of them, before the ``pair`` guests boot.
``--shape single|pair`` selects one shape (tests that need no guest go with ``single``), which is how
``tests/utils/integration_matrix.py`` runs the shapes and series of ``make test`` side by side.

Which tests run on which series (``INTEGRATION_SUBSET``):
- ``full``: every test;
- ``smoke``: the tests marked ``smoke`` (each module, role and shape once);
- ``auto`` (default): ``full`` on the series in ``FULL_SERIES``, ``smoke`` on the others.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'testbed'))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vm import Testbed  # noqa: E402

# the newest series gets the whole suite; see README.md, "The test bed"
FULL_SERIES = ('2.4',)
SUBSETS = ('auto', 'smoke', 'full')
SHAPE_FIXTURES = {'bed': 'single', 'pair': 'pair'}
_LAST_USER = pytest.StashKey[dict]()  # shape -> nodeid of the last selected test that uses it
_RUNNING = pytest.StashKey[dict]()  # shape -> its running Testbed

# Features of the guest's OpenZFS that some tests need, probed at run time (a shell test in the guest,
# true when the feature is there) rather than inferred from version numbers.
FEATURE_PROBES = {
    # `zfs allow` lists only some permissions in its usage (2.4.4 leaves receive:append out): try to grant it
    'receive:append': 'd=tank/pzas-probe-$$; zfs create "$d" || exit 2; '
                      'zfs allow -u nobody receive:append "$d"; rc=$?; zfs destroy "$d"; exit $rc',
}


def series() -> str:
    return os.environ.get('ZFS_SERIES', '2.4')


def subset() -> str:
    chosen = os.environ.get('INTEGRATION_SUBSET', 'auto') or 'auto'
    if chosen not in SUBSETS:
        raise pytest.UsageError(f"INTEGRATION_SUBSET must be one of {', '.join(SUBSETS)}, not {chosen!r}")
    if chosen == 'auto':
        return 'full' if series() in FULL_SERIES else 'smoke'
    return chosen


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption('--shape', choices=('all', *SHAPE_FIXTURES.values()), default='all',
                     help='only the tests of one guest shape (those that need no guest go with single); '
                          'tests/utils/integration_matrix.py runs the shapes side by side')


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line('markers', 'smoke: part of the subset run on every OpenZFS series (each module, role and shape once)')
    config.addinivalue_line('markers', 'requires_zfs(feature): skip unless the guest OpenZFS has the feature '
                                       f"(one of {', '.join(FEATURE_PROBES)})")


def pytest_report_header(config: pytest.Config) -> str:
    return f'OpenZFS series {series()}, subset {subset()} (INTEGRATION_SUBSET={os.environ.get("INTEGRATION_SUBSET", "auto")})'


def _shapes(item: pytest.Item) -> set[str]:
    return {shape for fixture, shape in SHAPE_FIXTURES.items() if fixture in getattr(item, 'fixturenames', ())}


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker('requires_zfs')
        if marker and (len(marker.args) != 1 or marker.args[0] not in FEATURE_PROBES):
            raise pytest.UsageError(f'{item.nodeid}: requires_zfs takes one of {", ".join(FEATURE_PROBES)}, not {marker.args}')
    wanted_shape = config.getoption('--shape')

    def selected(item: pytest.Item) -> bool:
        if subset() == 'smoke' and item.get_closest_marker('smoke') is None:
            return False
        return wanted_shape == 'all' or wanted_shape in (_shapes(item) or {'single'})

    deselected = [item for item in items if not selected(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if selected(item)]
    # single-guest tests first (the test bed's own test leading), then the pair: one shape at a time
    order = {id(item): index for index, item in enumerate(items)}
    items.sort(key=lambda item: ('pair' in _shapes(item), item.module.__name__ != 'test_testbed', order[id(item)]))
    last_user: dict[str, str] = {}
    for item in items:
        for shape in _shapes(item):
            last_user[shape] = item.nodeid
    config.stash[_LAST_USER] = last_user


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    yield
    # after the test's own fixtures are gone: stop a shape no later test needs
    running: dict[str, Testbed] = item.config.stash.get(_RUNNING, {})
    for shape, nodeid in item.config.stash.get(_LAST_USER, {}).items():
        if nodeid == item.nodeid and shape in running:
            running.pop(shape).stop()


def _start(config: pytest.Config, shape: str):
    with Testbed(shape) as testbed:
        config.stash.setdefault(_RUNNING, {})[shape] = testbed
        for name in testbed.guests:
            version = testbed.ssh(name, ['zfs', 'version']).stdout.split()
            print(f"\n[testbed] guest {name} runs {' '.join(version)} ({testbed.accel})")
        yield testbed
        config.stash[_RUNNING].pop(shape, None)


@pytest.fixture(scope='session')
def bed(pytestconfig):
    """One guest, pools ``tank`` and ``zfsbackups``, SSH to itself; stopped after its last test, also on Ctrl-C."""
    yield from _start(pytestconfig, 'single')


@pytest.fixture(scope='session')
def pair(pytestconfig):
    """Guests ``client`` (pool ``tank``) and ``target`` (pool ``zfsbackups``) on a private link."""
    yield from _start(pytestconfig, 'pair')


@dataclasses.dataclass(frozen=True)
class ZfsFeatures:
    """What the guests' OpenZFS offers: its version and the probed FEATURE_PROBES."""

    version: str
    present: frozenset[str]

    def __contains__(self, feature: object) -> bool:
        return feature in self.present


def probe_features(testbed: Testbed) -> ZfsFeatures:
    guest = next(iter(testbed.guests))
    out = testbed.ssh(guest, ['zfs', 'version']).stdout
    match = re.search(r'^zfs-(\S+)', out, re.M)
    present = {name for name, probe in FEATURE_PROBES.items() if testbed.sh(guest, probe, check=False).returncode == 0}
    return ZfsFeatures(match.group(1) if match else out.strip(), frozenset(present))


_FEATURES = pytest.StashKey[ZfsFeatures]()


@pytest.fixture
def zfs_features(request) -> ZfsFeatures:
    """Features of the OpenZFS the test's guests run (all guests of a series run the same build)."""
    config = request.config
    if _FEATURES not in config.stash:
        fixture = 'pair' if 'pair' in request.fixturenames and 'bed' not in request.fixturenames else 'bed'
        config.stash[_FEATURES] = probe_features(request.getfixturevalue(fixture))
        print(f'\n[testbed] OpenZFS {config.stash[_FEATURES].version} has: {", ".join(sorted(config.stash[_FEATURES].present)) or "none of"} '
              f'({", ".join(FEATURE_PROBES)} probed)')
    return config.stash[_FEATURES]


@pytest.fixture(autouse=True)
def _required_zfs_features(request):
    marker = request.node.get_closest_marker('requires_zfs')
    if marker:
        features = request.getfixturevalue('zfs_features')
        if marker.args[0] not in features:
            pytest.skip(f'OpenZFS {features.version} has no {marker.args[0]}')


@pytest.fixture
def dataset(bed, request):
    """A fresh dataset tree under tank for one test, destroyed afterwards with its replicas."""
    name = 'tank/' + request.node.name.replace('[', '_').replace(']', '').replace('-', '_')[:60]
    bed.ssh('zfsguest', ['zfs', 'create', '-p', name])
    yield name
    for root in (name, 'zfsbackups/' + name.split('/', 1)[1]):
        bed.sh('zfsguest', f'zfs list -H -o name {root} >/dev/null 2>&1 || exit 0; '
                           f'zfs list -H -t snapshot -o name -r {root} | while read -r s; do '
                           f'zfs holds -H "$s" | while read -r n tag rest; do zfs release "$tag" "$s"; done; done; '
                           f'zfs destroy -R -f {root}', check=False)
