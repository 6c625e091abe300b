# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The executor against a fake zfs host: call counts, check mode, idempotence, failure paths, CLI."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys
import typing as t

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _autosnap, _cli
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._autosnap import autosnap, destroy_with_retry
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._lock import LockTimeout, locked
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._naming import format_name
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import Features, ValidationError, ZfsCommandError
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._zfs import Zfs
from ansible_collections.pyzfsautosnap.zfs.tests.unit.plugins.module_utils.autosnap_fakes import FakeZfsHost

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 5, 8, 12, 34, 17, tzinfo=UTC)
POOLS = {'tank': ['tank', 'tank/home', 'tank/vm'], 'backup': ['backup', 'backup/x']}


def name(label: str, when: dt.datetime) -> str:
    return format_name('zfs-auto-snap', '_', label, when)


def make_host(days: int = 5) -> FakeZfsHost:
    """Two pools; every dataset has *days* old dailies and hourlies plus a foreign snapshot."""
    host = FakeZfsHost([d for ds in POOLS.values() for d in ds], clock=int(NOW.timestamp()))
    for ds in host.datasets:
        host.add_snapshot(f'{ds}@manual-keep-me', creation=int((NOW - dt.timedelta(days=99)).timestamp()))
        for back in range(days, 0, -1):
            when = NOW - dt.timedelta(days=back)
            for label in ('hourly', 'daily'):
                host.add_snapshot(f'{ds}@{name(label, when)}', creation=int(when.timestamp()))
    return host


def run(host: FakeZfsHost, tmp_path: t.Any, **kwargs: t.Any) -> dict[str, t.Any]:
    kwargs.setdefault('roots', ['tank', 'backup'])
    kwargs.setdefault('policy', {'hourly': 3, 'daily': 3})
    kwargs.setdefault('now', NOW)
    return autosnap(host, lock_dir=str(tmp_path / 'locks'), **kwargs)


def listing_calls(host: FakeZfsHost, kind: str) -> int:
    return sum(1 for c in host.calls if c[:2] == ['zfs', 'list'] and kind in c)


# ---------------------------------------------------------------- call counts
def test_cost_one_listing_each_one_snapshot_per_pool_and_name_one_destroy_per_dataset(tmp_path: t.Any) -> None:
    host = make_host()
    result = run(host, tmp_path)
    assert listing_calls(host, 'filesystem,volume') == 1
    assert listing_calls(host, 'snapshot') == 1
    assert host.count('zfs', 'version') == 1
    # 2 pools x 2 labels
    assert host.count('zfs', 'snapshot') == 4
    # 5 datasets, each with 2 hourlies and 2 dailies beyond keep (5 old + 1 new, keep 3)
    assert host.count('zfs', 'destroy') == 5
    assert len(host.calls) == 1 + 2 + 4 + 5
    assert result['changed'] is True
    assert len(result['created']) == 10
    assert len(result['destroyed']) == 5 * 2 * 3
    assert result['labels']['daily'] == {'keep': 3, 'datasets': 5, 'created': 5, 'destroyed': 15}
    # every snapshot of one pool and name in one argv: one transaction group
    snap_calls = [c for c in host.calls if c[1] == 'snapshot']
    assert ['zfs', 'snapshot', f'tank@{name("hourly", NOW)}', f'tank/home@{name("hourly", NOW)}',
            f'tank/vm@{name("hourly", NOW)}'] in snap_calls
    assert all(c[2].count(',') >= 1 and '-r' not in c and '-R' not in c for c in host.calls if c[1] == 'destroy')
    assert [b['calls'] for b in result['snapshot_batches']] == [1, 1, 1, 1]
    assert result['commands'] == host.calls
    # foreign snapshots survive; the newest 3 of each label remain
    for ds in host.datasets:
        names = host.snapshot_names(ds)
        assert f'{ds}@manual-keep-me' in names
        assert sum('daily' in n for n in names) == 3 and sum('hourly' in n for n in names) == 3


