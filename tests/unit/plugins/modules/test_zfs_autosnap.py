# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import datetime as dt
import typing as t

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _autosnap
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._naming import format_name
from ansible_collections.pyzfsautosnap.zfs.plugins.modules import zfs_autosnap
from ansible_collections.pyzfsautosnap.zfs.tests.unit.plugins.module_utils.autosnap_fakes import FakeDataset, FakeZfsHost

NOW = dt.datetime(2024, 5, 8, 12, 34, 17, tzinfo=dt.timezone.utc)


class AnsibleExitJson(Exception):
    pass


class AnsibleFailJson(Exception):
    pass


def exit_json(self: t.Any, **kwargs: t.Any) -> t.NoReturn:
    kwargs.setdefault('changed', False)
    raise AnsibleExitJson(kwargs)


def fail_json(self: t.Any, msg: str, **kwargs: t.Any) -> t.NoReturn:
    kwargs.update(failed=True, msg=msg)
    raise AnsibleFailJson(kwargs)


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> FakeZfsHost:
    fake = FakeZfsHost(['tank', 'tank/home', 'tank/tmp'], clock=int(NOW.timestamp()))
    fake.datasets['tank/tmp'].props['com.sun:auto-snapshot'] = 'false'
    for days in (3, 2, 1):
        when = NOW - dt.timedelta(days=days)
        fake.add_snapshot(f'tank/home@{format_name("zfs-auto-snap", "_", "daily", when)}', creation=int(when.timestamp()))
    fake.add_snapshot('tank/home@manual')
    monkeypatch.setattr(zfs_autosnap, 'LocalRunner', lambda: fake)
    monkeypatch.setattr(_autosnap, 'utcnow', lambda: NOW)
    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', fail_json)
    return fake


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(basic.AnsibleModule, 'warn', lambda self, warning, **kw: seen.append(warning))
    return seen


def run_module(args: dict[str, t.Any], tmp_path: t.Any) -> tuple[str, dict[str, t.Any]]:
    args = dict(args, lock_dir=str(tmp_path))
    with patch_module_args(args):
        try:
            zfs_autosnap.main()
        except AnsibleExitJson as exc:
            return 'exit', exc.args[0]
        except AnsibleFailJson as exc:
            return 'fail', exc.args[0]
    raise AssertionError('module returned without exit_json or fail_json')


def test_creates_prunes_then_is_idempotent(host: FakeZfsHost, tmp_path: t.Any) -> None:
    how, result = run_module({'roots': ['tank'], 'label': 'daily', 'keep': 2}, tmp_path)
    assert how == 'exit' and result['changed'] is True
    new = f'{format_name("zfs-auto-snap", "_", "daily", NOW)}'
    assert result['created'] == [f'tank@{new}', f'tank/home@{new}']
    assert len(result['destroyed']) == 2
    assert result['datasets'] == ['tank', 'tank/home']
    assert result['excluded'][0]['name'] == 'tank/tmp'
    assert result['labels'] == {'daily': {'keep': 2, 'datasets': 2, 'created': 2, 'destroyed': 2}}
    assert 'tank/home@manual' in host.snaps
    how, again = run_module({'roots': ['tank'], 'label': 'daily', 'keep': 2}, tmp_path)
    assert how == 'exit' and again['changed'] is False and again['created'] == [] and again['destroyed'] == []


def test_check_and_diff_mode(host: FakeZfsHost, tmp_path: t.Any) -> None:
    before = host.snapshot_names()
    how, result = run_module({'all_pools': True, 'policy': {'daily': 1, 'weekly': 4}, '_ansible_check_mode': True, '_ansible_diff': True}, tmp_path)
    assert how == 'exit' and result['changed'] is True
    assert host.changing_calls() == [] and host.snapshot_names() == before
    assert len(result['destroyed']) == 3
    assert result['diff']['before'].count('\n') == 3
    assert result['diff']['after'].count('\n') == 4  # 2 daily + 2 weekly
    assert all(b['calls'] == 0 for b in result['snapshot_batches'])


