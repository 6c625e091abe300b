# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import typing as t

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._lock import LockTimeout
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._pipeline import PipelineError, StageResult
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _replicate
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._replicate import ReplicateParams, ReplicationError
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ValidationError, ZfsCommandError
from ansible_collections.pyzfsautosnap.zfs.plugins.modules import zfs_replicate

RESULT = {
    'changed': True, 'mode': 'push', 'transport': 'openssh', 'source_host': None, 'target_host': 'backup',
    'hold_tag': 'pyzfsautosnap:backup:zfsbackups/c1',
    'datasets': [{'source': 'tank/home', 'target': 'zfsbackups/c1/tank/home', 'action': 'full', 'changed': True}],
    'warnings': ['tank/home/x: no snapshot of this dataset is selected for replication'],
}


class Engine:
    def __init__(self, outcome: t.Any = None) -> None:
        self.outcome = outcome
        self.calls: list[tuple[dict[str, t.Any], bool]] = []

    def __call__(self, params: dict[str, t.Any], check_mode: bool = False) -> dict[str, t.Any]:
        self.calls.append((params, check_mode))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return dict(self.outcome or RESULT, warnings=list((self.outcome or RESULT)['warnings']))


def run_module(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: dict[str, t.Any],
               engine: Engine) -> dict[str, t.Any]:
    monkeypatch.setattr(_replicate, 'replicate', engine)
    with patch_module_args(args), pytest.raises(SystemExit):
        zfs_replicate.main()
    return json.loads(capsys.readouterr().out)


BASE = {'datasets': ['tank/home'], 'target_root': 'zfsbackups/c1', 'target_host': 'backup'}


def test_success_passes_every_option(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    engine = Engine()
    out = run_module(monkeypatch, capsys, dict(BASE, receive_properties={'readonly': False, 'org.example:n': 3},
                                               target_retention={'daily': 7}), engine)
    assert out['changed'] and out['datasets'][0]['action'] == 'full'
    # ansible-core 2.19 wraps warnings in event summaries
    assert RESULT['warnings'][0] in json.dumps(out['warnings'])
    params, check = engine.calls[0]
    assert not check
    assert params['receive_properties'] == {'readonly': 'off', 'org.example:n': '3'}
    # every module option is a parameter of the engine, with the same default
    assert set(params) == {f.name for f in ReplicateParams.__dataclass_fields__.values()}
    ReplicateParams.from_mapping(params).validated()


def test_check_mode(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    engine = Engine()
    run_module(monkeypatch, capsys, dict(BASE, _ansible_check_mode=True), engine)
    assert engine.calls[0][1] is True


@pytest.mark.parametrize('error, expected', [
    (ValidationError('dataset name bad'), {'msg': 'dataset name bad'}),
    (LockTimeout('/run/lock/x', 60, '123'), {}),
    (ZfsCommandError(['zfs', 'list'], 1, '', "cannot open 'tank/home': dataset does not exist"), {'stage': 'zfs', 'rc': 1}),
    (ReplicationError('zfsbackups/c1/tank/home has diverged from tank/home', [{'source': 'tank/home', 'action': 'none'}]),
     {'msg': 'zfsbackups/c1/tank/home has diverged from tank/home', 'changed': False}),
    (ReplicationError('tank/home -> t: receive failed: out of space', [{'source': 'a', 'changed': True}],
                      PipelineError(['zfs', 'receive', 't'], 1, 'out of space', 'receive',
                                    [StageResult('receive', ['zfs', 'receive', 't'], 1, 'out of space')])),
     {'stage': 'receive', 'rc': 1, 'stderr': 'out of space', 'changed': True, 'cmd': ['zfs', 'receive', 't']}),
])
def test_failures(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: Exception, expected: dict) -> None:
    out = run_module(monkeypatch, capsys, BASE, Engine(error))
    assert out['failed']
    assert out['msg']
    for key, value in expected.items():
        assert out[key] == value


def test_argument_errors_never_reach_the_engine(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    engine = Engine()
    out = run_module(monkeypatch, capsys, dict(BASE, source_host='client'), engine)
    assert out['failed'] and 'mutually exclusive' in out['msg'] and engine.calls == []
    out = run_module(monkeypatch, capsys, dict(BASE, labels=['minutely']), engine)
    assert out['failed'] and engine.calls == []


def test_documentation_matches_argument_spec() -> None:
    doc = yaml.safe_load(zfs_replicate.DOCUMENTATION)
    spec = zfs_replicate.argument_spec()
    assert set(doc['options']) == set(spec)
    for name, option in doc['options'].items():
        arg = spec[name]
        assert option['type'] == arg['type'], name
        assert option.get('default') == arg.get('default'), name
        assert option.get('required', False) == arg.get('required', False), name
        assert option.get('choices') == arg.get('choices'), name
        assert option.get('elements') == arg.get('elements'), name
    yaml.safe_load(zfs_replicate.EXAMPLES)
    assert set(yaml.safe_load(zfs_replicate.RETURN)) >= {'mode', 'transport', 'hold_tag', 'datasets', 'stage', 'cmd', 'rc', 'stderr'}
