# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Runs that must go on: prunes past the kernel's argument limit, property values zfs cannot print plainly."""

from __future__ import annotations

import datetime as dt
import io
import json
import typing as t

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _autosnap, _cli
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._autosnap import autosnap
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._naming import format_name
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ZfsCommandError
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import CommandResult
from ansible_collections.pyzfsautosnap.zfs.tests.unit.plugins.module_utils.autosnap_fakes import FakeZfsHost

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 5, 8, 12, 34, 17, tzinfo=UTC)
# Linux's MAX_ARG_STRLEN: execve fails with E2BIG for any one longer argument (NUL included)
MAX_ARG_STRLEN = 131072
EXPIRED = 5000


class KernelLimits:
    """Passes argv to the fake host the way execve would: an over-long argument never reaches zfs."""

    def __init__(self, host: FakeZfsHost, fail_destroy_calls: t.Container[int] = ()) -> None:
        self.host = host
        self.fail_destroy_calls = fail_destroy_calls
        self.destroy_calls = 0
        self.longest = 0

    def run(self, argv: t.Sequence[str], *, check: bool = True) -> CommandResult:
        argv = [str(a) for a in argv]
        self.longest = max([self.longest, *(len(a.encode('utf-8')) + 1 for a in argv)])
        if any(len(a.encode('utf-8')) + 1 > MAX_ARG_STRLEN for a in argv):
            # what LocalRunner makes of the OSError
            raise ZfsCommandError(argv, 127, '', f"[Errno 7] Argument list too long: '{argv[0]}'")
        if argv[1:2] == ['destroy']:
            self.destroy_calls += 1
            if self.destroy_calls in self.fail_destroy_calls:
                raise ZfsCommandError(['ssh', 'host', *argv], 255, '', 'Connection reset by peer', stage='ssh')
        return self.host.run(argv, check=check)


def hourly(back: int) -> str:
    return format_name('zfs-auto-snap', '_', 'hourly', NOW - dt.timedelta(hours=back))


def crowded_host() -> FakeZfsHost:
    host = FakeZfsHost(['tank'], clock=int(NOW.timestamp()))
    for back in range(EXPIRED, 0, -1):
        host.add_snapshot(f'tank@{hourly(back)}', creation=int((NOW - dt.timedelta(hours=back)).timestamp()))
    return host


def run(runner: t.Any, tmp_path: t.Any, **kwargs: t.Any) -> dict[str, t.Any]:
    kwargs.setdefault('roots', ['tank'])
    kwargs.setdefault('policy', {'hourly': 1})
    return autosnap(runner, lock_dir=str(tmp_path / 'locks'), now=NOW, **kwargs)


def test_a_large_prune_stays_under_the_argument_limit_and_destroys_everything(tmp_path: t.Any) -> None:
    host = crowded_host()
    runner = KernelLimits(host)
    result = run(runner, tmp_path)
    new = f'tank@{hourly(0)}'
    assert 'failed' not in result, result.get('msg')
    assert result['created'] == [new]
    assert len(result['destroyed']) == EXPIRED
    assert sorted(result['destroyed']) == sorted(f'tank@{hourly(b)}' for b in range(1, EXPIRED + 1))
    assert host.snapshot_names() == [new]
    assert runner.longest <= MAX_ARG_STRLEN
    destroys = [c for c in host.calls if c[1] == 'destroy']
    # split by size, not one call per name: 5,000 names of 36 characters take two calls
    # 5,000 names of 36 bytes: three arguments under the 64 KiB that a remote shell also leaves room for
    assert len(destroys) == 3
    assert all(len(c) == 3 and len(c[2]) < MAX_ARG_STRLEN for c in destroys)
    assert result['labels']['hourly'] == {'keep': 1, 'datasets': 1, 'created': 1, 'destroyed': EXPIRED}


