# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import subprocess
import sys
import time
import typing as t

import pytest

from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils import _lock
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._lock import LockTimeout, lock_path, locked
from ansible_collections.pyzfsautosnap.zfs.plugins.module_utils._types import ValidationError


def test_lock_path() -> None:
    assert lock_path('tank') == '/run/lock/pyzfsautosnap.tank.lock'
    assert lock_path('zfsbackups', '/tmp/x', 'other') == '/tmp/x/other.zfsbackups.lock'


@pytest.mark.parametrize('key', ['', '../x', 'a/b', '.x', 'a b'])
def test_lock_path_refuses_unsafe_keys(key: str) -> None:
    with pytest.raises(ValidationError):
        lock_path(key)


def test_locks_taken_in_sorted_order_and_released(tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real = _lock._acquire

    def spy(path: str, *args: t.Any) -> int:
        order.append(os.path.basename(path))
        return real(path, *args)

    monkeypatch.setattr(_lock, '_acquire', spy)
    with locked(['tank', 'backup', 'tank'], str(tmp_path / 'sub'), timeout=1) as paths:
        assert [os.path.basename(p) for p in paths] == ['pyzfsautosnap.backup.lock', 'pyzfsautosnap.tank.lock']
        assert (tmp_path / 'sub' / 'pyzfsautosnap.tank.lock').read_text().strip() == str(os.getpid())
    assert order == ['pyzfsautosnap.backup.lock', 'pyzfsautosnap.tank.lock']
    with locked(['tank'], str(tmp_path / 'sub'), timeout=0):
        pass


def test_second_holder_times_out_with_clear_message(tmp_path: t.Any) -> None:
    with locked(['tank'], str(tmp_path), timeout=0):
        start = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            with locked(['backup', 'tank'], str(tmp_path), timeout=0.3, poll=0.05):
                pass  # pragma: no cover
        assert 0.25 <= time.monotonic() - start < 5
        assert 'pyzfsautosnap.tank.lock' in str(info.value) and '0.3 seconds' in str(info.value)
        assert f'pid {os.getpid()}' in str(info.value)
        # the lock already taken (backup) was given back on failure
        with locked(['backup'], str(tmp_path), timeout=0):
            pass


def test_lock_released_on_exception(tmp_path: t.Any) -> None:
    with pytest.raises(RuntimeError):
        with locked(['tank'], str(tmp_path), timeout=0):
            raise RuntimeError('boom')
    with locked(['tank'], str(tmp_path), timeout=0):
        pass


def test_waits_for_another_process(tmp_path: t.Any) -> None:
    path = lock_path('tank', str(tmp_path))
    holder = subprocess.Popen([sys.executable, '-c', (
        'import fcntl, os, sys, time\n'
        f'fd = os.open({path!r}, os.O_RDWR | os.O_CREAT)\n'
        'fcntl.flock(fd, fcntl.LOCK_EX)\n'
        'print("locked", flush=True)\n'
        'time.sleep(0.5)\n')], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == 'locked'
        with pytest.raises(LockTimeout):
            with locked(['tank'], str(tmp_path), timeout=0):
                pass  # pragma: no cover
        with locked(['tank'], str(tmp_path), timeout=10, poll=0.05):
            assert holder.wait(timeout=10) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def test_bad_lock_dir_and_timeout(tmp_path: t.Any) -> None:
    blocker = tmp_path / 'file'
    blocker.write_text('')
    with pytest.raises(ValidationError, match='lock directory'):
        with locked(['tank'], str(blocker / 'sub')):
            pass  # pragma: no cover
    with pytest.raises(ValidationError, match='>= 0'):
        with locked(['tank'], str(tmp_path), timeout=-1):
            pass  # pragma: no cover


def test_no_keys_no_files(tmp_path: t.Any) -> None:
    with locked([], str(tmp_path / 'never')) as paths:
        assert paths == []
    assert not (tmp_path / 'never').exists()
