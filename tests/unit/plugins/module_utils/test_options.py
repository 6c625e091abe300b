# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import argparse
import dataclasses
import io
import typing as t

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _autosnap_options, _cli, _replicate_options
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._naming import DEFAULT_POLICY
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._options import (
    Option, Schema, add_arguments, argument_spec, from_namespace, module_kwargs, parse_argv, to_argv, validate,
)
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._replicate_options import ReplicateParams
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ValidationError
from ansible_collections.pyzfsautosnap.zfs.tests.unit.plugins.module_utils.autosnap_fakes import FakeZfsHost


def _upper(value: str, what: str) -> str:
    if value != value.lower():
        raise ValidationError(f'{what} must be lower case, got {value!r}')
    return value.upper()


SCHEMA = Schema(
    name='demo',
    options=(
        Option('names', 'list', elements='str', positional=True, required=True, empty='give at least one name'),
        Option('flag', 'bool', default=False),
        Option('on', 'bool', default=True),
        Option('count', 'int', default=3),
        Option('ratio', 'float', default=1.5),
        Option('word', 'str', choices=('a', 'b'), default='a'),
        Option('picks', 'list', elements='str', choices=('x', 'y'), flags=('--pick',), empty='leave it out for all'),
        Option('pairs', 'dict', default={}, flags=('--pair',)),
        Option('shout', 'str', validator=_upper),
        Option('secret', 'str', no_log=True),
    ),
    mutually_exclusive=(('flag', 'shout'),),
    required_together=(('count', 'ratio'),),
)
GOOD = {'names': ['n']}


@pytest.mark.parametrize('given, expected', [
    ({}, {'flag': False, 'on': True, 'count': 3, 'ratio': 1.5, 'word': 'a', 'picks': None, 'pairs': {}, 'shout': None}),
    ({'flag': 'yes', 'on': 'off'}, {'flag': True, 'on': False}),
    ({'count': '7', 'ratio': 2}, {'count': 7, 'ratio': 2.0}),
    ({'names': 'one'}, {'names': ['one']}),
    ({'picks': ('y',)}, {'picks': ['y']}),
    ({'shout': 'hey'}, {'shout': 'HEY'}),
    ({'word': None}, {'word': 'a'}),
])
def test_validate_applies_defaults_types_and_validators(given: dict[str, t.Any], expected: dict[str, t.Any]) -> None:
    values = validate(SCHEMA, {**GOOD, **given})
    assert {k: values[k] for k in expected} == expected


def test_defaults_are_not_shared_between_runs() -> None:
    validate(SCHEMA, GOOD)['pairs']['x'] = '1'
    assert validate(SCHEMA, GOOD)['pairs'] == {}