def test_default_roots_come_from_zpool_list(tmp_path: t.Any) -> None:
    host = make_host()
    result = autosnap(host, now=NOW, lock_dir=str(tmp_path), policy={'daily': 10}, all_pools=True)
    assert host.count('zpool', 'list') == 1
    assert sorted(result['datasets']) == sorted(d for ds in POOLS.values() for d in ds)
    assert sorted(os.listdir(tmp_path)) == ['pyzfsautosnap.backup.lock', 'pyzfsautosnap.tank.lock']


# --------------------------------------------------------- check mode, idempotence
def test_check_mode_changes_nothing_and_reports_the_real_plan(tmp_path: t.Any) -> None:
    host = make_host()
    twin = copy.deepcopy(host)
    before = host.snapshot_names()
    checked = run(host, tmp_path, check_mode=True, diff=True)
    assert host.changing_calls() == []
    assert host.snapshot_names() == before
    assert not (tmp_path / 'locks').exists()  # check mode takes no lock
    real = run(twin, tmp_path, diff=True)
    for key in ('changed', 'created', 'destroyed', 'skipped', 'datasets', 'labels', 'diff'):
        assert checked[key] == real[key], key
    assert [b['snapshots'] for b in checked['snapshot_batches']] == [b['snapshots'] for b in real['snapshot_batches']]
    assert checked['destroy_batches'] == real['destroy_batches']


def test_second_run_in_same_slot_changes_nothing(tmp_path: t.Any) -> None:
    host = make_host()
    assert run(host, tmp_path)['changed'] is True
    host.calls.clear()
    again = run(host, tmp_path, now=NOW + dt.timedelta(minutes=20))
    assert again['changed'] is False
    assert again['created'] == [] and again['destroyed'] == []
    assert host.changing_calls() == []


def test_next_slot_rotates(tmp_path: t.Any) -> None:
    host = make_host()
    run(host, tmp_path)
    later = NOW + dt.timedelta(hours=1)
    result = run(host, tmp_path, now=later)
    assert sorted(result['created']) == sorted(f'{ds}@{name("hourly", later)}' for ds in host.datasets)
    assert len(result['destroyed']) == len(host.datasets)
    assert all('hourly' in n for n in result['destroyed'])


def test_diff_shows_managed_snapshots_before_and_after(tmp_path: t.Any) -> None:
    host = make_host(days=1)
    result = run(host, tmp_path, roots=['backup/x'], policy={'daily': 1}, diff=True)
    old, new = f'backup/x@{name("daily", NOW - dt.timedelta(days=1))}', f'backup/x@{name("daily", NOW)}'
    hourly = f'backup/x@{name("hourly", NOW - dt.timedelta(days=1))}'
    assert result['diff'] == {'before': f'{old}\n{hourly}\n', 'after': f'{new}\n{hourly}\n'}


def test_skip_unchanged_after_a_snapshot(tmp_path: t.Any) -> None:
    host = make_host(days=1)
    for ds in host.datasets:
        host.datasets[ds].written = 0
    host.datasets['tank/home'].written = 8192
    result = run(host, tmp_path, policy={'daily': 5}, skip_unchanged=True)
    assert result['created'] == [f'tank/home@{name("daily", NOW)}']
    assert len(result['skipped']) == 4 and all(s['reason'].startswith('unchanged') for s in result['skipped'])
    assert any('written' in c[7] for c in host.calls if c[:2] == ['zfs', 'list'] and 'filesystem,volume' in c)


