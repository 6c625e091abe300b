# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The hand-written DOCUMENTATION of each module says what its options schema says."""

from __future__ import annotations

import types
import typing as t

import pytest
import yaml

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _autosnap_options, _replicate_options
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._options import Schema, argument_spec
from ansible_collections.pyzfsautosnap.zfs.plugins.modules import zfs_autosnap, zfs_replicate

MODULES = [(zfs_autosnap, _autosnap_options.SCHEMA), (zfs_replicate, _replicate_options.SCHEMA)]


def documented(module: types.ModuleType) -> dict[str, dict[str, t.Any]]:
    return yaml.safe_load(module.DOCUMENTATION)['options']


@pytest.mark.parametrize('module, schema', MODULES, ids=['zfs_autosnap', 'zfs_replicate'])
def test_documentation_matches_the_schema(module: types.ModuleType, schema: Schema) -> None:
    doc = documented(module)
    assert sorted(doc) == sorted(schema.names)
    for option in schema.options:
        entry = doc[option.name]
        assert entry['type'] == option.type, option.name
        assert entry.get('elements') == option.elements, option.name
        assert entry.get('default') == option.default, option.name
        assert entry.get('choices') == (list(option.choices) if option.choices else None), option.name
        assert entry.get('required', False) == option.required, option.name
        # DOCUMENTATION has no no_log key: a secret option says so in its description
        description = ' '.join(entry['description'] if isinstance(entry['description'], list) else [entry['description']])
        assert ('never logged' in description) == option.no_log, option.name


@pytest.mark.parametrize('module, schema', MODULES, ids=['zfs_autosnap', 'zfs_replicate'])
def test_argument_spec_comes_from_the_schema(module: types.ModuleType, schema: Schema) -> None:
    assert module.argument_spec() == argument_spec(schema)


def test_the_check_fails_on_disagreement(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = yaml.safe_load(zfs_autosnap.DOCUMENTATION)
    doc['options']['prefix']['default'] = 'other'
    monkeypatch.setattr(zfs_autosnap, 'DOCUMENTATION', yaml.safe_dump(doc))
    with pytest.raises(AssertionError, match='prefix'):
        test_documentation_matches_the_schema(zfs_autosnap, _autosnap_options.SCHEMA)