def test_a_failing_destroy_batch_keeps_the_new_snapshot_in_the_result(tmp_path: t.Any) -> None:
    host = crowded_host()
    runner = KernelLimits(host, fail_destroy_calls={1})
    result = run(runner, tmp_path)
    new = f'tank@{hourly(0)}'
    assert result['failed'] is True
    assert result['created'] == [new] and new in host.snaps
    assert result['changed'] is True
    (error,) = result['errors']
    assert error['stage'] == 'ssh' and 'Connection reset' in error['stderr']
    failed = [s['name'] for s in result['skipped'] if s['reason'].startswith('destroy failed')]
    # the first batch went missing, the second one still ran
    assert failed and len(failed) + len(result['destroyed']) == EXPIRED
    assert not set(failed) & set(result['destroyed'])
    assert sorted(host.snapshot_names()) == sorted([*failed, new])
    assert 'Connection reset' in result['msg']


def odd_host(value: str, prop: str = 'com.sun:auto-snapshot') -> FakeZfsHost:
    host = FakeZfsHost(['tank', 'tank/a', 'tank/odd', 'tank/odd/child', 'tank/z'], clock=int(NOW.timestamp()))
    host.datasets['tank/odd'].props[prop] = value
    return host


def test_a_tab_in_a_property_value_excludes_that_dataset_and_warns(tmp_path: t.Any) -> None:
    host = odd_host('true\tfalse')
    result = run(host, tmp_path, policy={'hourly': 2, 'daily': 2})
    assert 'failed' not in result
    made = {n.split('@', 1)[0] for n in result['created']}
    # two property columns: which one holds the tab is unknowable; the child inherits the value
    assert made == {'tank', 'tank/a', 'tank/z'}
    excluded = {e['name']: e['reason'] for e in result['excluded']}
    assert set(excluded) == {'tank/odd', 'tank/odd/child'}
    assert all('holds a tab' in r for r in excluded.values())
    assert any(w.startswith('tank/odd: ') for w in result['warnings'])
    assert any(w.startswith('tank/odd/child: ') for w in result['warnings'])
    assert not [n for n in host.snapshot_names() if n.startswith('tank/odd')]


def test_a_newline_in_a_property_value_is_read_unambiguously(tmp_path: t.Any) -> None:
    host = odd_host('false\nmore')
    result = run(host, tmp_path, policy={'hourly': 2, 'daily': 2})
    assert 'failed' not in result
    made = {n.split('@', 1)[0] for n in result['created']}
    # read exactly, newline and all; holding 'false', it is read as false, as zfs-auto-snapshot reads it
    assert made == {'tank', 'tank/a', 'tank/z'}
    excluded = {e['name']: e['reason'] for e in result['excluded']}
    assert 'com.sun:auto-snapshot=false\nmore' in excluded['tank/odd']
    assert any('tank/odd:' in w and "'false\\nmore'" in w for w in result['warnings'])


def test_a_value_imitating_a_row_fails_the_run_before_any_change(tmp_path: t.Any) -> None:
    host = odd_host('-\ntank/z\tfilesystem\ttrue', prop='com.sun:auto-snapshot:daily')
    host.datasets['tank/z'].props['com.sun:auto-snapshot'] = 'false'
    before = host.snapshot_names()
    # tank/z's own row says false; a guess could believe the imitation, so nothing is guessed
    with pytest.raises(ZfsCommandError, match='cannot read the zfs listing'):
        run(host, tmp_path, policy={'daily': 2})
    assert host.snapshot_names() == before


def test_the_cli_reports_an_odd_value_in_its_json(monkeypatch: pytest.MonkeyPatch, tmp_path: t.Any) -> None:
    host = odd_host('true\tfalse')
    monkeypatch.setattr(_cli, 'LocalRunner', lambda: host)
    monkeypatch.setattr(_autosnap, 'utcnow', lambda: NOW)
    out = io.StringIO()
    code = _cli.main(['autosnap', '--root', 'tank', '--policy', 'daily=3', '--policy', 'hourly=3', '--json',
                      '--lock-dir', str(tmp_path)], stdout=out, stderr=io.StringIO())
    result = json.loads(out.getvalue())
    assert code == _cli.EXIT_OK and 'failed' not in result
    assert {'tank/odd', 'tank/odd/child'} <= {e['name'] for e in result['excluded']}
    assert {n.split('@', 1)[0] for n in result['created']} == {'tank', 'tank/a', 'tank/z'}