def test_default_policy(host: FakeZfsHost, tmp_path: t.Any) -> None:
    how, result = run_module({'all_pools': True}, tmp_path)
    assert how == 'exit'
    assert sorted(result['labels']) == ['daily', 'frequent', 'hourly', 'monthly', 'weekly']
    assert host.count('zpool', 'list') == 1


@pytest.mark.parametrize('args, message', [
    ({'label': 'daily', 'policy': {'daily': 3}, 'keep': 3}, 'mutually exclusive'),
    ({'label': 'daily'}, 'together'),
    ({'label': 'fortnightly', 'keep': 3}, 'value of label must be one of'),
    ({'policy': {'fortnightly': 3}}, 'unknown label'),
    ({'policy': {'daily': 0}}, '>= 1'),
    ({'policy': {'daily': 'x'}}, 'integer'),
    ({'label': 'daily', 'keep': -1}, '>= 1'),
    ({'prefix': 'a b'}, 'forbidden'),
    ({'prefix': 'snap@x'}, "'@'"),
    ({'separator': '__'}, 'separator'),
    ({'roots': ['tank/$(id)']}, 'forbidden'),
    ({'roots': ['tank/nope']}, 'does not exist: tank/nope'),
    ({'frequent_minutes': 7}, 'divide 60'),
])
def test_bad_input_fails_before_changes(host: FakeZfsHost, tmp_path: t.Any, args: dict, message: str) -> None:
    how, result = run_module(args, tmp_path)
    assert how == 'fail'
    assert message in result['msg']
    assert host.changing_calls() == []


def test_listing_failure_carries_command(host: FakeZfsHost, tmp_path: t.Any) -> None:
    original = host._list

    def broken(args: list[str]) -> tuple[int, str, str]:
        if 'snapshot' in args:
            return 1, '', 'internal error: out of memory\n'
        return original(args)

    host._list = broken  # type: ignore[method-assign]
    how, result = run_module({'roots': ['tank'], 'label': 'daily', 'keep': 2}, tmp_path)
    assert how == 'fail'
    assert result['cmd'][:2] == ['zfs', 'list'] and result['rc'] == 1 and 'out of memory' in result['stderr']
    assert host.changing_calls() == []


def test_partial_failure_reports_what_was_done(host: FakeZfsHost, tmp_path: t.Any) -> None:
    host.datasets['other'] = FakeDataset()
    host.fail_snapshot_pools = {'other'}
    how, result = run_module({'roots': ['tank', 'other'], 'label': 'daily', 'keep': 2}, tmp_path)
    assert how == 'fail'
    assert result['errors'][0]['cmd'] == ['zfs', 'snapshot', f'other@{format_name("zfs-auto-snap", "_", "daily", NOW)}']
    assert len(result['created']) == 2 and result['changed'] is True


def test_warnings_go_through_module_warn(host: FakeZfsHost, tmp_path: t.Any, warnings: list[str]) -> None:
    future = NOW + dt.timedelta(days=3)
    host.add_snapshot(f'tank/home@{format_name("zfs-auto-snap", "_", "daily", future)}', creation=int(future.timestamp()))
    how, result = run_module({'roots': ['tank'], 'label': 'daily', 'keep': 1}, tmp_path)
    assert how == 'exit'
    assert 'warnings' not in result
    assert any('clock went backwards' in w for w in warnings)


def test_lock_timeout_fails_cleanly(host: FakeZfsHost, tmp_path: t.Any) -> None:
    from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._lock import locked

    with locked(['tank'], str(tmp_path), timeout=0):
        how, result = run_module({'roots': ['tank'], 'label': 'daily', 'keep': 2, 'lock_timeout': 0}, tmp_path)
    assert how == 'fail' and 'could not take lock' in result['msg']
    assert host.changing_calls() == []