# ------------------------------------------------------------------ failures
def test_destroy_refused_for_a_name_retries_without_it(tmp_path: t.Any) -> None:
    host = make_host()
    victim = f'tank/home@{name("daily", NOW - dt.timedelta(days=5))}'

    def hold_after_listing(argv: list[str]) -> None:
        # replication places a hold between our listing and our destroy
        host.snaps[victim].userrefs = 1

    host.before['snapshot'] = hold_after_listing
    result = run(host, tmp_path)
    assert victim in host.snaps
    assert {'name': victim, 'reason': 'destroy refused: dataset is busy'} in result['skipped']
    home_destroys = [c for c in host.calls if c[1] == 'destroy' and c[2].startswith('tank/home@')]
    assert len(home_destroys) == 2
    assert len([n for n in result['destroyed'] if n.startswith('tank/home@')]) == 5
    assert result['changed'] is True and 'failed' not in result
    assert result['labels']['daily']['destroyed'] == 14
    assert any(victim in w and 'could not be destroyed' in w for w in result['warnings'])


@pytest.mark.parametrize('bad', [[0], [3], [0, 5], [1, 2, 3], list(range(8))])
def test_destroy_bisects_when_stderr_names_nothing(bad: list[int]) -> None:
    host = FakeZfsHost(['tank'])
    names = [f's{i}' for i in range(8)]
    for i, n in enumerate(names):
        host.add_snapshot(f'tank@{n}', userrefs=1 if i in bad else 0)
    host.anonymous_destroy_errors = True
    destroyed, skipped = destroy_with_retry(Zfs(host), 'tank', names)
    assert sorted(destroyed) == sorted(f'tank@{n}' for i, n in enumerate(names) if i not in bad)
    assert sorted(s['name'] for s in skipped) == sorted(f'tank@{names[i]}' for i in bad)
    assert host.snapshot_names() == sorted(f'tank@{names[i]}' for i in bad)
    # bounded: at most two calls per name
    assert host.count('zfs', 'destroy') <= 2 * len(names)


def test_destroy_single_call_when_all_is_well() -> None:
    host = FakeZfsHost(['tank'])
    for i in range(4):
        host.add_snapshot(f'tank@s{i}')
    destroyed, skipped = destroy_with_retry(Zfs(host), 'tank', ['s0', 's1', 's2'])
    assert host.calls == [['zfs', 'destroy', 'tank@s0,s1,s2']]
    assert skipped == [] and len(destroyed) == 3


def test_snapshot_failure_on_one_pool_lets_the_other_proceed(tmp_path: t.Any) -> None:
    host = make_host()
    host.fail_snapshot_pools = {'backup'}
    result = run(host, tmp_path)
    assert result['failed'] is True
    assert all(n.startswith('tank') for n in result['created'])
    assert len(result['created']) == 6
    # backup's old snapshots stay: the new ones they were to make room for do not exist
    assert not any(n.startswith('backup') for n in result['destroyed'])
    assert sum('daily' in n for n in host.snapshot_names('backup')) == 5
    assert any(s['reason'].startswith('not pruned') for s in result['skipped'])
    error = result['errors'][0]
    assert error['cmd'][:2] == ['zfs', 'snapshot'] and error['rc'] == 1 and 'suspended' in error['stderr']
    assert 'suspended' in result['msg']


def test_missing_root_fails_before_any_change(tmp_path: t.Any) -> None:
    host = make_host()
    with pytest.raises(ValidationError, match='dataset does not exist: tank/nope'):
        run(host, tmp_path, roots=['tank', 'tank/nope'])
    assert host.changing_calls() == []


def test_bad_input_fails_before_any_command(tmp_path: t.Any) -> None:
    host = make_host()
    with pytest.raises(ValidationError):
        run(host, tmp_path, roots=['tank;reboot'])
    with pytest.raises(ValidationError):
        run(host, tmp_path, policy={'daily': -1})
    with pytest.raises(ValidationError):
        run(host, tmp_path, zfs_path='zfs; reboot')
    assert host.calls == []


def test_name_taken_after_clock_moved_back_is_not_an_error(tmp_path: t.Any) -> None:
    host = make_host(days=1)
    run(host, tmp_path, policy={'daily': 3})
    host.calls.clear()
    # the clock moves back a day onto yesterday's slot, which already has its snapshot
    result = run(host, tmp_path, policy={'daily': 3}, now=NOW - dt.timedelta(days=1))
    assert result['created'] == [] and 'failed' not in result


