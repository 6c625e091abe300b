# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A run that cannot take its lock exits with EXIT_LOCKED, and the message names the process that holds it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import typing as t

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _cli, _lock, _replicate
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._lock import LockTimeout, lock_path, locked
from ansible_collections.pyzfsautosnap.zfs.tests.unit.plugins.module_utils.autosnap_fakes import FakeZfsHost
from ansible_collections.pyzfsautosnap.zfs.tests.unit.plugins.module_utils.test_replicate import setup, snapname


@contextlib.contextmanager
def held_by_another_process(paths: t.Sequence[str]) -> t.Iterator[int]:
    """flock *paths* in a child process (which writes no pid into them); yields its pid."""
    holder = subprocess.Popen([sys.executable, '-c', (
        'import fcntl, os, sys\n'
        f'for path in {list(paths)!r}:\n'
        '    fd = os.open(path, os.O_RDWR | os.O_CREAT)\n'
        '    fcntl.flock(fd, fcntl.LOCK_EX)\n'
        'print("locked", flush=True)\n'
        'sys.stdin.read()\n')], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == 'locked'
        yield holder.pid
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)


def stale_pid_file(path: str) -> None:
    # an earlier pyzfsautosnap run left its pid behind
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='ascii') as fh:
        fh.write('4242424\n')


def test_message_names_the_real_holder_not_the_last_pyzfsautosnap_pid(tmp_path: t.Any) -> None:
    path = lock_path('tank', str(tmp_path))
    stale_pid_file(path)
    with held_by_another_process([path]) as pid:
        with pytest.raises(LockTimeout) as info:
            with locked(['tank'], str(tmp_path), timeout=0):
                pass  # pragma: no cover
    assert info.value.holder == str(pid)
    assert f'held by pid {pid}' in str(info.value) and '4242424' not in str(info.value)


def test_message_says_so_when_the_holder_is_unknown(tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = lock_path('tank', str(tmp_path))
    stale_pid_file(path)
    real = _lock._holder
    monkeypatch.setattr(_lock, '_holder', lambda fd: real(fd, str(tmp_path / 'no-proc-locks')))
    with held_by_another_process([path]):
        with pytest.raises(LockTimeout) as info:
            with locked(['tank'], str(tmp_path), timeout=0):
                pass  # pragma: no cover
    assert info.value.holder is None
    assert 'pid is unknown' in str(info.value) and '4242424' not in str(info.value)


def run_cli(argv: list[str], tmp_path: t.Any, via_args_file: bool) -> tuple[int, str, str]:
    if via_args_file:
        # the way the systemd units run it
        stored = tmp_path / 'args.json'
        stored.write_text(json.dumps(argv))
        argv = ['--args-file', str(stored)]
    out, err = io.StringIO(), io.StringIO()
    code = _cli.main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize('via_args_file', [False, True])
@pytest.mark.parametrize('output', [[], ['--json']])
def test_locked_autosnap_exits_3(tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch, via_args_file: bool,
                                 output: list[str]) -> None:
    host = FakeZfsHost(['tank', 'tank/home'])
    monkeypatch.setattr(_cli, 'LocalRunner', lambda: host)
    locks = str(tmp_path / 'locks')
    os.makedirs(locks)
    with held_by_another_process([lock_path('tank', locks)]) as pid:
        code, out, err = run_cli(['autosnap', '--root=tank', '--label=daily', '--keep=2', f'--lock-dir={locks}',
                                  '--lock-timeout=0.2', *output], tmp_path, via_args_file)
    assert code == _cli.EXIT_LOCKED == 3
    assert f'held by pid {pid}' in (json.loads(out)['msg'] if output else err)
    assert host.changing_calls() == []


@pytest.mark.parametrize('via_args_file', [False, True])
def test_locked_replicate_exits_3(tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch, via_args_file: bool) -> None:
    src, dst, _streams, transports = setup(monkeypatch)
    src.snap('tank/data', snapname('daily', 1))
    monkeypatch.setattr(_replicate, 'make_transport', lambda host, kind, opts: transports[host])
    locks = str(tmp_path / 'locks')
    os.makedirs(locks)
    key = _replicate._lock_key('source', None, 'tank/data')
    with held_by_another_process([lock_path(key, locks)]) as pid:
        code, out, _err = run_cli(['replicate', 'tank/data', '--target-root=zfsbackups/c1', '--target-host=backup',
                                   f'--lock-dir={locks}', '--lock-timeout=0.2'], tmp_path, via_args_file)
    result = json.loads(out)
    assert code == _cli.EXIT_LOCKED == 3, result
    assert result['failed'] and f'held by pid {pid}' in result['msg']
    assert 'zfsbackups/c1' not in dst.datasets
