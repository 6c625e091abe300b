# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import importlib
import typing as t

import pytest

from ansible.module_utils import _internal

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import (
    _autosnap_options, _cli, _replicate_options, _retain_options, _serve_options)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ValidationError

# Importing controller code (ansible.errors) switches module warnings over to the controller's display for the
# rest of the process, which the module tests would notice: the filters are imported per test, and the switch undone.
_FILTERS = 'ansible_collections.pyzfsautosnap.zfs.plugins.filter'
AnsibleFilterError: t.Any = None
autosnap_args: t.Any = None
replicate_args: t.Any = None
serve_args: t.Any = None
retain_args: t.Any = None


@pytest.fixture(autouse=True)
def filters() -> t.Iterator[None]:
    global AnsibleFilterError, autosnap_args, replicate_args, serve_args, retain_args  # noqa: PLW0603 - see above
    was_controller = _internal.is_controller
    try:
        AnsibleFilterError = importlib.import_module('ansible.errors').AnsibleFilterError
        autosnap_args = importlib.import_module(f'{_FILTERS}.autosnap_args').autosnap_args
        replicate_args = importlib.import_module(f'{_FILTERS}.replicate_args').replicate_args
        serve_args = importlib.import_module(f'{_FILTERS}.serve_args').serve_args
        retain_args = importlib.import_module(f'{_FILTERS}.retain_args').retain_args
        yield
    finally:
        _internal.is_controller = was_controller


def test_filters_are_registered() -> None:
    assert importlib.import_module(f'{_FILTERS}.autosnap_args').FilterModule().filters() == {'autosnap_args': autosnap_args}
    assert importlib.import_module(f'{_FILTERS}.replicate_args').FilterModule().filters() == {'replicate_args': replicate_args}
    assert importlib.import_module(f'{_FILTERS}.serve_args').FilterModule().filters() == {'serve_args': serve_args}
    assert importlib.import_module(f'{_FILTERS}.retain_args').FilterModule().filters() == {'retain_args': retain_args}


def test_autosnap_args() -> None:
    assert autosnap_args({'roots': ['tank/a'], 'label': 'daily', 'keep': 7}) == [
        'autosnap', '--root=tank/a', '--policy=daily=7']
    runs = autosnap_args({'roots': ['tank'], 'policy': {'weekly': 4, 'hourly': '24'}}, per_label=True,
                         extra_args=['--zfs-path=/sbin/zfs'])
    assert list(runs) == ['hourly', 'weekly']
    assert runs['weekly'] == ['autosnap', '--root=tank', '--label=weekly', '--keep=4', '--zfs-path=/sbin/zfs']
    # what the timers run parses on the command line
    for argv in runs.values():
        _cli.build_parser().parse_args(argv)


def test_replicate_args() -> None:
    assert replicate_args({'datasets': ['tank/home'], 'target_host': 'backup', 'target_root': 'zfsbackups/c1',
                           'recursive': True, 'target_retention': {'daily': '7'}}, extra_args=['--rate-limit=5M']) == [
        'replicate', 'tank/home', '--target-root=zfsbackups/c1', '--target-host=backup', '--recursive',
        '--target-retention=daily=7', '--rate-limit=5M']


def test_serve_args() -> None:
    argv = serve_args({'roots': ['zfsbackups/c1', 'zfsbackups/c1'], 'send': 'yes'})
    assert argv == ['serve', '--root=zfsbackups/c1', '--send']
    # what authorized_keys will run parses on the command line
    _cli.build_parser().parse_args(argv)


def test_retain_args() -> None:
    argv = retain_args({'roots': ['zfsbackups/c1'], 'policy': {'weekly': '8', 'daily': 31}, 'max_destroy': 500})
    assert argv == ['retain', '--root=zfsbackups/c1', '--policy=daily=31', '--policy=weekly=8', '--max-destroy=500']
    _cli.build_parser().parse_args(argv)


@pytest.mark.parametrize('call, normalise, raw', [
    ('autosnap_args', _autosnap_options.normalise, {'roots': ['tank/a;rm -rf /']}),
    ('autosnap_args', _autosnap_options.normalise, {'roots': []}),
    ('autosnap_args', _autosnap_options.normalise, {'roots': ['tank'], 'policy': {}}),
    ('autosnap_args', _autosnap_options.normalise, {'roots': ['tank'], 'policy': {'daily': -1}}),
    ('replicate_args', _replicate_options.normalise, {'datasets': ['tank/a'], 'target_root': 'z/c', 'labels': []}),
    ('replicate_args', _replicate_options.normalise, {'datasets': ['tank/a'], 'target_root': 'z/c', 'target_host': 'a b'}),
    ('serve_args', _serve_options.normalise, {'roots': []}),
    ('serve_args', _serve_options.normalise, {}),
    ('serve_args', _serve_options.normalise, {'roots': ['zfsbackups/c1"; id #']}),
    ('serve_args', _serve_options.normalise, {'roots': ['zfsbackups', 'zfsbackups/c1']}),
    ('retain_args', _retain_options.normalise, {'roots': ['zfsbackups/c1'], 'policy': {}}),
    ('retain_args', _retain_options.normalise, {'roots': ['zfsbackups/c1'], 'policy': {'daily': 7}, 'max_destroy': 0}),
])
def test_bad_options_fail_with_the_engines_message(call: str, normalise: t.Callable[..., t.Any],
                                                   raw: dict[str, t.Any]) -> None:
    with pytest.raises(ValidationError) as engine:
        normalise(raw)
    with pytest.raises(AnsibleFilterError) as info:
        globals()[call](raw)
    assert info.value.message == str(engine.value)


@pytest.mark.parametrize('call, raw, extra', [
    ('autosnap_args', {'roots': ['tank']}, ['--frobnicate']),
    ('autosnap_args', {'roots': ['tank'], 'label': 'daily', 'keep': 1}, ['--label=weekly']),
    ('replicate_args', {'datasets': ['tank/a'], 'target_root': 'z/c'}, ['--rate-limit=fast']),
])
def test_extra_args_are_checked(call: str, raw: dict[str, t.Any], extra: list[str]) -> None:
    with pytest.raises(AnsibleFilterError):
        globals()[call](raw, extra_args=extra)


def test_not_a_mapping() -> None:
    with pytest.raises(AnsibleFilterError, match='mapping'):
        autosnap_args(['tank'])