def test_clock_backwards_skips_pruning_with_warning(tmp_path: t.Any) -> None:
    host = make_host()
    result = run(host, tmp_path, now=NOW - dt.timedelta(days=30))
    assert result['destroyed'] == []
    assert any('clock went backwards' in w for w in result['warnings'])


def test_legacy_cli_warning_is_surfaced(tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Zfs, '_detect_features', lambda self: Features(version=None, multi_snapshot=False))
    host = make_host(days=1)
    result = run(host, tmp_path, policy={'daily': 3})
    assert host.count('zfs', 'snapshot') == 5
    assert any('not atomic' in w for w in result['warnings'])
    assert [b['calls'] for b in result['snapshot_batches']] == [2, 3]


def test_lock_timeout(tmp_path: t.Any) -> None:
    host = make_host()
    with locked(['tank'], str(tmp_path / 'locks'), timeout=1):
        with pytest.raises(LockTimeout, match='pyzfsautosnap.tank.lock'):
            run(host, tmp_path, lock_timeout=0.2)
    assert host.changing_calls() == []
    assert run(host, tmp_path)['changed'] is True


def test_utcnow_is_aware() -> None:
    assert _autosnap.utcnow().tzinfo is not None


# ----------------------------------------------------------------------- CLI
def test_cli_json(monkeypatch: pytest.MonkeyPatch, tmp_path: t.Any) -> None:
    host = make_host()
    monkeypatch.setattr(_cli, 'LocalRunner', lambda: host)
    monkeypatch.setattr(_autosnap, 'utcnow', lambda: NOW)
    out = io.StringIO()
    code = _cli.main(['autosnap', '--root', 'tank', '--policy', 'daily=3', '--policy', 'hourly=3', '--check',
                      '--json', '--lock-dir', str(tmp_path)], stdout=out)
    result = json.loads(out.getvalue())
    assert code == 0 and result['check_mode'] is True
    assert len(result['created']) == 6 and len(result['destroyed']) == 18
    assert host.changing_calls() == []


def test_cli_human_and_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: t.Any) -> None:
    host = make_host()
    monkeypatch.setattr(_cli, 'LocalRunner', lambda: host)
    monkeypatch.setattr(_autosnap, 'utcnow', lambda: NOW)
    out, err = io.StringIO(), io.StringIO()
    assert _cli.main(['autosnap', '--root', 'backup/x', '--label', 'daily', '--keep', '2', '--lock-dir', str(tmp_path)],
                     stdout=out, stderr=err) == 0
    assert f'create backup/x@{name("daily", NOW)}' in out.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert _cli.main(['autosnap', '--policy', 'daily=0'], stdout=out, stderr=err) == _cli.EXIT_USAGE
    assert 'keep' in err.getvalue()
    with pytest.raises(SystemExit):
        _cli.main(['autosnap', '--policy', 'daily'], stdout=out, stderr=err)


def test_cli_args_file_is_expanded_and_extended(monkeypatch: pytest.MonkeyPatch, tmp_path: t.Any) -> None:
    host = make_host()
    monkeypatch.setattr(_cli, 'LocalRunner', lambda: host)
    monkeypatch.setattr(_autosnap, 'utcnow', lambda: NOW)
    stored = tmp_path / 'autosnap.json'
    # a name with a space and a glob travel verbatim: no shell or unit-file quoting in between
    stored.write_text(json.dumps(['autosnap', '--root', 'tank', '--exclude', 'tank/a b*', '--policy', 'daily=3',
                                  '--json', '--lock-dir', str(tmp_path)]))
    out = io.StringIO()
    assert _cli.main(['--args-file', str(stored), '--check'], stdout=out) == 0
    result = json.loads(out.getvalue())
    assert result['check_mode'] is True and result['created']
    assert host.changing_calls() == []


