# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ValidationError
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._validate import (
    reject_shell_metachars,
    unique,
    validate_dataset_name,
    validate_int,
    validate_lock_key,
    validate_pool_name,
    validate_snapshot_component,
)

SHELL_BAD = [';', '&', '|', '<', '>', '$', '`', '\\', '"', "'", '*', '?', '[', ']', '(', ')', '{', '}', '!', '#', '~',
             ' ', '\t', '\n', '\x00', '\x7f']


@pytest.mark.parametrize('ch', SHELL_BAD)
def test_shell_metachars_rejected_everywhere(ch: str) -> None:
    for check in (reject_shell_metachars, validate_dataset_name, validate_pool_name, validate_snapshot_component):
        with pytest.raises(ValidationError):
            check(f'tank{ch}x')


@pytest.mark.parametrize('name', ['tank', 'tank/home', 'tank/home/alice', 'rpool/ROOT/ubuntu_abc123', 'zfsbackups/host-1/tank',
                                  'p1/a.b/c:d/e-f_g', 'tank/' + 'x' * 250])
def test_valid_dataset_names(name: str) -> None:
    assert validate_dataset_name(name) == name


@pytest.mark.parametrize('name, message', [
    ('', 'empty'),
    ('tank/', 'empty component'),
    ('tank//a', 'empty component'),
    ('/tank', 'must not be empty'),
    ('tank/./a', "component '.'"),
    ('tank/../etc', "component '..'"),
    ('tank@snap', 'names a snapshot'),
    ('tank/a%b', 'may only hold'),
    ('tank/a,b', 'may only hold'),
    ('1tank', 'must start with a letter'),
    ('mirror', 'reserved'),
    ('raidz1/a', 'reserved'),
    ('draid', 'reserved'),
    ('spare-pool', 'reserved'),
    ('log', 'reserved'),
    ('tank/' + 'x' * 251, 'longer than 255'),
    ('tank/a b', 'forbidden characters'),
    ('tank/$(reboot)', 'forbidden characters'),
])
def test_invalid_dataset_names(name: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace('(', r'\(').replace('.', r'\.').replace('$', r'\$')):
        validate_dataset_name(name)


def test_non_string_is_rejected() -> None:
    with pytest.raises(ValidationError, match='must be a string'):
        validate_dataset_name(42)  # type: ignore[arg-type]


@pytest.mark.parametrize('key, ok', [('tank', True), ('zfsbackups', True), ('host.example:tank', True), ('a+b', True),
                                     ('', False), ('.hidden', False), ('../etc/passwd', False), ('a/b', False), ('a b', False)])
def test_lock_keys(key: str, ok: bool) -> None:
    if ok:
        assert validate_lock_key(key) == key
    else:
        with pytest.raises(ValidationError):
            validate_lock_key(key)


@pytest.mark.parametrize('value, minimum, expected', [(3, 1, 3), ('7', 1, 7), (' 12 ', 0, 12), (0, 0, 0)])
def test_validate_int_accepts(value: object, minimum: int, expected: int) -> None:
    assert validate_int(value, 'keep', minimum) == expected


@pytest.mark.parametrize('value, minimum, message', [(0, 1, '>= 1'), (-3, 1, '>= 1'), ('-1', 1, '>= 1'), (1.5, 1, 'integer'),
                                                     (True, 1, 'integer'), ('seven', 1, 'integer'), (None, 1, 'integer'),
                                                     ('1.0', 1, 'integer')])
def test_validate_int_rejects(value: object, minimum: int, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_int(value, 'keep', minimum)


def test_unique_keeps_first_order() -> None:
    assert unique(['b', 'a', 'b', 'c', 'a']) == ['b', 'a', 'c']