@pytest.mark.parametrize('given, message', [
    ({'names': None}, 'names is required'),
    ({'names': []}, 'names is required and must not be empty: give at least one name'),
    ({'picks': []}, 'picks must not be empty: leave it out for all'),
    ({'flag': 'maybe'}, 'flag must be true or false'),
    ({'flag': 1}, 'flag must be true or false'),
    ({'count': True, 'ratio': 1}, 'count must be an integer'),
    ({'count': 1.5, 'ratio': 1}, 'count must be an integer'),
    ({'count': 1, 'ratio': 'fast'}, 'ratio must be a number'),
    ({'word': 'c'}, "word must be one of a, b, got 'c'"),
    ({'picks': ['z']}, "picks item must be one of x, y, got 'z'"),
    ({'pairs': ['k=v']}, 'pairs must be a mapping'),
    ({'names': [['n']]}, 'names item must be a string'),
    ({'shout': 'Hey'}, "shout must be lower case, got 'Hey'"),
    ({'nope': 1}, 'unknown demo option(s): nope'),
    ({'flag': True, 'shout': 'x'}, 'flag and shout are mutually exclusive'),
    ({'count': 1}, 'count and ratio must be given together'),
])
def test_validate_names_the_option(given: dict[str, t.Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate(SCHEMA, {**GOOD, **given})
    assert message in str(info.value)


def test_argument_spec_is_plain_data() -> None:
    spec = argument_spec(SCHEMA)
    assert spec['names'] == {'type': 'list', 'elements': 'str', 'required': True}
    assert spec['word'] == {'type': 'str', 'default': 'a', 'choices': ['a', 'b']}
    assert spec['secret'] == {'type': 'str', 'no_log': True}
    assert spec['shout'] == {'type': 'str'}
    kwargs = module_kwargs(SCHEMA)
    assert kwargs['mutually_exclusive'] == [['flag', 'shout']]
    assert kwargs['required_together'] == [['count', 'ratio']]


def test_command_line_round_trip() -> None:
    values = validate(SCHEMA, {'names': ['a', 'b'], 'flag': True, 'on': False, 'count': 4, 'ratio': 2.5,
                               'picks': ['x', 'y'], 'pairs': {'k': 'v=w'}, 'word': 'b'})
    argv = to_argv(SCHEMA, values)
    assert argv == ['a', 'b', '--flag', '--no-on', '--count=4', '--ratio=2.5', '--word=b', '--pick=x', '--pick=y',
                    '--pair=k=v=w']
    assert parse_argv(SCHEMA, argv) == values
    # defaults are left out
    assert to_argv(SCHEMA, validate(SCHEMA, GOOD)) == ['n']


def test_absent_options_stay_absent_on_the_command_line() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, SCHEMA)
    assert from_namespace(SCHEMA, parser.parse_args(['n'])) == {'names': ['n']}


@pytest.mark.parametrize('argv, message', [
    (['n', '--frobnicate'], 'unrecognized arguments: --frobnicate'),
    (['n', '--pair=novalue'], 'KEY=VALUE'),
    (['n', '--word=c'], "word must be one of a, b, got 'c'"),
])
def test_parse_argv_raises(argv: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_argv(SCHEMA, argv)


# ---------------------------------------------------------------- the entry points
@pytest.mark.parametrize('raw', [
    {'roots': ['tank/a', 'tank/a', 'tank/b'], 'label': 'daily', 'keep': '3', 'recursive': False, 'exclude': ['*/tmp']},
    {'all_pools': True, 'policy': {'weekly': 2, 'hourly': '24'}, 'prefix': 'snap', 'separator': '-',
     'frequent_minutes': 5, 'default_exclude': True, 'skip_unchanged': True, 'prune': False, 'snapshot': False,
     'lock_dir': '/tmp/l', 'lock_timeout': 0.5, 'zfs_path': '/sbin/zfs'},
    {'roots': ['tank']},
])
def test_autosnap_normalised_options_survive_the_command_line(raw: dict[str, t.Any]) -> None:
    schema = _autosnap_options.SCHEMA
    values = _autosnap_options.normalise(raw)
    assert _autosnap_options.normalise(values) == values
    argv = _autosnap_options.argv(raw)
    assert argv[0] == 'autosnap' and parse_argv(schema, argv[1:]) == values
    assert _autosnap_options.to_config(values) == _autosnap_options.to_config(parse_argv(schema, argv[1:]))


def test_autosnap_normalised_values() -> None:
    values = _autosnap_options.normalise({'roots': ['tank', 'tank'], 'label': 'daily', 'keep': '3'})
    assert values['roots'] == ['tank'] and values['policy'] == {'daily': 3}
    assert values['label'] is None and values['keep'] is None
    assert _autosnap_options.normalise({'roots': ['tank']})['policy'] == DEFAULT_POLICY


@pytest.mark.parametrize('raw, message', [
    ({'roots': []}, 'roots must not be empty'),
    ({}, 'roots is required: give the datasets to snapshot in roots, or set all_pools'),
    ({'roots': ['tank'], 'all_pools': True}, 'give roots or all_pools, not both'),
    ({'roots': ['tank'], 'policy': {}}, 'policy must not be empty'),
    ({'all_pools': True, 'policy': {}}, 'policy must not be empty'),
    ({'roots': ['tank'], 'label': 'daily', 'policy': {'daily': 1}}, 'mutually exclusive'),
    ({'roots': ['tank'], 'label': 'daily'}, 'together'),
    ({'roots': ['tank'], 'lock_timeout': -1}, 'lock_timeout must be >= 0'),
    ({'roots': ['tank'], 'zfs_path': 'zfs;id'}, 'zfs_path'),
])
def test_autosnap_empty_means_nothing(raw: dict[str, t.Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _autosnap_options.normalise(raw)


REPLICATE = {'datasets': ['tank/a'], 'target_root': 'zfsbackups/c1'}


@pytest.mark.parametrize('raw', [
    REPLICATE,
    dict(REPLICATE, target_host='backup', recursive=True, labels=['daily', 'weekly'], exclude=['tank/a/tmp'],
         receive_properties={'org.example:x': '1'}, receive_exclude_properties=['mountpoint'], ssh_port='2222',
         target_retention={'daily': '7'}, mbuffer=False, source_mbuffer=True, rate_limit='50M', lock_timeout=5,
         compression='zstd', target_layout='basename', ssh_user='zfsrecv', target_id='b:c1', source_bookmark=True),
])
def test_replicate_normalised_options_survive_the_command_line(raw: dict[str, t.Any]) -> None:
    values = _replicate_options.normalise(raw)
    assert _replicate_options.normalise(values) == values
    argv = _replicate_options.argv(raw)
    assert argv[0] == 'replicate' and parse_argv(_replicate_options.SCHEMA, argv[1:]) == values


@pytest.mark.parametrize('raw, message', [
    (dict(REPLICATE, labels=[]), 'labels must not be empty: an empty label filter would replicate nothing'),
    (dict(REPLICATE, datasets=[]), 'datasets is required'),
    (dict(REPLICATE, target_host=''), 'target_host: host'),
    (dict(REPLICATE, source_host='-oProxyCommand=id'), 'source_host: host'),
    (dict(REPLICATE, ssh_user='a b'), 'ssh_user'),
])
def test_replicate_empty_means_nothing(raw: dict[str, t.Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _replicate_options.normalise(raw)
    with pytest.raises(ValidationError, match=message):
        ReplicateParams.from_mapping(raw)


def test_replicate_params_mirror_the_schema() -> None:
    fields = {f.name: f for f in dataclasses.fields(ReplicateParams)}
    assert list(fields) == _replicate_options.SCHEMA.names
    for option in _replicate_options.SCHEMA.options:
        field = fields[option.name]
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if option.required:
            assert default is dataclasses.MISSING, option.name
        elif option.name == 'labels':
            # inside, no label filter is an empty list; as input it is left out
            assert default == [] and option.default is None
        else:
            assert default == option.default, option.name


def test_replicate_params_without_labels_validate_again() -> None:
    p = ReplicateParams.from_mapping(REPLICATE)
    assert p.labels == [] and p.validated().labels == []
    assert ReplicateParams.from_mapping(dict(REPLICATE, labels=['daily'])).validated().labels == ['daily']


# ---------------------------------------------------------------- the command line keeps its flags
@pytest.mark.parametrize('argv, expected', [
    (['--root', 'tank', '--no-recursive', '--exclude', 'x', '--policy', 'daily=3', '--prefix', 'p', '--sep', '-',
      '--frequent-minutes', '5', '--default-exclude', '--skip-unchanged', '--no-prune', '--destroy-only',
      '--lock-dir', '/l', '--lock-timeout', '0.5', '--zfs-path', 'zfs2'],
     {'roots': ['tank'], 'recursive': False, 'exclude': ['x'], 'policy': {'daily': '3'}, 'prefix': 'p', 'separator': '-',
      'frequent_minutes': '5', 'default_exclude': True, 'skip_unchanged': True, 'prune': False, 'snapshot': False,
      'lock_dir': '/l', 'lock_timeout': '0.5', 'zfs_path': 'zfs2'}),
    (['--all-pools', '--label', 'daily', '--keep', '3'], {'all_pools': True, 'label': 'daily', 'keep': '3'}),
])
def test_autosnap_flags(argv: list[str], expected: dict[str, t.Any]) -> None:
    args = _cli.build_parser().parse_args(['autosnap', *argv])
    assert from_namespace(_autosnap_options.SCHEMA, args) == expected


def test_replicate_flags() -> None:
    args = _cli.build_parser().parse_args([
        'replicate', 'tank/a', 'tank/b', '--target-root', 'z/c', '--target-layout', 'basename', '--target-host', 'h',
        '-r', '--exclude', 'e', '--label', 'daily', '--prefix', 'p', '--sep', '-', '--include-foreign',
        '--force-rollback', '--transport', 'paramiko', '--ssh-user', 'u', '--ssh-port', '22', '--ssh-identity-file', '/k',
        '--ssh-known-hosts-file', '/kh', '--ssh-config-file', '/c', '--compression', 'lz4', '--no-mbuffer',
        '--mbuffer-size', '1G', '--source-mbuffer', '--rate-limit', '5M', '--stall-timeout', '9', '--timeout', '99',
        '--receive-property', 'a:b=c', '--receive-exclude-property', 'd', '--target-id', 'i', '--source-bookmark',
        '--target-retention', 'daily=7', '--lock-dir', '/l', '--lock-timeout', '1', '--check'])
    raw = from_namespace(_replicate_options.SCHEMA, args)
    assert set(raw) == set(_replicate_options.SCHEMA.names) - {'source_host'} and args.check is True
    values = _replicate_options.normalise(raw)
    assert values['recursive'] and values['mbuffer'] is False and values['target_retention'] == {'daily': 7}


@pytest.mark.parametrize('argv, message', [
    (['autosnap', '--policy', 'daily=3'], 'roots is required'),
    (['autosnap', '--root', 'tank', '--all-pools'], 'not both'),
    (['replicate', 'tank/a', '--target-root', 'z/c', '--target-host', 'bad host'], 'target_host: host'),
])
def test_cli_bad_input_exits_2(argv: list[str], message: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert _cli.main(argv, stdout=out, stderr=err) == _cli.EXIT_USAGE
    # replicate answers in JSON
    assert message in err.getvalue() + out.getvalue()


def test_cli_all_pools(monkeypatch: pytest.MonkeyPatch, tmp_path: t.Any) -> None:
    host = FakeZfsHost(['tank', 'tank/home', 'backup'])
    monkeypatch.setattr(_cli, 'LocalRunner', lambda: host)
    out = io.StringIO()
    assert _cli.main(['autosnap', '--all-pools', '--label', 'daily', '--keep', '1', '--check',
                      '--lock-dir', str(tmp_path)], stdout=out) == _cli.EXIT_OK
    assert host.count('zpool', 'list') == 1
    assert '3 created' in out.getvalue()