@pytest.mark.parametrize(('content', 'message'), [
    (None, 'cannot read arguments'),
    ('{"root": "tank"}', 'JSON list of strings'),
    ('["autosnap", 3]', 'JSON list of strings'),
    ('not json', 'cannot read arguments'),
    ('["--args-file", "other"]', 'another --args-file'),
])
def test_cli_args_file_errors(tmp_path: t.Any, content: str | None, message: str) -> None:
    stored = tmp_path / 'args.json'
    if content is not None:
        stored.write_text(content)
    err = io.StringIO()
    assert _cli.main(['--args-file', str(stored)], stdout=io.StringIO(), stderr=err) == _cli.EXIT_USAGE
    assert message in err.getvalue()
    err = io.StringIO()
    assert _cli.main(['--args-file'], stdout=io.StringIO(), stderr=err) == _cli.EXIT_USAGE
    assert 'needs a file name' in err.getvalue()


def test_cli_runs_from_a_standalone_copy(tmp_path: t.Any) -> None:
    """module_utils copied to a host without Ansible still runs as a package."""
    src = os.path.dirname(_autosnap.__file__)
    pkg = tmp_path / 'pyzfsautosnap_engine'
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns('__pycache__'))
    env = {'PATH': os.environ.get('PATH', ''), 'PYTHONPATH': str(tmp_path)}
    proc = subprocess.run([sys.executable, '-m', 'pyzfsautosnap_engine._cli', 'autosnap', '--root', 'tank',
                           '--policy', 'daily=7', '--json', '--zfs-path', str(tmp_path / 'no-such-zfs'),
                           '--lock-dir', str(tmp_path / 'locks')],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), check=False)
    assert 'ansible' not in proc.stderr.lower()
    result = json.loads(proc.stdout)
    assert proc.returncode == _cli.EXIT_FAILED and result['failed'] is True and result['rc'] == 127


def test_prune_of_thousands_splits_by_argument_size(tmp_path: t.Any) -> None:
    # past the kernel's 128 KiB limit for one argument a single `ds@a,b,...` fails every later run
    host = FakeZfsHost(['tank', 'tank/adopted'], clock=int(NOW.timestamp()))
    for back in range(5000, 0, -1):
        when = NOW - dt.timedelta(minutes=15 * back)
        host.add_snapshot(f'tank/adopted@{name("frequent", when)}', creation=int(when.timestamp()))
    result = run(host, tmp_path, roots=['tank/adopted'], policy={'frequent': 4})
    assert not result.get('failed'), result
    assert result["created"] == [f"tank/adopted@{name('frequent', NOW)}"]
    assert len(result['destroyed']) == 5000 - 3
    destroys = [c for c in host.calls if c[:2] == ['zfs', 'destroy']]
    assert len(destroys) > 1
    assert all(len(arg.encode()) < 128 * 1024 for c in destroys for arg in c)
    assert len([n for n in host.snapshot_names('tank/adopted') if 'frequent' in n]) == 4


def test_a_tab_in_a_property_value_skips_that_dataset_only(tmp_path: t.Any) -> None:
    host = make_host()
    host.datasets['tank/home'].props['com.sun:auto-snapshot:hourly'] = 'tr\tue'
    result = run(host, tmp_path)
    assert not result.get('failed'), result
    assert not [n for n in result['created'] if n.startswith('tank/home@')]
    assert {n.split('@')[0] for n in result['created']} == set(host.datasets) - {'tank/home'}
    assert any('tank/home' in w and 'tab' in w for w in result['warnings']), result['warnings']
    assert [e['name'] for e in result['excluded']] == ['tank/home']


def test_a_tab_and_a_newline_in_one_value_fail_cleanly_before_any_change(tmp_path: t.Any) -> None:
    host = make_host()
    host.datasets['tank/home'].props['com.sun:auto-snapshot:hourly'] = 'x\n\t\t\ntank/evil\tfilesystem\ttrue\ttrue'
    with pytest.raises(ZfsCommandError, match='tank/home'):
        run(host, tmp_path)
    assert host.changing_calls() == []
